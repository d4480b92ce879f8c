// The task panel: operations (start, stop, create...) with live progress bars; operators
// cancel a pending or running one (DELETE /1.0/operations/{id}).
// Progress comes from the events websocket (/1.0/events, operation.progress);
// completion from GET /1.0/operations/{id}/wait. Every event is re-broadcast on
// window as "vf:event" so pages can refresh what they show.
import * as api from "../api.js";
import { clear, errorText, h } from "../dom.js";
import { canOperate } from "../state.js";

const ops = new Map(); // id -> operation (latest known)
let panel = null;
let socket = null;
let retry = null;
let refreshTimer = null;

export function startTasks(element) {
  panel = element;
  panel.hidden = false;
  connect();
  refresh();
}

export function stopTasks() {
  if (retry) clearTimeout(retry);
  retry = null;
  if (socket) {
    socket.onclose = null;
    socket.close();
  }
  socket = null;
  ops.clear();
  if (panel) {
    panel.hidden = true;
    clear(panel);
  }
}

function connect() {
  socket = new WebSocket(api.wsUrl("/1.0/events"));
  socket.onmessage = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (event.kind === "operation.progress" && event.data && ops.has(event.data.operation)) {
      const op = ops.get(event.data.operation);
      Object.assign(op, { progress: event.data.progress, message: event.message, status: "running" });
      render();
    }
    window.dispatchEvent(new CustomEvent("vf:event", { detail: event }));
    scheduleRefresh();
  };
  socket.onclose = () => {
    socket = null;
    retry = setTimeout(connect, 3000); // the daemon restarted or the network blinked
  };
}

function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refresh();
  }, 300);
}

async function refresh() {
  try {
    for (const op of await api.listOperations()) {
      const known = ops.get(op.id);
      const live = op.status === "pending" || op.status === "running";
      if (known || live) ops.set(op.id, { ...known, ...op });
    }
  } catch {
    return; // the panel is best-effort; pages show their own errors
  }
  render();
}

// Show ``op`` (just submitted) and resolve with it once finished.
export async function track(op) {
  ops.set(op.id, op);
  render();
  let current = op;
  while (current.status === "pending" || current.status === "running") {
    try {
      current = await api.get(`/1.0/operations/${api.enc(op.id)}/wait?timeout_s=25`);
    } catch (err) {
      current = { ...current, status: "failure", error_code: err.code, error_message: err.message };
    }
    ops.set(op.id, current);
    render();
  }
  window.dispatchEvent(new CustomEvent("vf:event", { detail: { kind: "operation.done", target: op.target } }));
  return current;
}

export function failureText(op) {
  return `${op.error_message || op.message || "failed"} [${op.error_code || op.status}]`;
}

function render() {
  if (!panel) return;
  const items = [...ops.values()].sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
  const running = items.filter((op) => op.status === "pending" || op.status === "running").length;
  clear(panel,
    h("h2", {}, "Tasks ", h("span.count", { "aria-label": `${running} running` }, String(running))),
    items.length === 0 ? h("p.muted", {}, "No tasks yet.") : null,
    h("ol.task-list", { "aria-live": "polite" }, items.slice(0, 12).map(taskItem)),
    items.some((op) => isDone(op))
      ? h("button.link", { type: "button", onclick: clearFinished }, "Clear finished")
      : null);
}

const isDone = (op) => !(op.status === "pending" || op.status === "running");

function clearFinished() {
  for (const [id, op] of ops) if (isDone(op)) ops.delete(id);
  render();
}

function taskItem(op) {
  const pct = op.status === "success" ? 100 : op.progress || 0;
  const label = `${op.kind.replace("instance.", "")} ${op.target.replace("instance/", "")}`.trim();
  return h(`li.task.task-${op.status}`, { dataset: { op: op.id, status: op.status } },
    h("div.task-head", {}, h("span.task-name", {}, label), h("span.task-status", {}, op.status)),
    h("progress", { max: 100, value: pct, "aria-label": `${label}: ${pct}%` }),
    op.status === "failure" || op.status === "cancelled"
      ? h("p.task-error", { role: "alert" }, failureText(op))
      : h("p.task-msg", {}, op.message || ""),
    canOperate() && !isDone(op)
      ? h("button.link", { type: "button", "aria-label": `Cancel ${label}`, dataset: { cancel: op.id }, onclick: () => cancel(op) }, "Cancel")
      : null);
}

async function cancel(op) {
  try {
    ops.set(op.id, { ...op, ...(await api.del(`/1.0/operations/${api.enc(op.id)}`)) });
  } catch (err) {
    ops.set(op.id, { ...op, message: `cannot cancel: ${errorText(err)}` });
  }
  render();
}
