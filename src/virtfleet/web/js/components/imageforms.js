// The Images page's forms beyond OCI import: build an image (`image build`), import a disk
// image from another hypervisor (`image import`), import an OVA package as images plus a
// VM (`image import-ova`), and export an image (`image export`) or a stopped VM (`vm
// export`: an OVA, or one disk) to the daemon's export directory. Each submits an operation
// and follows it in the Tasks panel (`runOp(promise)` resolves to the finished operation, or
// null after showing why it could not start).
import * as api from "../api.js";
import { clear, h } from "../dom.js";
import { trapFocus } from "./confirm.js";

const NAME_PATTERN = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
const BUILDERS = [["tiny", "tiny: a minimal busybox VM guest"], ["debian-12", "debian-12: Debian with cloud-init and the guest agent (minutes, cached)"],
  ["container-tiny", "container-tiny: a busybox container root file system"], ["container-debian-12", "container-debian-12: a Debian container root file system"]];
const DISK_FORMATS = [["", "Detect"], ["raw", "raw"], ["qcow2", "qcow2"], ["vmdk", "vmdk (VMware)"], ["vhdx", "vhdx (Hyper-V)"],
  ["vpc", "vpc / vhd (Virtual PC, Azure)"], ["vdi", "vdi (VirtualBox)"]];
export const EXPORT_FORMATS = [["qcow2", "qcow2"], ["raw", "raw"], ["vmdk", "vmdk (VMware)"]];

function input(id, attrs = {}) {
  return h("input", { id, autocomplete: "off", spellcheck: "false", ...attrs });
}

function field(id, label, control, hint) {
  if (hint) control.setAttribute("aria-describedby", `${id}-hint`);
  return h("div.field", {}, h("label", { for: id }, label), control, hint ? h("small.hint", { id: `${id}-hint` }, hint) : null);
}

function select(id, options, value) {
  return h("select", { id }, options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
}

// A card holding one form: ``submit(values)`` returns the finished op (or null) and the
// success text to show. The button is disabled while the operation runs.
function formCard(id, title, fields, button, submit) {
  const done = h("p.muted", { role: "status", id: `${id}-status` });
  const go = h("button.primary", { type: "submit" }, button);
  const form = h("form.inline-form", {
    id, "aria-labelledby": `${id}-title`,
    onsubmit: async (e) => {
      e.preventDefault();
      go.disabled = true;
      done.textContent = "";
      try {
        const text = await submit();
        if (text) done.textContent = text;
      } finally {
        go.disabled = false;
      }
    },
  }, fields, go, done);
  return h("section.card", { "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title` }, title), form);
}

export function buildForm(runOp) {
  const name = input("build-name", { required: true, pattern: NAME_PATTERN });
  const builder = select("build-builder", BUILDERS, "tiny");
  const force = h("input", { type: "checkbox", id: "build-force" });
  return formCard("image-build", "Build an image", [
    field("build-name", "Name for the built image", name),
    field("build-builder", "Builder", builder),
    h("label.check", { for: "build-force" }, force, "Rebuild if it exists (refused while instances use it)"),
  ], "Build", async () => {
    const op = await runOp(api.post("/1.0/images", { name: name.value.trim(), builder: builder.value, force: force.checked }));
    return op && op.status === "success" ? `Built ${name.value.trim()}.` : "";
  });
}

// The path is read by the daemon from its import directory (only the local root over the
// Unix socket may name any host path; the server enforces it).
export function diskImportForm(runOp) {
  const name = input("disk-import-name", { required: true, pattern: NAME_PATTERN });
  const path = input("disk-import-path", { required: true });
  const format = select("disk-import-format", DISK_FORMATS, "");
  const force = h("input", { type: "checkbox", id: "disk-import-force" });
  return formCard("disk-import", "Import a disk image", [
    field("disk-import-name", "Name for the imported disk", name),
    field("disk-import-path", "Disk file on the host", path, "A file in the daemon's import directory, converted to qcow2."),
    field("disk-import-format", "Format", format),
    h("label.check", { for: "disk-import-force" }, force, "Replace an existing image"),
  ], "Import disk", async () => {
    const body = { name: name.value.trim(), path: path.value.trim(), force: force.checked };
    if (format.value) body.format = format.value;
    const op = await runOp(api.post("/1.0/images/import", body));
    return op && op.status === "success" ? `Imported ${body.name} (${op.result.image.source}).` : "";
  });
}

export function ovaImportForm(runOp) {
  const path = input("ova-path", { required: true });
  const name = input("ova-name", { pattern: NAME_PATTERN });
  const start = h("input", { type: "checkbox", id: "ova-start" });
  const keepMacs = h("input", { type: "checkbox", id: "ova-keep-macs" });
  const form = formCard("ova-import", "Import an OVA package", [
    field("ova-path", "OVA file on the host", path, "An .ova (VMware, VirtualBox…) in the daemon's import directory: its disks become images and a VM is made."),
    field("ova-name", "VM name (optional)", name, "Default: the OVF's system name."),
    h("label.check", { for: "ova-start" }, start, "Start the VM once imported"),
    h("label.check", { for: "ova-keep-macs" }, keepMacs, "Keep the OVF's MAC addresses (a move; default: new ones)"),
  ], "Import OVA", async () => {
    const body = { path: path.value.trim(), start: start.checked, keep_macs: keepMacs.checked };
    if (name.value.trim()) body.name = name.value.trim();
    const op = await runOp(api.post("/1.0/ova/import", body));
    if (!op || op.status !== "success") return "";
    const vm = op.result.instance;
    const status = form.querySelector("#ova-import-status");
    clear(status, `Imported VM `, h("a", { href: `#/instances/${vm}` }, vm), ` with images ${(op.result.images || []).join(", ")}.`,
      op.result.note ? ` ${op.result.note}` : "");
    return "";
  });
  return form;
}

// A dialog asking where (and as what) to export; ``send(path, format)`` returns the
// promise of the operation. ``formats`` null: no format choice (an OVA package).
export function exportDialog({ title, hint, suggested, formats, send, runOp, onDone }) {
  const dialog = document.getElementById("dialog");
  const path = input("export-path", { required: true, value: suggested });
  const format = formats ? select("export-format", formats, formats[0][0]) : null;
  const form = h("form", {
    "aria-labelledby": "dialog-title",
    onsubmit: async (e) => {
      e.preventDefault();
      dialog.close();
      const op = await runOp(send(path.value.trim(), format ? format.value : null));
      if (op && op.status === "success") onDone(op.result);
    },
  },
  h("h2", { id: "dialog-title" }, title),
  field("export-path", "New file on the host", path, hint),
  format ? field("export-format", "Format", format) : null,
  h("div.actions", {}, h("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
    h("button.primary", { type: "submit" }, "Export")));
  if (format) format.addEventListener("change", () => { path.value = path.value.replace(/\.(qcow2|raw|vmdk)$/, `.${format.value}`); });
  clear(dialog, form);
  dialog.onclose = null;
  trapFocus(dialog);
  dialog.showModal();
  path.focus();
}

export const EXPORT_HINT = "A new file in the daemon's export directory (relative to it); an existing file is never overwritten.";

// A stopped VM's export: the whole VM as an OVA package, or one disk (flattened) as
// qcow2, raw or vmdk. ``onDone(text)`` is told where it went.
export function vmExportDialog(instance, runOp, onDone) {
  const name = instance.name;
  const disks = (instance.spec.disks || []).map((d) => d.name);
  const kinds = [["ova", "The whole VM as an OVA package"], ...(disks.length ? disks : ["root"]).map((d) => [`disk:${d}`, `Disk ${d} only`])];
  const what = select("export-what", kinds, "ova");
  const formatField = field("export-format", "Disk format", select("export-format", EXPORT_FORMATS, "qcow2"));
  const path = input("export-path", { required: true, value: `${name}.ova` });
  const dialog = document.getElementById("dialog");
  const format = () => formatField.querySelector("select").value;
  const suggest = () => {
    const disk = what.value.startsWith("disk:") ? what.value.slice(5) : null;
    formatField.hidden = !disk;
    path.value = disk ? `${name}-${disk}.${format()}` : `${name}.ova`;
  };
  what.addEventListener("change", suggest);
  formatField.addEventListener("change", suggest);
  const form = h("form", {
    "aria-labelledby": "dialog-title",
    onsubmit: async (e) => {
      e.preventDefault();
      dialog.close();
      const disk = what.value.startsWith("disk:") ? what.value.slice(5) : null;
      const target = path.value.trim();
      const op = await runOp(disk
        ? api.post(`/1.0/instances/${api.enc(name)}/disks/${api.enc(disk)}/export`, { path: target, format: format() })
        : api.post(`/1.0/instances/${api.enc(name)}/export-ova`, { path: target }));
      if (op && op.status === "success") onDone(`Exported ${disk ? `disk ${disk} of ${name} as ${op.result.format}` : `${name} as an OVA package`} to ${op.result.path}.`);
    },
  },
  h("h2", { id: "dialog-title" }, `Export ${name}`),
  field("export-what", "What", what), formatField,
  field("export-path", "New file on the host", path, EXPORT_HINT),
  h("div.actions", {}, h("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
    h("button.primary", { type: "submit" }, "Export")));
  suggest();
  clear(dialog, form);
  dialog.onclose = null;
  trapFocus(dialog);
  dialog.showModal();
  what.focus();
}
