// The graphical console: noVNC's RFB client over /1.0/instances/{name}/vnc?ticket=...,
// with a fresh one-time ticket from POST /1.0/instances/{name}/console/vnc-ticket.
import RFB from "/ui/vendor/@novnc/novnc/core/rfb.js";
import * as api from "../api.js";
import { errorText, h } from "../dom.js";

export function graphicalConsole(container, name) {
  const status = h("p.console-status", { role: "status" }, "Requesting a console ticket…");
  const screen = h("div.vnc-screen", { "aria-label": `Graphical console of ${name}` });
  const cad = h("button", { type: "button", disabled: true }, "Send Ctrl+Alt+Del");
  container.append(h("div.console-bar", {}, status, cad), screen);
  let rfb = null;
  let closed = false;

  (async () => {
    try {
      const { ticket } = await api.vncTicket(name);
      if (closed) return;
      const url = api.wsUrl(`/1.0/instances/${api.enc(name)}/vnc?ticket=${api.enc(ticket)}`);
      rfb = new RFB(screen, url, { shared: true });
      rfb.scaleViewport = true;
      rfb.background = "#111";
      screen.rfb = rfb;
      rfb.addEventListener("connect", () => {
        status.textContent = "Connected.";
        cad.disabled = false;
      });
      rfb.addEventListener("disconnect", (e) => {
        status.textContent = e.detail.clean ? "Disconnected." : "Connection to the graphical console lost.";
        cad.disabled = true;
      });
      rfb.addEventListener("securityfailure", (e) => {
        status.textContent = `Refused by the console: ${e.detail.reason || "security failure"}`;
      });
      cad.onclick = () => rfb && rfb.sendCtrlAltDel();
    } catch (err) {
      status.textContent = errorText(err);
      status.classList.add("notice-error");
    }
  })();

  return () => {
    closed = true;
    if (rfb) rfb.disconnect();
  };
}
