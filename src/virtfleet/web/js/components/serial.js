// The serial console: xterm.js over the console websocket (/1.0/instances/{name}/console,
// binary frames both ways). The recent serial log is shown first, so output printed
// before attaching (e.g. the boot) is not lost.
import { Terminal } from "/ui/vendor/@xterm/xterm/lib/xterm.mjs";
import { FitAddon } from "/ui/vendor/@xterm/addon-fit/lib/addon-fit.mjs";
import * as api from "../api.js";
import { h } from "../dom.js";

export function serialConsole(container, name) {
  const status = h("p.console-status", { role: "status" }, "Connecting…");
  const screen = h("div.serial-screen", { "aria-label": `Serial console of ${name}` });
  container.append(status, screen);
  const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 5000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(screen);
  screen.terminal = term; // for tests and debugging: the buffer is the source of truth
  fit.fit();
  const onResize = () => fit.fit();
  window.addEventListener("resize", onResize);

  const early = [];
  let primed = false;
  const ws = new WebSocket(api.wsUrl(`/1.0/instances/${api.enc(name)}/console`));
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    status.textContent = "Connected. Keyboard input goes to the guest.";
    term.focus();
  };
  ws.onmessage = (m) => {
    const data = typeof m.data === "string" ? m.data : new Uint8Array(m.data);
    if (primed) term.write(data);
    else early.push(data);
  };
  ws.onclose = (e) => {
    const why = e.reason || (e.code === 1006 ? "connection lost" : "closed");
    status.textContent = `Disconnected: ${why}${e.code >= 4000 ? ` [${e.code - 4000}]` : ""}`;
    status.classList.add("notice-error");
  };
  const input = term.onData((d) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(new TextEncoder().encode(d));
  });

  api.get(`/1.0/instances/${api.enc(name)}/log?tail_bytes=16384`)
    .then((log) => { if (log.log) term.write(log.log.replace(/\r?\n/g, "\r\n")); })
    .catch(() => {})
    .finally(() => {
      primed = true;
      for (const data of early.splice(0)) term.write(data);
    });

  return () => {
    window.removeEventListener("resize", onResize);
    input.dispose();
    ws.onclose = null;
    ws.close();
    term.dispose();
  };
}
