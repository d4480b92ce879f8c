// The "Container" tab of a container instance: live limits (CPU, memory, pids), exec of
// one command with its output, and rootfs snapshots (take / restore while stopped, delete).
// Uses only the public API (PATCH .../limits, POST .../exec, .../rootfs-snapshots).
import { del, enc, get, post, request } from "../api.js";
import { errorText, h, notice } from "../dom.js";
import { canOperate } from "../state.js";
import { confirmDialog } from "../components/confirm.js";

const path = (name, rest) => `/1.0/instances/${enc(name)}/${rest}`;

export function containerPanel(panel, getInstance, onChange) {
  const name = getInstance().name;
  panel.append(h("h2", {}, "Limits"), limitsForm(name, getInstance, onChange));
  panel.append(h("h2", {}, "Run a command"), execForm(name));
  panel.append(h("h2", {}, "Root file system snapshots"), snapshots(name, getInstance));
}

function field(label, input) {
  return h("label.field", {}, h("span", {}, label), input);
}

function limitsForm(name, getInstance, onChange) {
  const spec = getInstance().spec;
  const cpus = h("input", { type: "number", min: 1, name: "vcpus", value: spec.vcpus });
  const memory = h("input", { type: "number", min: 64, name: "memory_mib", value: spec.memory_mib });
  const pids = h("input", { type: "number", min: 8, name: "pids_max", value: spec.pids_max ?? "", placeholder: "unlimited" });
  const out = h("p.muted", { role: "status" });
  const form = h("form.limits", {
    onsubmit: async (e) => {
      e.preventDefault();
      const body = { vcpus: Number(cpus.value), memory_mib: Number(memory.value) };
      if (pids.value) body.pids_max = Number(pids.value);
      try {
        await request("PATCH", path(name, "limits"), body);
        out.replaceChildren("Limits applied.");
        onChange();
      } catch (err) {
        out.replaceChildren(notice(errorText(err)));
      }
    },
  }, field("CPUs", cpus), field("Memory (MiB)", memory), field("Max tasks", pids),
  canOperate() ? h("button", { type: "submit" }, "Apply") : null, out);
  return form;
}

function execForm(name) {
  const cmd = h("input", { type: "text", name: "command", placeholder: "e.g. ps", size: 40 });
  const out = h("pre.exec-output", { "aria-live": "polite" });
  if (!canOperate()) return notice("Running commands needs the operator role.", "info");
  return h("form.exec", {
    onsubmit: async (e) => {
      e.preventDefault();
      const command = cmd.value.trim().split(/\s+/).filter(Boolean);
      if (!command.length) return;
      try {
        const r = await post(path(name, "exec"), { command, timeout_s: 30 });
        out.replaceChildren(`${r.stdout}${r.stderr}\n[exit ${r.exit_code}]`);
      } catch (err) {
        out.replaceChildren(errorText(err));
      }
    },
  }, field("Command", cmd), h("button", { type: "submit" }, "Run"), out);
}

function snapshots(name, getInstance) {
  const box = h("div.snapshots");
  const status = h("p.muted", { role: "status" });
  const refresh = async () => {
    let list = [];
    try {
      list = await get(path(name, "rootfs-snapshots"));
    } catch (err) {
      box.replaceChildren(notice(errorText(err)));
      return;
    }
    const stopped = ["stopped", "crashed"].includes(getInstance().status.power);
    const restore = (snap) => async () => {
      try {
        await post(path(name, `rootfs-snapshots/${enc(snap)}/restore`));
        status.replaceChildren(`Restored ${snap}.`);
      } catch (err) {
        status.replaceChildren(notice(errorText(err)));
      }
    };
    const remove = (snap) => async () => {
      if (!(await confirmDialog({ title: `Delete snapshot ${snap}?`, body: "The container's root file system stays as it is; only this restore point goes.", confirm: "Delete" }))) return;
      try {
        await del(path(name, `rootfs-snapshots/${enc(snap)}`));
        status.replaceChildren(`Deleted ${snap}.`);
      } catch (err) {
        status.replaceChildren(notice(errorText(err)));
      }
      await refresh();
    };
    box.replaceChildren(
      list.length ? h("ul", {}, list.map((s) => h("li", { dataset: { snapshot: s } }, s, " ",
        canOperate() ? [h("button", { type: "button", disabled: !stopped, onclick: restore(s), "aria-label": `Restore ${s}` }, "Restore"), " ",
          h("button.danger", { type: "button", onclick: remove(s), "aria-label": `Delete snapshot ${s}` }, "Delete")] : null)))
        : h("p.muted", {}, "No snapshots yet."),
      stopped ? null : h("p.muted", {}, "Stop the container to take or restore a snapshot."));
  };
  const snapName = h("input", { type: "text", name: "snapshot", placeholder: "snapshot name" });
  const form = h("form.snapshot", {
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        await post(path(name, "rootfs-snapshots"), { name: snapName.value.trim() });
        status.replaceChildren(`Snapshot ${snapName.value.trim()} taken.`);
        await refresh();
      } catch (err) {
        status.replaceChildren(notice(errorText(err)));
      }
    },
  }, field("Name", snapName), h("button", { type: "submit" }, "Take snapshot"));
  refresh();
  return h("div", {}, box, canOperate() ? form : null, status);
}
