// The Hardware tab: the VM's resources, what is live and what waits for a reboot,
// and (for operators) a form that changes them with PATCH /1.0/instances/{name}:
// memory (balloon), vCPUs, CPU cap and weight, disks (add, grow, I/O limits,
// remove) and NICs (add, remove), the boot RAM and CPU hot-plug ceilings and the balloon
// floor. Each change is reported as live or next boot.
import * as api from "../api.js";
import { DASH, devicesLabel, errorText, h, mib, modeBadge, modeOf } from "../dom.js";
import { canOperate } from "../state.js";
import { failureText, track } from "./tasks.js";

const patchInstance = (name, body) => api.request("PATCH", `/1.0/instances/${api.enc(name)}`, body);
const LIMITS = [["iops_read", "IOPS read"], ["iops_write", "IOPS write"], ["bps_read", "MiB/s read"], ["bps_write", "MiB/s write"]];

// ``onChanged(message)`` reloads the instance and draws the panel again with ``message``.
export function hardwarePanel(panel, instance, onChanged, message = "") {
  const spec = instance.spec;
  const applied = instance.status.applied;
  const pending = instance.pending || [];
  panel.append(
    h("dl.facts", {},
      fact("Kind", "virtual machine"),
      fact("vCPUs", `${spec.vcpus} (max ${spec.max_vcpus || spec.vcpus}${applied ? `, live ${applied.vcpus}` : ""})`),
      fact("Memory", `${mib(spec.memory_mib)} (range ${mib(spec.min_memory_mib || 64)} – ${mib(spec.max_memory_mib || spec.memory_mib)}${applied ? `, live ${mib(applied.memory_mib)}` : ""})`),
      fact("CPU limit", spec.cpu_limit_pct ? `${spec.cpu_limit_pct}% of a core` : "none"),
      fact("CPU weight", spec.cpu_weight ? String(spec.cpu_weight) : "default"),
      fact("Acceleration", spec.accel, " ", modeBadge(modeOf(instance))),
      fact("Device model", devicesLabel(spec.device_model)),
      fact("Disks", spec.disks.length ? spec.disks.map(diskText).join(", ") : `root from ${spec.image || DASH}`),
      fact("Network", spec.nics.length ? spec.nics.map((n, i) => `${n.name || `nic${i}`} (${n.mode})`).join(", ") : "none"),
      fact("Restart policy", spec.restart_policy)),
    pending.length
      ? h("div.pending", {}, h("h3", {}, "Pending changes"),
        h("ul", { id: "pending-changes" }, pending.map((c) => h("li", {}, `${c.target}: ${c.kind} — ${c.mode === "live" ? "being applied" : `at next boot${c.reason ? ` (${c.reason})` : ""}`}`))))
      : null);
  if (canOperate()) panel.append(editForm(instance, onChanged, message));
}

function fact(label, ...value) {
  return [h("dt", {}, label), h("dd", {}, ...value)];
}

function diskText(d) {
  const limits = d.limits ? Object.entries(d.limits).filter(([, v]) => v).map(([k, v]) => `${k}=${v}`) : [];
  return `${d.name}${d.size_gib ? ` ${d.size_gib} GiB` : ""}${d.image ? ` from ${d.image}` : ""}${limits.length ? ` [${limits.join(", ")}]` : ""}`;
}

function field(id, label, value, attrs = {}) {
  return h("label.field", { for: id }, label, h("input", { id, name: id, type: "number", value: value ?? "", ...attrs }));
}

function editForm(instance, onChanged, message) {
  const spec = instance.spec;
  const status = h("p.notice", { role: "status", hidden: true, id: "resources-status" });
  if (message) show(status, message, "info");
  const disks = spec.disks.map((d) => h("fieldset.disk", { dataset: { disk: d.name } },
    h("legend", {}, `Disk ${d.name}`),
    field(`grow-${d.name}`, "Size (GiB, grow only)", d.size_gib, { min: 0, step: "any" }),
    LIMITS.map(([key, label]) => field(`${key}-${d.name}`, label, limitValue(d, key), { min: 0, step: "any" })),
    d.boot ? null : h("label.field", {}, h("input", { type: "checkbox", id: `remove-${d.name}` }), " Remove")));
  const nics = spec.nics.map((n, i) => {
    const name = n.name || `nic${i}`;
    return h("label.field", {}, h("input", { type: "checkbox", id: `remove-nic-${name}`, dataset: { nic: name } }), ` Remove NIC ${name}`);
  });
  const form = h("form.resources", { id: "resources-form", "aria-label": "Change resources" },
    h("h3", {}, "Change resources"),
    h("p.muted", {}, "Memory, vCPUs, limits, disks and NICs change live where the VM allows; the rest at its next boot."),
    field("memory", "Memory (MiB)", spec.memory_mib, { min: 64 }),
    field("vcpus", "vCPUs", spec.vcpus, { min: 1 }),
    field("max-memory", "Boot RAM ceiling, MiB (next boot)", spec.max_memory_mib, { min: 64 }),
    field("min-memory", "Balloon floor, MiB (empty = none)", spec.min_memory_mib, { min: 64 }),
    field("max-vcpus", "CPU hot-plug ceiling (next boot)", spec.max_vcpus, { min: 1 }),
    field("cpu-limit", "CPU limit (% of a core, empty = none)", spec.cpu_limit_pct, { min: 1 }),
    field("cpu-weight", "CPU weight (1–10000, empty = default)", spec.cpu_weight, { min: 1, max: 10000 }),
    disks,
    h("fieldset", {}, h("legend", {}, "Add a disk"),
      h("label.field", { for: "add-disk-name" }, "Name", h("input", { id: "add-disk-name", type: "text", pattern: "[a-z0-9-]+" })),
      field("add-disk-size", "Size (GiB)", "", { min: 0, step: "any" })),
    h("fieldset", {}, h("legend", {}, "NICs"), nics,
      h("label.field", { for: "add-nic" }, "Add a NIC named", h("input", { id: "add-nic", type: "text", pattern: "[a-z0-9-]+" }))),
    h("button.primary", { type: "submit", id: "resources-apply" }, "Apply"),
    status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = patchBody(form, spec);
    if (!Object.keys(body).length) return show(status, "Nothing to change.", "info");
    form.querySelector("#resources-apply").disabled = true;
    try {
      const op = await track(await patchInstance(instance.name, body));
      if (op.status === "success") await onChanged(resultText(op.result));
      else show(status, failureText(op), "error");
    } catch (err) {
      show(status, errorText(err), "error");
    } finally {
      form.querySelector("#resources-apply").disabled = false;
    }
  });
  return form;
}

function limitValue(d, key) {
  const v = d.limits ? d.limits[key] : null;
  if (!v) return "";
  return key.startsWith("bps") ? v / 1048576 : v;
}

function num(form, id) {
  const raw = form.querySelector(`#${CSS.escape(id)}`).value.trim();
  return raw === "" ? null : Number(raw);
}

// Only what the user changed goes into the PATCH body.
function patchBody(form, spec) {
  const body = {};
  const memory = num(form, "memory");
  if (memory !== null && memory !== spec.memory_mib) body.memory_mib = memory;
  const vcpus = num(form, "vcpus");
  if (vcpus !== null && vcpus !== spec.vcpus) body.vcpus = vcpus;
  for (const [id, key] of [["max-memory", "max_memory_mib"], ["max-vcpus", "max_vcpus"]]) {
    const value = num(form, id);
    if (value !== null && value !== (spec[key] ?? null)) body[key] = value;
  }
  const floor = num(form, "min-memory");
  if (floor !== (spec.min_memory_mib ?? null)) body.min_memory_mib = floor; // null lifts it
  const limit = num(form, "cpu-limit");
  if (limit !== (spec.cpu_limit_pct ?? null)) body.cpu_limit_pct = limit;
  const weight = num(form, "cpu-weight");
  if (weight !== (spec.cpu_weight ?? null)) body.cpu_weight = weight;
  for (const d of spec.disks) diskChanges(form, d, body);
  const name = form.querySelector("#add-disk-name").value.trim();
  if (name) body.disks_add = [{ name, size_gib: num(form, "add-disk-size") }];
  const removeNics = [...form.querySelectorAll("input[data-nic]")].filter((c) => c.checked).map((c) => c.dataset.nic);
  if (removeNics.length) body.nics_remove = removeNics;
  const nic = form.querySelector("#add-nic").value.trim();
  if (nic) body.nics_add = [{ name: nic }];
  return body;
}

function diskChanges(form, d, body) {
  const remove = form.querySelector(`#${CSS.escape(`remove-${d.name}`)}`);
  if (remove && remove.checked) {
    (body.disks_remove ||= []).push(d.name);
    return;
  }
  const size = num(form, `grow-${d.name}`);
  if (size !== null && size !== (d.size_gib ?? null)) (body.disk_sizes_gib ||= {})[d.name] = size;
  const limits = {};
  for (const [key] of LIMITS) {
    const v = num(form, `${key}-${d.name}`);
    if (v) limits[key] = key.startsWith("bps") ? Math.round(v * 1048576) : Math.round(v);
  }
  const before = d.limits ? Object.fromEntries(Object.entries(d.limits).filter(([, v]) => v)) : {};
  if (JSON.stringify(limits) !== JSON.stringify(before)) {
    (body.disk_limits ||= {})[d.name] = Object.keys(limits).length ? limits : null;
  }
}

function resultText(result) {
  const changes = (result && result.changes) || [];
  if (!changes.length) return "Nothing changed.";
  return changes.map((c) => `${c.target}: ${c.mode === "live" ? "applied live" : `at next boot${c.reason ? ` (${c.reason})` : ""}`}`).join("\n");
}

function show(status, text, kind) {
  status.className = `notice notice-${kind}`;
  status.textContent = text;
  status.hidden = false;
}
