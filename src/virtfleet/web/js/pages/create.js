// The create wizard (a modal dialog in steps): what to make (VM from an image, N VMs from a
// template as linked or full clones, a container from a container or OCI image), hardware,
// network, guest agent and start at boot, cloud-init (VMs) or the container's mode, env and
// command, and a review showing the exact API request.
import * as api from "../api.js";
import { clear, errorText, h } from "../dom.js";
import { failureText, track } from "../components/tasks.js";
import { trapFocus } from "../components/confirm.js";

const NAME_PATTERN = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
const CONTAINER_FORMATS = ["rootfs-tar", "oci"]; // rootfs tarballs and imported OCI images
const KINDS = [
  ["image", "Virtual machine from an image"],
  ["template", "Virtual machines from a template (bulk deploy)"],
  ["container", "Container from a container image"],
];

function field(id, label, input, hint) {
  input.id = id;
  if (hint) input.setAttribute("aria-describedby", `${id}-hint`);
  return h("div.field", { id: `${id}-field` },
    h("label", { for: id }, label), input, hint ? h("small.hint", { id: `${id}-hint` }, hint) : null);
}

function radios(name, legend, options, checked) {
  return h("fieldset.radios", {}, h("legend", {}, legend),
    options.map(([value, label]) => h("label.radio", {},
      h("input", { type: "radio", name, value, checked: value === checked, id: `${name}-${value}` }), label)));
}

const words = (text) => text.split(/[\s,]+/).filter(Boolean);
const lines = (text) => text.split("\n").map((l) => l.trim()).filter(Boolean);
const argv = (text) => text.trim().split(/\s+/).filter(Boolean);

// Start-at-boot policy: sent only when it differs from the API's defaults (off, 0, 0 s).
function bootPolicy(v) {
  const body = {};
  if (v.autostart) body.autostart = true;
  if (v.startOrder) body.start_order = v.startOrder;
  if (v.startDelay) body.start_delay_s = v.startDelay;
  return body;
}

// A container's process: mode (empty = the image's default), added env, replaced command.
function containerRun(v) {
  const body = {};
  if (v.containerMode) body.container_mode = v.containerMode;
  if (lines(v.env).length) body.env = lines(v.env);
  if (argv(v.cmd).length) body.cmd = argv(v.cmd);
  return body;
}

// The request the wizard sends for form values `v`: {method, path, body}.
// Advanced hardware: sent only when set (restart policy other than "no", ceilings, floor,
// firmware, TPM, guest OS; unset, the template's or the daemon's defaults apply).
function advanced(v) {
  const body = {};
  if (v.restartPolicy && v.restartPolicy !== "no") body.restart_policy = v.restartPolicy;
  if (v.kind === "container") return body;
  if (v.maxVcpus) body.max_vcpus = v.maxVcpus;
  if (v.maxMemory) body.max_memory_mib = v.maxMemory;
  if (v.minMemory) body.min_memory_mib = v.minMemory;
  if (v.firmware) body.firmware = v.firmware;
  if (v.tpm) body.tpm = true;
  if (v.os) body.os = v.os;
  return body;
}

export function buildRequest(v) {
  const nics = v.nic === "user" ? [{ mode: "user" }]
    : v.nic.startsWith("net:") ? [{ mode: "network", network: v.nic.slice(4) }] : [];
  if (v.kind !== "container" && v.nicModel) for (const nic of nics) nic.model = v.nicModel;
  const cloudInit = {};
  if (v.kind !== "container") {
    if (v.hostname) cloudInit.hostname = v.hostname;
    if (words(v.users).length) cloudInit.users = words(v.users);
    if (lines(v.sshKeys).length) cloudInit.ssh_authorized_keys = lines(v.sshKeys);
    if (words(v.packages).length) cloudInit.packages = words(v.packages);
    if (v.userData.trim()) cloudInit.user_data = v.userData;
  }
  const body = {};
  if (v.kind === "template") {
    body.names = words(v.name);
    if (v.count > 1) body.count = v.count;
    body.clone = v.clone;
    if (v.vcpus) body.vcpus = v.vcpus;
    if (v.memory) body.memory_mib = v.memory;
  } else {
    Object.assign(body, { name: v.name.trim(), kind: v.kind === "container" ? "container" : "vm", image: v.source });
    body.vcpus = v.vcpus || 1;
    body.memory_mib = v.memory || 256;
  }
  Object.assign(body, advanced(v));
  if (v.kind !== "container") {
    body.device_model = v.deviceModel;
    body.accel = v.accel;
    body.guest_agent = v.guestAgent;
  } else {
    Object.assign(body, containerRun(v));
  }
  if (v.kind !== "template") Object.assign(body, bootPolicy(v)); // clones take no boot policy
  if (v.kind !== "template" && v.reuse) body.reuse_disks = true;
  body.nics = nics;
  if (Object.keys(cloudInit).length) body.cloud_init = cloudInit;
  body.start = v.start;
  const path = v.kind === "template" ? `/1.0/templates/${api.enc(v.source)}/instances` : "/1.0/instances";
  return { method: "POST", path, body };
}

export async function openCreateWizard(preset = {}) {
  const dialog = document.getElementById("dialog");
  const error = h("p.notice.notice-error", { role: "alert", hidden: true });
  const source = h("select", { name: "source", required: true });
  const name = h("input", { name: "name", required: true, autocomplete: "off", value: preset.name || "" });
  const reuse = h("input", { type: "checkbox", name: "reuse_disks", id: "wiz-reuse", checked: Boolean(preset.reuse) });
  const reuseField = h("label.check", { for: "wiz-reuse", id: "wiz-reuse-field" }, reuse,
    "Attach the disks kept from a deleted instance of this name");
  const count = h("input", { name: "count", type: "number", min: 1, max: 100, value: "1" });
  const vcpus = h("input", { name: "vcpus", type: "number", min: 1, max: 255, value: "1" });
  const memory = h("input", { name: "memory_mib", type: "number", min: 64, step: 64, value: "256" });
  const restartPolicy = h("select", { name: "restart_policy" }, [["no", "Never restart it"],
    ["on-failure", "Restart it when it crashes"], ["always", "Restart it whenever it stops by itself"]]
    .map(([value, label]) => h("option", { value }, label)));
  const maxVcpus = h("input", { name: "max_vcpus", type: "number", min: 1, max: 255, placeholder: "same as the vCPUs" });
  const maxMemory = h("input", { name: "max_memory_mib", type: "number", min: 64, step: 64, placeholder: "same as the memory" });
  const minMemory = h("input", { name: "min_memory_mib", type: "number", min: 64, step: 64, placeholder: "no floor" });
  const firmware = h("select", { name: "firmware" }, [["", "Default (BIOS, or the template's)"],
    ["bios", "BIOS (SeaBIOS)"], ["uefi", "UEFI (OVMF)"], ["uefi-secure", "UEFI with Secure Boot"]]
    .map(([value, label]) => h("option", { value }, label)));
  const guestOs = h("select", { name: "os" }, [["", "Default (Linux, or the template's)"],
    ["linux", "Linux"], ["windows", "Windows (UEFI Secure Boot and a TPM by default)"], ["other", "Other"]]
    .map(([value, label]) => h("option", { value }, label)));
  const tpm = h("input", { type: "checkbox", name: "tpm", id: "wiz-tpm" });
  const nicModel = h("select", { name: "nic_model" }, [["", "Default (virtio, or e1000 for emulated devices)"],
    ["virtio", "virtio-net"], ["e1000", "e1000 (Intel)"], ["vmxnet3", "vmxnet3 (VMware)"], ["rtl8139", "rtl8139 (Realtek)"]]
    .map(([value, label]) => h("option", { value }, label)));
  const nic = h("select", { name: "nic" }, h("option", { value: "none" }, "No network"),
    h("option", { value: "user" }, "User-mode NIC (outbound only)"));
  const agent = h("input", { type: "checkbox", name: "guest_agent", id: "wiz-agent" });
  const hostname = h("input", { name: "hostname", autocomplete: "off" });
  const users = h("input", { name: "users", autocomplete: "off" });
  const sshKeys = h("textarea", { name: "ssh_keys", rows: 2 });
  const packages = h("input", { name: "packages", autocomplete: "off" });
  const userData = h("textarea", { name: "user_data", rows: 3 });
  const containerMode = h("select", { name: "container_mode" }, h("option", { value: "" }, "The image's default"),
    h("option", { value: "app" }, "Application (the image's entrypoint and command)"),
    h("option", { value: "system" }, "System (the image's own init)"));
  const env = h("textarea", { name: "env", rows: 3, spellcheck: "false" });
  const cmd = h("input", { name: "cmd", autocomplete: "off", spellcheck: "false" });
  const autostart = h("input", { type: "checkbox", name: "autostart", id: "wiz-autostart" });
  const startOrder = h("input", { name: "start_order", type: "number", min: 0, max: 10000, value: "0" });
  const startDelay = h("input", { name: "start_delay_s", type: "number", min: 0, max: 3600, step: "any", value: "0" });
  const start = h("input", { type: "checkbox", name: "start", id: "wiz-start", checked: true });
  const request = h("pre.request", { id: "wiz-request", tabindex: "0", "aria-label": "API request" });
  const vmOnly = [];
  const vm = (el) => { vmOnly.push(el); return el; };
  const containerOnly = [];
  const ct = (el) => { containerOnly.push(el); return el; };
  const boot = h("fieldset.radios", { id: "wiz-boot" }, h("legend", {}, "Start at boot"),
    h("label.check", { for: "wiz-autostart" }, autostart, "Start when the host boots"),
    field("wiz-start-order", "Start order", startOrder, "Lower groups start first."),
    field("wiz-start-delay", "Start delay (s)", startDelay, "Wait after this group started."));

  const steps = [
    h("fieldset.step", {}, h("legend", {}, "1. What to create"),
      radios("kind", "Kind", KINDS, preset.kind || "image"),
      field("wiz-source", "Source", source),
      field("wiz-name", "Name", name, "Lower-case letters, digits and dashes, e.g. web-1."),
      field("wiz-count", "Count", count, "With one base name, N clones are named base-1 … base-N."),
      reuseField,
      radios("clone", "Clone type", [["linked", "Linked clones (qcow2 overlays, fast)"], ["full", "Full clones (independent copies)"]], "linked")),
    h("fieldset.step", {}, h("legend", {}, "2. Hardware"),
      field("wiz-vcpus", "vCPUs", vcpus),
      field("wiz-memory", "Memory (MiB)", memory),
      vm(radios("device_model", "Device model", [["virtio", "virtio (paravirtualized)"], ["emulated", "emulated (e1000 NIC, IDE disk) for legacy guests"]], "virtio")),
      vm(radios("accel", "Acceleration", [["auto", "auto (KVM if usable, else TCG)"], ["kvm", "KVM (hardware-assisted)"], ["tcg", "TCG (binary translation)"]], "auto")),
      field("wiz-restart", "Restart policy", restartPolicy),
      vm(field("wiz-firmware", "Firmware", firmware, "UEFI-only images and Windows 11 need UEFI.")),
      vm(field("wiz-os", "Guest OS", guestOs)),
      vm(h("label.check", { for: "wiz-tpm" }, tpm, "Virtual TPM 2.0 (swtpm; needs UEFI)")),
      vm(h("details.advanced", {}, h("summary", {}, "Hot-plug ceilings and balloon floor"),
        field("wiz-max-vcpus", "CPU hot-plug ceiling", maxVcpus, "CPUs it can grow to while running (maxcpus)."),
        field("wiz-max-memory", "Boot RAM ceiling, MiB", maxMemory, "The memory it boots with; the balloon gives it less."),
        field("wiz-min-memory", "Balloon floor, MiB", minMemory, "The balloon never takes it below this.")))),
    h("fieldset.step", {}, h("legend", {}, "3. Network and guest agent"),
      field("wiz-nic", "Network", nic),
      vm(field("wiz-nic-model", "NIC model", nicModel)),
      vm(h("label.check", { for: "wiz-agent" }, agent, "QEMU guest agent channel")),
      boot),
    h("fieldset.step", {}, h("legend", { id: "wiz-step4" }, "4. Cloud-init (optional)"),
      ct(field("wiz-container-mode", "Container mode", containerMode, "Application runs one process under a small init; system boots the image's init.")),
      ct(field("wiz-env", "Environment", env, "One KEY=VALUE per line, added to the image's.")),
      ct(field("wiz-cmd", "Command", cmd, "Space-separated words replacing the image's command; empty keeps it.")),
      vm(field("wiz-hostname", "Hostname", hostname)),
      vm(field("wiz-users", "Users", users, "Space-separated user names.")),
      vm(field("wiz-ssh", "SSH authorized keys", sshKeys, "One key per line.")),
      vm(field("wiz-packages", "Packages", packages, "Space-separated package names.")),
      vm(field("wiz-userdata", "User-data", userData, "Extra #cloud-config merged in."))),
    h("fieldset.step", {}, h("legend", {}, "5. Review"),
      h("p", {}, "The wizard will send exactly this request:"), request,
      h("label.check", { for: "wiz-start" }, start, "Start after create")),
  ];
  const back = h("button", { type: "button", onclick: () => show(step - 1) }, "Back");
  const next = h("button.primary", { type: "submit", id: "wiz-next" }, "Next");
  const cancel = h("button", { type: "button", onclick: () => dialog.close() }, "Cancel");
  const form = h("form.wizard", { "aria-labelledby": "dialog-title" },
    h("h2", { id: "dialog-title" }, "Create instance"),
    h("p.muted", { role: "status", id: "wiz-progress" }),
    steps, error, h("div.actions", {}, cancel, back, next));
  let step = 0;
  let images = [];
  let templates = [];

  const kind = () => new FormData(form).get("kind");

  function values() {
    const data = new FormData(form);
    return {
      kind: kind(), source: source.value, name: name.value, count: Number(count.value) || 1,
      clone: data.get("clone"), vcpus: Number(vcpus.value) || 0, memory: Number(memory.value) || 0,
      deviceModel: data.get("device_model"), accel: data.get("accel"), nic: nic.value,
      guestAgent: agent.checked, hostname: hostname.value.trim(), users: users.value,
      sshKeys: sshKeys.value, packages: packages.value, userData: userData.value, start: start.checked,
      containerMode: containerMode.value, env: env.value, cmd: cmd.value, autostart: autostart.checked,
      startOrder: Number(startOrder.value) || 0, startDelay: Number(startDelay.value) || 0,
      reuse: reuse.checked, restartPolicy: restartPolicy.value, maxVcpus: Number(maxVcpus.value) || 0,
      maxMemory: Number(maxMemory.value) || 0, minMemory: Number(minMemory.value) || 0, nicModel: nicModel.value,
      firmware: firmware.value, os: guestOs.value, tpm: tpm.checked,
    };
  }

  function fitKind() {
    const k = kind();
    const options = k === "template" ? templates.map((t) => t.name)
      : images.filter((i) => CONTAINER_FORMATS.includes(i.format) === (k === "container")).map((i) => i.name);
    const keep = preset.source && options.includes(preset.source) ? preset.source : source.value;
    clear(source, options.length ? options.map((n) => h("option", { value: n, selected: n === keep }, n))
      : h("option", { value: "" }, k === "template" ? "No templates: make one on the Templates page" : "No matching images"));
    const bulk = k === "template";
    form.querySelector("#wiz-count-field").hidden = !bulk;
    reuseField.hidden = bulk;
    form.querySelector("#fieldset-clone").hidden = !bulk;
    form.querySelector('label[for="wiz-name"]').textContent = bulk ? "Names or pattern" : "Name";
    form.querySelector("#wiz-name-hint").textContent = bulk
      ? "e.g. web-{1..3}, or one base name with a count." : "Lower-case letters, digits and dashes, e.g. web-1.";
    name.pattern = bulk ? "[a-z0-9{}.\\- ]+" : NAME_PATTERN;
    vcpus.required = memory.required = !bulk;
    vcpus.placeholder = memory.placeholder = bulk ? "template default" : "";
    if (bulk && vcpus.value === "1" && memory.value === "256") vcpus.value = memory.value = "";
    if (!bulk && !vcpus.value) { vcpus.value = "1"; memory.value = "256"; }
    for (const el of vmOnly) el.hidden = k === "container";
    for (const el of containerOnly) el.hidden = k !== "container";
    boot.hidden = bulk;
    form.querySelector("#wiz-step4").textContent = k === "container" ? "4. Container process (optional)" : "4. Cloud-init (optional)";
  }

  function show(n) {
    step = Math.max(0, Math.min(n, steps.length - 1));
    steps.forEach((s, i) => { s.hidden = i !== step; });
    back.disabled = step === 0;
    next.textContent = step === steps.length - 1 ? "Create" : "Next";
    form.querySelector("#wiz-progress").textContent = `Step ${step + 1} of ${steps.length}`;
    if (step === steps.length - 1) renderRequest();
    const first = [...steps[step].querySelectorAll("input, select, textarea")].find((el) => !el.closest("[hidden]"));
    if (first) first.focus();
  }

  function renderRequest() {
    const r = buildRequest(values());
    request.textContent = `${r.method} ${r.path}\n${JSON.stringify(r.body, null, 2)}`;
  }

  form.addEventListener("change", (event) => {
    if (event.target.name === "kind") fitKind();
    if (event.target === start) renderRequest();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const invalid = [...steps[step].querySelectorAll("input, select, textarea")]
      .find((el) => !el.closest("[hidden]") && !el.checkValidity());
    if (invalid) {
      invalid.reportValidity();
      return;
    }
    if (step < steps.length - 1) return show(step + 1);
    await submit(buildRequest(values()));
  });

  async function submit(r) {
    next.disabled = true;
    error.hidden = true;
    try {
      const op = await api.request(r.method, r.path, r.body);
      dialog.close();
      location.hash = r.body.name ? `#/instances/${r.body.name}` : "#/instances";
      const done = await track(op);
      if (done.status !== "success") console.warn(`create failed: ${failureText(done)}`);
    } catch (err) {
      error.textContent = err.code === "kept_disks"
        ? `${errorText(err)}\nIn the web UI: tick "Attach the disks kept…" in step 1, or delete them on the Host page.`
        : errorText(err);
      error.hidden = false;
    } finally {
      next.disabled = false;
    }
  }

  form.querySelector('input[name="clone"]').closest("fieldset").id = "fieldset-clone";
  clear(dialog, form);
  dialog.onclose = null;
  trapFocus(dialog);
  dialog.showModal();
  try {
    const [imgs, tpls, nets] = await Promise.all([api.listImages(), api.get("/1.0/templates"), api.listNetworks()]);
    images = imgs.filter((i) => i.kind !== "template");
    templates = tpls;
    nic.append(...nets.map((n) => h("option", { value: `net:${n.name}` }, `Network ${n.name}`)));
  } catch (err) {
    error.textContent = errorText(err);
    error.hidden = false;
  }
  fitKind();
  show(0);
}
