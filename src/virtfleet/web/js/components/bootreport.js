// The dashboard's "Boot and shutdown" card: GET /1.0/host/boot-report (what the last host
// boot started, in order, how long each took, what it left stopped) and, for admins, the
// "shut down guests" action (POST /1.0/host/shutdown-guests, reverse boot order, each
// guest forced off after the timeout) behind a confirmation dialog.
import * as api from "../api.js";
import { clear, DASH, errorText, h, notice, when } from "../dom.js";
import { isAdmin } from "../state.js";
import { confirmDialog } from "./confirm.js";
import { failureText, track } from "./tasks.js";

const secs = (v) => (v === null || v === undefined ? DASH : `${Number(v).toFixed(1)} s`);

// Made once (keeps the timeout typed in across dashboard refreshes); ``refresh()`` reloads.
export function bootCard() {
  const report = h("div", { id: "boot-report" });
  const status = h("div", { role: "status", id: "shutdown-status" });
  const element = h("div", {}, report, isAdmin() ? shutdownForm(status) : null, status);
  element.refresh = async () => {
    try {
      clear(report, reportView(await api.get("/1.0/host/boot-report")));
    } catch (err) {
      clear(report, notice(errorText(err)));
    }
  };
  return element;
}

function reportView(r) {
  const facts = h("dl.facts", {},
    h("dt", {}, "Last daemon start"), h("dd", {}, r.new_boot ? "after a host boot" : "daemon restart or first start"),
    h("dt", {}, "Detected"), h("dd", {}, when(r.detected_at)),
    h("dt", {}, "Boot sequence finished"), h("dd", {}, r.finished_at ? when(r.finished_at) : DASH),
    h("dt", {}, "Left stopped"), h("dd", {}, r.left_stopped.length ? r.left_stopped.join(", ") : DASH),
    h("dt", {}, "Host boot id"), h("dd", {}, h("code.digest", {}, r.boot_id)));
  if (!r.entries.length) return [facts, h("p.muted", {}, "The boot sequence started nothing.")];
  return [facts, h("div.table-wrap", {}, h("table.boot-entries", {},
    h("caption.sr-only", {}, "Instances the boot sequence started, in order"),
    h("thead", {}, h("tr", {}, ["Order", "Name", "Action", "Outcome", "At", "Took"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, r.entries.map((e) => h("tr", { dataset: { boot: e.name } },
      h("td", {}, String(e.order)), h("th", { scope: "row" }, e.name), h("td", {}, e.action),
      h("td", { title: e.error || "" }, e.outcome), h("td", {}, `+${secs(e.at_s)}`), h("td", {}, secs(e.took_s)))))))];
}

function shutdownForm(status) {
  const timeout = h("input", { id: "shutdown-timeout", type: "number", min: 1, max: 3600, step: "any", value: "60", required: true });
  const button = h("button.danger", { type: "submit", id: "shutdown-guests" }, "Shut down guests");
  return h("form.inline-form", {
    "aria-label": "Shut down guests",
    onsubmit: async (e) => {
      e.preventDefault();
      const ok = await confirmDialog({
        title: "Shut down every guest?",
        body: `Every running VM and container stops, in the reverse of the boot order; each is forced off after ${timeout.value} s. They stay stopped until started again or the next host boot starts the autostart ones.`,
        confirm: "Shut down guests",
      });
      if (!ok) return;
      button.disabled = true;
      try {
        const op = await track(await api.post("/1.0/host/shutdown-guests", { timeout_s: Number(timeout.value) }));
        clear(status, op.status === "success" ? resultView(op.result) : notice(failureText(op)));
      } catch (err) {
        clear(status, notice(errorText(err)));
      } finally {
        button.disabled = false;
      }
    },
  }, h("div.field", {}, h("label", { for: "shutdown-timeout" }, "Seconds per guest before it is forced off"), timeout), button);
}

function resultView(result) {
  const guests = (result && result.guests) || [];
  if (!guests.length) return h("p.muted", {}, "No guest was running.");
  return h("ul.plain", { id: "shutdown-result" }, guests.map((g) =>
    h("li", {}, `${g.name}: ${g.outcome} in ${secs(g.took_s)}${g.error ? ` (${g.error})` : ""}`)));
}
