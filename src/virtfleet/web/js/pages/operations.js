// Operations (`operation list` / `show`): every operation the daemon keeps, newest first,
// with kind, target, status, progress, times and error; a status filter; operators cancel
// a pending or running one (`operation cancel`). Live changes arrive as vf:event.
import * as api from "../api.js";
import { clear, DASH, errorText, h, when } from "../dom.js";
import { canOperate } from "../state.js";
import { adminNav } from "./admin.js";

const STATUSES = ["all", "pending", "running", "success", "failure", "cancelled"];
const live = (op) => op.status === "pending" || op.status === "running";

export async function renderOperations(main) {
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const body = h("tbody");
  const count = h("p.muted", { role: "status" });
  const filter = h("select", { id: "ops-status", onchange: () => draw() },
    STATUSES.map((s) => h("option", { value: s }, s === "all" ? "Any status" : s)));
  clear(main, h("div.page-head", {}, h("h1", {}, "Operations")), adminNav("operations"),
    h("div.toolbar", {}, h("label", { for: "ops-status" }, "Status"), filter), status,
    h("div.table-wrap", {}, h("table", { id: "operations-table" }, h("caption.sr-only", {}, "Operations, newest first"),
      h("thead", {}, h("tr", {}, ["Operation", "Kind", "Target", "Status", "Progress", "Started", "Message or error", ""]
        .map((c) => h("th", { scope: "col" }, c)))),
      body)), count);
  let ops = [];

  function draw() {
    const shown = ops.filter((o) => filter.value === "all" || o.status === filter.value);
    clear(body, shown.length ? shown.map(row) : h("tr", {}, h("td.muted", { colspan: 8 }, "No operations.")));
    count.textContent = `${shown.length} of ${ops.length} operations shown`;
  }

  function row(o) {
    const error = o.error_code ? `${o.error_message} [${o.error_code}]` : o.message || DASH;
    return h("tr", { dataset: { op: o.id, status: o.status } },
      h("th", { scope: "row" }, h("code", { title: o.id }, o.id.slice(0, 8))), h("td", {}, o.kind), h("td", {}, o.target),
      h("td", {}, o.status), h("td", {}, h("progress", { max: 100, value: o.status === "success" ? 100 : o.progress || 0, "aria-label": `${o.kind} ${o.target}: ${o.progress}%` })),
      h("td", { title: `updated ${when(o.updated_at)}` }, when(o.created_at)), h("td.op-msg", {}, error),
      h("td", {}, canOperate() && live(o) ? h("button.danger", { type: "button", "aria-label": `Cancel operation ${o.id}`, onclick: () => cancel(o) }, "Cancel") : null));
  }

  async function cancel(o) {
    status.hidden = true;
    try {
      await api.del(`/1.0/operations/${api.enc(o.id)}`);
    } catch (err) {
      status.textContent = errorText(err);
      status.hidden = false;
    }
    await load();
  }

  async function load() {
    try {
      ops = (await api.listOperations()).reverse();
      draw();
    } catch (err) {
      status.textContent = errorText(err);
      status.hidden = false;
    }
  }

  let timer = null;
  const onEvent = () => {
    if (!timer) timer = setTimeout(() => { timer = null; load(); }, 500);
  };
  window.addEventListener("vf:event", onEvent);
  await load();
  return () => {
    window.removeEventListener("vf:event", onEvent);
    if (timer) clearTimeout(timer);
  };
}
