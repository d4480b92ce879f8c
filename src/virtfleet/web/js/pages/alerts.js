// Alerts: firing and resolved alerts, silences with their expiry (operators silence a firing
// alert, or any rule ahead of time on a target glob), the rules (thresholds and durations;
// admins add, edit, disable and delete), and how webhook deliveries went.
import * as api from "../api.js";
import { clear, DASH, errorText, h } from "../dom.js";
import { canOperate, isAdmin } from "../state.js";
import { confirmDialog } from "../components/confirm.js";

const at = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleString() : DASH);
const METRICS = ["cpu_pct", "cpu_throttled_pct", "memory_rss_bytes", "disk_write_bps", "disk_read_bps",
  "net_rx_bps", "net_tx_bps", "memory_available_pct", "pressure_memory_some_avg10", "kvm_usable"];

function table(caption, heads, rows, empty) {
  return h("div.table-wrap", {}, h("table", {},
    h("caption.sr-only", {}, caption),
    h("thead", {}, h("tr", {}, heads.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td.muted", { colspan: heads.length }, empty)))));
}

export async function renderAlerts(main) {
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const done = h("p.notice.notice-info", { role: "status", hidden: true });
  const body = h("div");
  clear(main, h("div.page-head", {}, h("h1", {}, "Alerts")), status, done, body);

  function report(err, ok) {
    status.textContent = err ? errorText(err) : "";
    status.hidden = !err;
    done.textContent = ok || "";
    done.hidden = !ok;
  }

  async function load() {
    const [alerts, rules, silences, hooks] = await Promise.all([
      api.get("/1.0/alerts?all=true"), api.get("/1.0/alerts/rules"), api.get("/1.0/alerts/silences"),
      api.get("/1.0/alerts/webhooks")]);
    const active = alerts.filter((a) => a.state !== "resolved");
    const resolved = alerts.filter((a) => a.state === "resolved").reverse();
    clear(body,
      h("h2", { id: "active-title" }, "Firing and pending"),
      table("Firing and pending alerts", ["Rule", "Target", "State", "Severity", "Since", "Value", "Message", ""],
        active.map(activeRow), "Nothing is firing."),
      h("h2", {}, "Silences"),
      table("Active silences", ["Rule", "Target", "Expires", "Comment"],
        silences.map((s) => h("tr", { dataset: { silence: `${s.rule}:${s.target}` } },
          h("th", { scope: "row" }, s.rule), h("td", {}, s.target), h("td", {}, at(s.until)), h("td", {}, s.comment || DASH))),
        "No silences."),
      canOperate() ? ruleSilenceForm(rules) : null,
      h("h2", {}, "Resolved"),
      table("Recently resolved alerts", ["Rule", "Target", "Severity", "Fired", "Resolved", "Message"],
        resolved.slice(0, 50).map((a) => h("tr", { dataset: { resolved: a.rule } },
          h("th", { scope: "row" }, a.rule), h("td", {}, a.target), h("td", {}, a.severity),
          h("td", {}, at(a.since)), h("td", {}, at(a.resolved_at)), h("td", {}, a.message))),
        "None resolved recently."),
      h("h2", {}, "Rules"),
      table("Alert rules", ["Name", "Kind", "Target", "Condition", "For", "Severity", "Enabled", ""],
        rules.map(ruleRow), "No rules."),
      isAdmin() ? ruleForm() : null,
      h("h2", {}, "Webhooks"),
      h("p", { id: "webhooks" }, hooks.configured
        ? `${hooks.configured} webhook URL${hooks.configured === 1 ? "" : "s"}: ${hooks.delivered} notifications delivered, ${hooks.failed} failed since the daemon started.`
        : "No webhook configured (start the daemon with --alert-webhook URL)."));
  }

  function activeRow(a) {
    const silenced = a.silenced_until && a.silenced_until * 1000 > Date.now();
    return h("tr", { dataset: { alert: a.rule, target: a.target, state: a.state } },
      h("th", { scope: "row" }, a.rule), h("td", {}, a.target),
      h("td", {}, h(`span.badge.alert-${a.state}`, {}, a.state), silenced ? h("span.muted", {}, ` silenced until ${at(a.silenced_until)}`) : null),
      h("td", {}, a.severity), h("td", {}, at(a.since)),
      h("td", {}, a.value === null || a.value === undefined ? DASH : Number(a.value).toFixed(1)),
      h("td", {}, a.message),
      h("td", {}, canOperate() && !silenced ? silenceForm(a) : null));
  }

  function silenceForm(a) {
    const id = `silence-${a.rule}-${a.target}`.replace(/[^a-z0-9-]/gi, "-");
    const duration = h("select", { id }, [["3600", "1 hour"], ["14400", "4 hours"], ["86400", "1 day"], ["604800", "1 week"]]
      .map(([v, label]) => h("option", { value: v }, label)));
    return h("form.inline-form", { "aria-label": `Silence ${a.rule} on ${a.target}`, onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api.post("/1.0/alerts/silences", { rule: a.rule, target: a.target, duration_s: Number(duration.value), comment: "silenced from the web UI" });
        report(null, `Silenced ${a.rule} on ${a.target}.`);
        window.dispatchEvent(new CustomEvent("vf:alerts-changed"));
        await load();
      } catch (err) {
        report(err);
      }
    } }, h("label.sr-only", { for: id }, `Silence ${a.rule} for`), duration, h("button", { type: "submit" }, "Silence"));
  }

  // `alert silence RULE --target GLOB --for S --comment C`: before anything fires, too.
  function ruleSilenceForm(rules) {
    const rule = h("select", { id: "silence-rule", required: true }, rules.map((r) => h("option", { value: r.name }, r.name)));
    const target = h("input", { id: "silence-target", value: "*", required: true, maxlength: 80, autocomplete: "off" });
    const duration = h("select", { id: "silence-duration" }, [["3600", "1 hour"], ["14400", "4 hours"], ["86400", "1 day"],
      ["604800", "1 week"], ["2592000", "30 days"]].map(([v, label]) => h("option", { value: v }, label)));
    const comment = h("input", { id: "silence-comment", maxlength: 200, autocomplete: "off" });
    const field = (el, label) => h("div.field", {}, h("label", { for: el.id }, label), el);
    return h("form.inline-form.card", { id: "rule-silence", "aria-labelledby": "rule-silence-title", onsubmit: async (e) => {
      e.preventDefault();
      const body = { rule: rule.value, target: target.value.trim(), duration_s: Number(duration.value), comment: comment.value };
      try {
        await api.post("/1.0/alerts/silences", body);
        report(null, `Silenced ${body.rule} on ${body.target}.`);
        window.dispatchEvent(new CustomEvent("vf:alerts-changed"));
        await load();
      } catch (err) {
        report(err);
      }
    } },
    h("h3.full", { id: "rule-silence-title" }, "Silence a rule"),
    field(rule, "Rule to silence"), field(target, "On targets (glob: *, host, instance/web-*)"),
    field(duration, "Silence duration"), field(comment, "Comment"),
    h("button", { type: "submit" }, "Add silence"));
  }

  function ruleRow(r) {
    const cond = r.kind === "event" ? `event ${r.event}${r.resolve_event ? ` until ${r.resolve_event}` : ""}` : `${r.metric} ${r.op} ${r.threshold}`;
    return h("tr", { dataset: { rule: r.name } },
      h("th", { scope: "row" }, r.name, r.builtin ? h("span.muted", {}, " (built-in)") : null),
      h("td", {}, r.kind), h("td", {}, r.target), h("td", {}, cond), h("td", {}, `${r.for_s} s`),
      h("td", {}, r.severity), h("td", {}, r.enabled ? "yes" : "no"),
      h("td", {}, isAdmin() && !r.builtin ? h("button.danger", { type: "button", "aria-label": `Delete rule ${r.name}`,
        onclick: () => removeRule(r) }, "Delete") : null));
  }

  async function removeRule(r) {
    if (!(await confirmDialog({ title: "Delete rule?", body: `Delete alert rule ${r.name}?`, confirm: "Delete" }))) return;
    try {
      await api.del(`/1.0/alerts/rules/${api.enc(r.name)}`);
      report(null, `Rule ${r.name} deleted.`);
      await load();
    } catch (err) {
      report(err);
    }
  }

  function ruleForm() {
    const input = (id, attrs) => h("input", { id, autocomplete: "off", ...attrs });
    const name = input("rule-name", { required: true, pattern: "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?" });
    const target = input("rule-target", { value: "instance/*", required: true });
    const metric = h("select", { id: "rule-metric" }, METRICS.map((m) => h("option", { value: m }, m)));
    const op = h("select", { id: "rule-op" }, [">", ">=", "<", "<="].map((o) => h("option", { value: o }, o)));
    const threshold = input("rule-threshold", { type: "number", step: "any", value: "80", required: true });
    const forS = input("rule-for", { type: "number", min: 0, value: "60", required: true });
    const severity = h("select", { id: "rule-severity" }, ["warning", "critical", "info"].map((s) => h("option", { value: s }, s)));
    const summary = input("rule-summary", { maxlength: 200 });
    const enabled = input("rule-enabled", { type: "checkbox", checked: true });
    const field = (el, label) => h("div.field", {}, h("label", { for: el.id }, label), el);
    return h("form.inline-form.card", { "aria-labelledby": "rule-form-title", onsubmit: async (e) => {
      e.preventDefault();
      const rule = { name: name.value, target: target.value, metric: metric.value, op: op.value,
        threshold: Number(threshold.value), for_s: Number(forS.value), severity: severity.value, summary: summary.value,
        enabled: enabled.checked };
      try {
        await api.put(`/1.0/alerts/rules/${api.enc(rule.name)}`, rule);
        report(null, `Rule ${rule.name} saved.`);
        await load();
      } catch (err) {
        report(err);
      }
    } },
    h("h3.full", { id: "rule-form-title" }, "Add or replace a threshold rule"),
    field(name, "Rule name"), field(target, "Target (host, instance/*, instance/NAME)"), field(metric, "Metric"),
    field(op, "Operator"), field(threshold, "Threshold"), field(forS, "For (seconds)"), field(severity, "Severity"),
    field(summary, "Summary"), h("label.check", { for: "rule-enabled" }, enabled, "Enabled (untick to keep the rule, off)"),
    h("button.primary", { type: "submit" }, "Save rule"));
  }

  const onEvent = (e) => { if (e.detail.kind.startsWith("alert.")) load().catch(report); };
  window.addEventListener("vf:event", onEvent);
  await load();
  return () => window.removeEventListener("vf:event", onEvent);
}
