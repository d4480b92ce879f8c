// The audit log (admins: who did what, filtered by actor, action, target and time) and the
// event history (everyone: filter by kind and target, and follow new events live).
import * as api from "../api.js";
import { clear, errorText, h, notice, when } from "../dom.js";
import { isAdmin } from "../state.js";
import { adminNav } from "./admin.js";

function field(id, label, input) {
  input.id = id;
  return h("div.field", {}, h("label", { for: id }, label), input);
}

const isoOrNull = (value) => (value ? new Date(value).toISOString() : null);

export async function renderAudit(main) {
  const head = [h("div.page-head", {}, h("h1", {}, "Audit log")), adminNav("audit")];
  if (!isAdmin()) {
    clear(main, head, h("p.muted", {}, "The audit log is shown to admins only."));
    return;
  }
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const body = h("tbody");
  const count = h("p.muted", { role: "status" });
  const actor = h("input", { autocomplete: "off" });
  const method = h("select", {}, ["", "POST", "PUT", "PATCH", "DELETE", "GET"].map((m) => h("option", { value: m }, m || "Any")));
  const path = h("input", { autocomplete: "off", placeholder: "/1.0/instances" });
  const since = h("input", { type: "datetime-local" });
  const until = h("input", { type: "datetime-local" });
  const result = h("input", { type: "number", min: 100, max: 599, placeholder: "e.g. 403" });
  const form = h("form.inline-form.card", { "aria-label": "Audit filters", onsubmit: (e) => { e.preventDefault(); load(); } },
    field("audit-actor", "Actor", actor), field("audit-method", "Action (method)", method),
    field("audit-path", "Target (path prefix)", path), field("audit-since", "Since", since),
    field("audit-until", "Until", until), field("audit-status", "Status", result),
    h("button.primary", { type: "submit" }, "Filter"));
  clear(main, head, form, status,
    h("div.table-wrap", {}, h("table.audit", {}, h("caption.sr-only", {}, "Audit entries, newest first"),
      h("thead", {}, h("tr", {}, ["Time", "Actor", "Via", "Action", "Target", "Status", "Source"].map((c) => h("th", { scope: "col" }, c)))),
      body)), count);

  async function load() {
    const params = new URLSearchParams({ limit: "200" });
    const add = (k, v) => { if (v) params.set(k, v); };
    add("actor", actor.value.trim());
    add("method", method.value);
    add("path", path.value.trim());
    add("since", isoOrNull(since.value));
    add("until", isoOrNull(until.value));
    add("status", result.value);
    try {
      const entries = await api.get(`/1.0/audit?${params}`);
      status.hidden = true;
      clear(body, entries.length ? entries.map((e) => h("tr", { dataset: { actor: e.actor, method: e.method } },
        h("td", {}, when(e.time)), h("th", { scope: "row" }, e.actor), h("td", {}, e.via || ""),
        h("td", {}, e.method), h("td", {}, h("code", {}, e.path)), h("td.num", {}, String(e.status)), h("td", {}, e.source)))
        : h("tr", {}, h("td.muted", { colspan: 7 }, "No entry matches.")));
      count.textContent = `${entries.length} entries shown`;
    } catch (err) {
      status.textContent = errorText(err);
      status.hidden = false;
    }
  }
  await load();
}

export async function renderEvents(main) {
  const body = h("tbody");
  const kind = h("input", { autocomplete: "off", placeholder: "instance." });
  const target = h("input", { autocomplete: "off" });
  const follow = h("input", { type: "checkbox", id: "events-follow", checked: true });
  const count = h("p.muted", { role: "status" });
  let events = [];
  clear(main, h("div.page-head", {}, h("h1", {}, "Event history")), adminNav("events"),
    h("form.inline-form.card", { "aria-label": "Event filters", onsubmit: (e) => e.preventDefault(), oninput: draw },
      field("events-kind", "Kind starts with", kind), field("events-target", "Target contains", target),
      h("label.check", { for: "events-follow" }, follow, "Follow live")),
    h("div.table-wrap", {}, h("table.events", {}, h("caption.sr-only", {}, "Events, newest first"),
      h("thead", {}, h("tr", {}, ["Time", "Kind", "Target", "Message"].map((c) => h("th", { scope: "col" }, c)))),
      body)), count);

  function draw() {
    const k = kind.value.trim();
    const t = target.value.trim();
    const shown = events.filter((e) => (!k || e.kind.startsWith(k)) && (!t || (e.target || "").includes(t)));
    clear(body, shown.length ? shown.map((e) => h("tr", { dataset: { kind: e.kind } },
      h("td", {}, when(e.time)), h("th", { scope: "row" }, e.kind), h("td", {}, e.target || ""), h("td", {}, e.message || "")))
      : h("tr", {}, h("td.muted", { colspan: 4 }, "No event matches.")));
    count.textContent = `${shown.length} of ${events.length} events shown`;
  }

  const onEvent = (e) => {
    if (!follow.checked || e.detail.kind === "operation.progress") return;
    events = [e.detail, ...events].slice(0, 1000);
    draw();
  };
  try {
    events = (await api.listEvents(500)).reverse();
  } catch (err) {
    main.append(notice(errorText(err)));
  }
  draw();
  window.addEventListener("vf:event", onEvent);
  return () => window.removeEventListener("vf:event", onEvent);
}
