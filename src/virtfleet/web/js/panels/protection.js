// The Snapshots and Backups tabs of an instance: the snapshot tree (take, revert, delete)
// and the instance's backups (back up now, restore to a new VM). Uses only the public API;
// slow work is tracked as operations in the Tasks panel.
import * as api from "../api.js";
import { bytes, clear, DASH, errorText, h, notice, when } from "../dom.js";
import { canOperate } from "../state.js";
import { confirmDialog } from "../components/confirm.js";
import { failureText, track } from "../components/tasks.js";

const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

async function runOp(promise, status, after) {
  status.hidden = true;
  try {
    const done = await track(await promise);
    if (done.status !== "success") throw new Error(failureText(done));
  } catch (err) {
    status.textContent = errorText(err);
    status.hidden = false;
  }
  await after();
}

// A depth-first order of the tree so children sit under their parents.
function treeOrder(snaps) {
  const byParent = new Map();
  for (const s of snaps) {
    const key = s.parent || "";
    byParent.set(key, [...(byParent.get(key) || []), s]);
  }
  const out = [];
  const walk = (parent, depth) => {
    for (const s of byParent.get(parent) || []) {
      out.push([s, depth]);
      walk(s.name, depth + 1);
    }
  };
  walk("", 0);
  return out;
}

export function snapshotsPanel(panel, name) {
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const list = h("div.table-wrap");
  const input = h("input", { id: "snapshot-name", type: "text", placeholder: "snapshot name", "aria-label": "Snapshot name" });
  const memory = h("input", { id: "snapshot-memory", type: "checkbox" });
  const take = h("button.primary", { type: "button", id: "snapshot-take", onclick: () => create() }, "Take snapshot");
  panel.append(h("h2", {}, "Snapshots"),
    canOperate() ? h("div.actions", { role: "group", "aria-label": "New snapshot" },
      input, h("label", {}, memory, " with memory"), take) : null,
    status, list);

  async function create() {
    const snap = input.value.trim();
    if (!NAME_RE.test(snap)) {
      status.textContent = "Use 1-63 lowercase letters, digits or '-' for the snapshot name.";
      status.hidden = false;
      return;
    }
    take.disabled = true;
    await runOp(api.post(`/1.0/instances/${api.enc(name)}/snapshots`, { name: snap, memory: memory.checked }), status, load);
    take.disabled = false;
    input.value = "";
  }

  async function revert(snap) {
    const ok = await confirmDialog({ title: `Revert ${name} to ${snap}?`, body: "Changes since the snapshot are lost; a running VM restarts (resumes, with memory).", confirm: "Revert" });
    if (ok) await runOp(api.post(`/1.0/instances/${api.enc(name)}/snapshots/${api.enc(snap)}/revert`), status, load);
  }

  async function remove(snap) {
    const ok = await confirmDialog({ title: `Delete snapshot ${snap}?`, body: "The VM's data stays as it is; only this restore point goes.", confirm: "Delete" });
    if (ok) await runOp(api.del(`/1.0/instances/${api.enc(name)}/snapshots/${api.enc(snap)}`), status, load);
  }

  async function load() {
    let snaps;
    try {
      snaps = await api.get(`/1.0/instances/${api.enc(name)}/snapshots`);
    } catch (err) {
      clear(list, notice(errorText(err)));
      return;
    }
    if (snaps.length === 0) {
      clear(list, h("p.muted", {}, "No snapshots yet."));
      return;
    }
    clear(list, h("table.snapshots", {},
      h("thead", {}, h("tr", {}, ["Name", "Taken", "Memory", ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, treeOrder(snaps).map(([s, depth]) => h("tr", { dataset: { snapshot: s.name } },
        h("td", { style: `padding-left: ${0.5 + depth * 1.25}rem` }, depth ? "└ " : "", s.name, s.current ? h("span.badge", {}, " current") : ""),
        h("td", {}, when(s.created_at)),
        h("td", {}, s.memory ? `yes${s.pause_ms != null ? ` (paused ${s.pause_ms.toFixed(0)} ms)` : ""}` : "no"),
        h("td", {}, canOperate() ? [
          h("button", { type: "button", onclick: () => revert(s.name) }, "Revert"), " ",
          h("button.danger", { type: "button", disabled: s.children.length > 0, title: s.children.length ? "Delete its children first" : "", onclick: () => remove(s.name) }, "Delete"),
        ] : DASH))))));
  }
  load();
}

export function backupsPanel(panel, name) {
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const list = h("div.table-wrap");
  const full = h("input", { id: "backup-full", type: "checkbox" });
  const now = h("button.primary", { type: "button", id: "backup-now", onclick: () => backup() }, "Back up now");
  panel.append(h("h2", {}, "Backups"),
    canOperate() ? h("div.actions", { role: "group", "aria-label": "New backup" }, h("label", {}, full, " full"), now) : null,
    status, list);

  async function backup() {
    now.disabled = true;
    await runOp(api.post("/1.0/backups", { instance: name, full: full.checked }), status, load);
    now.disabled = false;
  }

  async function restore(id) {
    const target = prompt(`Restore backup ${id} to a new VM named:`, `${name}-restored`.slice(0, 63));
    if (target === null) return;
    if (!NAME_RE.test(target)) {
      status.textContent = "Use 1-63 lowercase letters, digits or '-' for the VM name.";
      status.hidden = false;
      return;
    }
    await runOp(api.post(`/1.0/backups/${api.enc(id)}/restore`, { target }), status, load);
  }

  async function load() {
    let backups;
    try {
      backups = await api.get(`/1.0/backups?instance=${api.enc(name)}`);
    } catch (err) {
      clear(list, notice(errorText(err)));
      return;
    }
    if (backups.length === 0) {
      clear(list, h("p.muted", {}, "No backups yet."));
      return;
    }
    clear(list, h("table.backups", {},
      h("thead", {}, h("tr", {}, ["Backup", "Taken", "Kind", "Read", "Stored", ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, backups.slice().reverse().map((b) => h("tr", { dataset: { backup: b.id } },
        h("td", {}, b.id),
        h("td", {}, when(b.created_at)),
        h("td", { title: b.full_reason || "" }, b.kind, b.full_reason ? ` (${b.full_reason})` : ""),
        h("td", {}, bytes(b.stats.bytes_read)),
        h("td", {}, bytes(b.stats.bytes_written)),
        h("td", {}, canOperate() ? h("button", { type: "button", onclick: () => restore(b.id) }, "Restore…") : DASH))))));
  }
  load();
}
