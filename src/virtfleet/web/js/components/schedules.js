// Backup schedules: the list with each one's next runs, and a create/edit form whose cron
// helper (presets plus the server's own next-runs answer) shows when it would fire.
import * as api from "../api.js";
import { clear, DASH, errorText, h, when } from "../dom.js";
import { canOperate } from "../state.js";
import { confirmDialog } from "./confirm.js";

const PRESETS = [
  ["0 3 * * *", "Daily at 03:00"],
  ["0 * * * *", "Hourly"],
  ["0 3 * * 0", "Weekly, Sunday 03:00"],
  ["0 3 1 * *", "Monthly, on the 1st at 03:00"],
  ["*/15 * * * *", "Every 15 minutes"],
];
const KEEPS = ["last", "daily", "weekly", "monthly"];

async function nextRuns(cron, count = 3) {
  const r = await api.get(`/1.0/backup-schedules/next-runs?cron=${api.enc(cron)}&count=${count}`);
  return r.next_runs;
}

export function scheduleSection(section, instances, report) {
  const body = h("tbody");
  const formBox = h("div");
  clear(section, h("h2", { id: "sched-title" }, "Schedules"),
    h("div.table-wrap", {}, h("table.schedules", {},
      h("caption.sr-only", {}, "Backup schedules"),
      h("thead", {}, h("tr", {}, ["Name", "Instance", "Cron", "Retention", "Last run", "Next runs", ""]
        .map((c) => h("th", { scope: "col" }, c)))),
      body)),
    formBox);

  async function refresh() {
    const list = await api.get("/1.0/backup-schedules");
    clear(body, list.length ? list.map(row) : h("tr", {}, h("td.muted", { colspan: 7 }, "No schedules.")));
  }

  function row(s) {
    const next = h("td.next-runs", {}, "…");
    nextRuns(s.cron).then((runs) => clear(next, runs.map(when).join("; "))).catch((e) => clear(next, errorText(e)));
    const retention = KEEPS.filter((k) => s[`keep_${k}`]).map((k) => `${k} ${s[`keep_${k}`]}`).join(", ") || "keep all";
    return h("tr", { dataset: { schedule: s.name } },
      h("th", { scope: "row" }, s.name), h("td", {}, s.instance), h("td", {}, h("code", {}, s.cron)),
      h("td", {}, retention),
      h("td", {}, s.last_run ? `${when(s.last_run)} (${s.last_status || DASH})` : "never"),
      next,
      h("td", {}, canOperate() ? h("div.actions", {},
        h("button", { type: "button", "aria-label": `Edit schedule ${s.name}`, onclick: () => drawForm(s) }, "Edit"),
        h("button.danger", { type: "button", "aria-label": `Delete schedule ${s.name}`, onclick: () => remove(s) }, "Delete")) : null));
  }

  async function remove(s) {
    if (!(await confirmDialog({ title: "Delete schedule?", body: `Delete schedule ${s.name}? Its backups stay.`, confirm: "Delete" }))) return;
    try {
      await api.del(`/1.0/backup-schedules/${api.enc(s.name)}`);
      report(null, `Schedule ${s.name} deleted.`);
      await refresh();
    } catch (err) {
      report(err);
    }
  }

  function drawForm(s = null) {
    const name = h("input", { id: "sched-name", required: true, value: s ? s.name : "", readonly: !!s,
      pattern: "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", autocomplete: "off" });
    const vm = h("select", { id: "sched-instance" }, instances.map((i) =>
      h("option", { value: i.name, selected: s && s.instance === i.name }, i.name)));
    const cron = h("input", { id: "sched-cron", required: true, value: s ? s.cron : PRESETS[0][0], autocomplete: "off",
      "aria-describedby": "sched-cron-next" });
    const preset = h("select", { id: "sched-preset", onchange: () => { if (preset.value) { cron.value = preset.value; helper(); } } },
      h("option", { value: "" }, "Choose a preset…"), PRESETS.map(([v, label]) => h("option", { value: v }, `${label} (${v})`)));
    const next = h("p.hint", { id: "sched-cron-next", role: "status", "aria-live": "polite" });
    const keeps = KEEPS.map((k) => [k, h("input", { type: "number", min: 0, id: `sched-keep-${k}`,
      value: String(s ? s[`keep_${k}`] : k === "last" ? 7 : 0) })]);
    let timer = null;
    async function helper() {
      try {
        const runs = await nextRuns(cron.value.trim(), 5);
        next.textContent = `Next runs: ${runs.map(when).join("; ")}`;
        cron.setCustomValidity("");
      } catch (err) {
        next.textContent = errorText(err);
        cron.setCustomValidity(err.message || "invalid cron expression");
      }
    }
    cron.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(helper, 300); });
    const form = h("form.inline-form", { "aria-labelledby": "sched-form-title", onsubmit: async (e) => {
      e.preventDefault();
      const spec = { instance: vm.value, cron: cron.value.trim(),
        ...Object.fromEntries(keeps.map(([k, el]) => [`keep_${k}`, Number(el.value) || 0])) };
      try {
        await api.put(`/1.0/backup-schedules/${api.enc(name.value)}`, spec);
        report(null, `Schedule ${name.value} saved.`);
        await refresh();
        drawForm();
      } catch (err) {
        report(err);
      }
    } },
    h("h3.full", { id: "sched-form-title" }, s ? `Edit schedule ${s.name}` : "New schedule"),
    h("div.field", {}, h("label", { for: "sched-name" }, "Schedule name"), name),
    h("div.field", {}, h("label", { for: "sched-instance" }, "Instance to back up"), vm),
    h("div.field", {}, h("label", { for: "sched-preset" }, "Preset"), preset),
    h("div.field", {}, h("label", { for: "sched-cron" }, "Cron (minute hour day month weekday)"), cron),
    next,
    keeps.map(([k, el]) => h("div.field", {}, h("label", { for: el.id }, `Keep ${k}`), el)),
    h("button.primary", { type: "submit" }, s ? "Save schedule" : "Add schedule"),
    s ? h("button", { type: "button", onclick: () => drawForm() }, "Cancel edit") : null);
    clear(formBox, form);
    helper();
    if (s) cron.focus();
  }

  if (canOperate()) drawForm();
  refresh().catch(report);
}
