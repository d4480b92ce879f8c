// Backups: the repository (sizes, dedup, chunks, last verify), every backup with kind, size
// and duration, back up now, restore to a new VM or over the original, verify (naming the
// damaged ones), prune with a preview, and the schedules (components/schedules.js).
import * as api from "../api.js";
import { bytes, clear, DASH, errorText, h, when } from "../dom.js";
import { canOperate } from "../state.js";
import { confirmDialog, trapFocus } from "../components/confirm.js";
import { failureText, track } from "../components/tasks.js";
import { scheduleSection } from "../components/schedules.js";

export async function renderBackups(main) {
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const done = h("p.notice.notice-info", { role: "status", hidden: true });
  const repo = h("section.card", { "aria-labelledby": "repo-title", id: "repository" });
  const body = h("tbody");
  const prune = h("section.card", { "aria-labelledby": "prune-title", id: "prune" });
  const schedules = h("section.card", { "aria-labelledby": "sched-title", id: "schedules" });
  const backupNow = h("div");
  clear(main,
    h("div.page-head", {}, h("h1", {}, "Backups")),
    status, done, repo, backupNow,
    h("h2", {}, "Backups"),
    h("div.table-wrap", {}, h("table.backups", {},
      h("caption.sr-only", {}, "Backups in the repository, newest first"),
      h("thead", {}, h("tr", {}, ["Backup", "Instance", "Kind", "Created", "Read", "Stored", "Duration", ""]
        .map((c) => h("th", { scope: "col" }, c)))),
      body)),
    canOperate() ? prune : null, schedules);

  function report(err, ok) {
    status.textContent = err ? errorText(err) : "";
    status.hidden = !err;
    done.textContent = ok || "";
    done.hidden = !ok;
  }

  // Run an operation; its result, or null after showing why it failed.
  async function runOp(promise) {
    report(null);
    try {
      const op = await track(await promise);
      if (op.status === "success") return op.result || {};
      report({ message: failureText(op) });
    } catch (err) {
      report(err);
    }
    return null;
  }

  async function refresh() {
    const [stats, backups, instances] = await Promise.all([
      api.get("/1.0/backups/repository"), api.get("/1.0/backups"), api.listInstances()]);
    drawRepo(stats);
    const rows = [...backups].reverse();
    clear(body, rows.length ? rows.map(row) : h("tr", {}, h("td.muted", { colspan: 8 }, "No backups yet.")));
    if (canOperate()) {
      drawBackupNow(instances.filter((i) => i.spec.kind !== "container"));
      drawPrune(instances);
    }
    return instances;
  }

  function drawRepo(s) {
    const v = s.last_verify;
    const verified = !v ? "never" : v.ok ? `OK (${when(v.at)}, ${v.chunks} chunks re-read)`
      : `DAMAGED: ${[...v.damaged_backups, ...v.unreadable_manifests].join(", ")} (${when(v.at)})`;
    clear(repo, h("h2", { id: "repo-title" }, "Repository"),
      h("dl.facts", {}, [["Backups", `${s.backups} (${s.instances} instance${s.instances === 1 ? "" : "s"})`], ["Stored on disk", bytes(s.stored_bytes)],
        ["Data backed up", bytes(s.logical_bytes)], ["Dedup ratio", s.dedup_ratio ? `${s.dedup_ratio}×` : DASH],
        ["Chunks", s.chunks], ["Last verify", verified]]
        .map(([k, val]) => [h("dt", {}, k), h("dd", { dataset: { fact: k } }, String(val))])),
      canOperate() ? h("button", { type: "button", id: "verify", onclick: verify }, "Verify every backup") : null);
  }

  async function verify() {
    const r = await runOp(api.post("/1.0/backups/verify"));
    if (r) report(r.ok ? null : { message: `Damaged backups: ${[...r.damaged_backups, ...r.unreadable_manifests].join(", ")}` },
      r.ok ? `Verified ${r.backups} backups: all ${r.chunks} chunks intact.` : "");
    await refresh();
  }

  function row(b) {
    const actions = canOperate() ? [
      h("button", { type: "button", "aria-label": `Restore ${b.id}`, onclick: () => restore(b) }, "Restore…"),
      h("button.danger", { type: "button", "aria-label": `Delete ${b.id}`, onclick: () => remove(b) }, "Delete"),
    ] : [];
    const st = b.stats || {};
    // The manifest is saved before "seconds" is set (host/backups.py): fall back to its parts.
    const secs = Number(st.seconds) || (Number(st.copy_seconds) || 0) + (Number(st.store_seconds) || 0);
    return h("tr", { dataset: { backup: b.id, instance: b.instance } },
      h("th", { scope: "row" }, h("code", {}, b.id)),
      h("td", {}, b.instance),
      h("td", {}, b.kind, b.full_reason ? h("span.muted", { title: b.full_reason }, " *") : null),
      h("td", {}, when(b.created_at)),
      h("td", {}, bytes(st.bytes_read)),
      h("td", {}, bytes(st.bytes_written)),
      h("td", {}, secs ? `${secs.toFixed(1)} s` : DASH),
      h("td", {}, h("div.actions", {}, actions)));
  }

  // Values typed or chosen in a form survive the re-render after each action.
  const kept = (id, fallback) => main.querySelector(`#${id}`)?.value ?? fallback;

  function drawBackupNow(vms) {
    const chosen = kept("backup-instance", "");
    const vm = h("select", { id: "backup-instance" }, vms.map((i) => h("option", { value: i.name, selected: i.name === chosen }, i.name)));
    const full = h("input", { type: "checkbox", id: "backup-full" });
    clear(backupNow, h("form.inline-form.card", {
      "aria-label": "Back up now",
      onsubmit: async (e) => {
        e.preventDefault();
        const r = await runOp(api.post("/1.0/backups", { instance: vm.value, full: full.checked }));
        if (r) report(null, `Backup ${r.id} of ${r.instance} made (${r.kind}).`);
        await refresh();
      },
    },
    h("div.field", {}, h("label", { for: "backup-instance" }, "Instance"), vm),
    h("label.check", { for: "backup-full" }, full, "Full (not incremental)"),
    h("button.primary", { type: "submit", disabled: !vms.length }, "Back up now")));
  }

  function restore(b) {
    const dialog = document.getElementById("dialog");
    const target = h("input", { id: "restore-target", value: `${b.instance}-restored`, pattern: "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", autocomplete: "off" });
    const start = h("input", { type: "checkbox", id: "restore-start" });
    const form = h("form", {
      "aria-labelledby": "dialog-title",
      onsubmit: async (e) => {
        e.preventDefault();
        const over = new FormData(form).get("where") === "original";
        dialog.close();
        const r = await runOp(api.post(`/1.0/backups/${api.enc(b.id)}/restore`,
          { target: over ? null : target.value, start: start.checked }));
        if (r) report(null, `Restored ${b.id} ${over ? `over ${b.instance}` : `as ${target.value}`}.`);
        await refresh();
      },
    },
    h("h2", { id: "dialog-title" }, `Restore ${b.id}`),
    h("fieldset.radios", {}, h("legend", {}, "Restore to"),
      h("label.radio", {}, h("input", { type: "radio", name: "where", value: "new", checked: true }), "A new VM"),
      h("label.radio", {}, h("input", { type: "radio", name: "where", value: "original" }), `Over ${b.instance} (it must be stopped)`)),
    h("div.field", {}, h("label", { for: "restore-target" }, "New VM name"), target),
    h("label.check", { for: "restore-start" }, start, "Start after restore"),
    h("div.actions", {}, h("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
      h("button.primary", { type: "submit" }, "Restore")));
    clear(dialog, form);
    dialog.onclose = null;
    trapFocus(dialog);
    dialog.showModal();
    target.focus();
  }

  async function remove(b) {
    if (!(await confirmDialog({ title: "Delete backup?", body: `Delete backup ${b.id} of ${b.instance}?`, confirm: "Delete" }))) return;
    if (await runOp(api.del(`/1.0/backups/${api.enc(b.id)}`))) report(null, `Backup ${b.id} deleted.`);
    await refresh();
  }

  function drawPrune(instances) {
    const chosen = kept("prune-instance", "");
    const which = h("select", { id: "prune-instance" }, h("option", { value: "" }, "Every instance"),
      instances.map((i) => h("option", { value: i.name, selected: i.name === chosen }, i.name)));
    const keeps = ["last", "daily", "weekly", "monthly"].map((k) =>
      [k, h("input", { type: "number", min: 0, value: kept(`prune-${k}`, k === "last" ? "3" : "0"), id: `prune-${k}` })]);
    const preview = h("div.prune-preview", { role: "status", "aria-live": "polite" });
    const policy = (dry) => ({ instance: which.value || null, dry_run: dry,
      ...Object.fromEntries(keeps.map(([k, el]) => [`keep_${k}`, Number(el.value) || 0])) });
    const apply = h("button.danger", { type: "button", id: "prune-apply", disabled: true, onclick: async () => {
      const r = await runOp(api.post("/1.0/backups/prune", policy(false)));
      if (r) report(null, `Pruned ${r.removed.length} backups, freed ${bytes(r.bytes_freed)}.`);
      clear(preview);
      apply.disabled = true;
      await refresh();
    } }, "Prune now");
    const form = h("form.inline-form", { onsubmit: async (e) => {
      e.preventDefault();
      const r = await runOp(api.post("/1.0/backups/prune", policy(true)));
      if (!r) return;
      clear(preview, h("p", {}, `Would remove ${r.removed.length}: ${r.removed.join(", ") || "nothing"}; keep ${r.kept.length}.`));
      apply.disabled = !r.removed.length;
    }, oninput: () => { apply.disabled = true; clear(preview); } },
    h("div.field", {}, h("label", { for: "prune-instance" }, "Prune backups of"), which),
    keeps.map(([k, el]) => h("div.field", {}, h("label", { for: el.id }, `Keep ${k}`), el)),
    h("button", { type: "submit" }, "Preview"), apply);
    clear(prune, h("h2", { id: "prune-title" }, "Prune"), form, preview);
  }

  const instances = await refresh();
  scheduleSection(schedules, instances, report);
}
