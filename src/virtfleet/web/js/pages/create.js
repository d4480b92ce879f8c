// The create wizard (a modal dialog in three steps): image and name, hardware, review.
import * as api from "../api.js";
import { clear, devicesLabel, errorText, h } from "../dom.js";
import { failureText, track } from "../components/tasks.js";

const NAME_PATTERN = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";

function field(id, label, input, hint) {
  input.id = id;
  return h("div.field", {},
    h("label", { for: id }, label), input, hint ? h("small.hint", { id: `${id}-hint` }, hint) : null);
}

function radios(name, legend, options, checked) {
  return h("fieldset.radios", {}, h("legend", {}, legend),
    options.map(([value, label]) => h("label.radio", {},
      h("input", { type: "radio", name, value, checked: value === checked, id: `${name}-${value}` }), label)));
}

export async function openCreateWizard() {
  const dialog = document.getElementById("dialog");
  const error = h("p.notice.notice-error", { role: "alert", hidden: true });
  const image = h("select", { name: "image", required: true });
  const name = h("input", { name: "name", required: true, pattern: NAME_PATTERN, maxlength: 63, autocomplete: "off", "aria-describedby": "wiz-name-hint" });
  const vcpus = h("input", { name: "vcpus", type: "number", min: 1, max: 255, value: "1", required: true });
  const memory = h("input", { name: "memory_mib", type: "number", min: 64, step: 64, value: "256", required: true });
  const start = h("input", { type: "checkbox", name: "start", id: "wiz-start", checked: true });
  const review = h("dl.review");

  const steps = [
    h("fieldset.step", {}, h("legend", {}, "1. Image and name"),
      field("wiz-image", "Image", image),
      field("wiz-name", "Name", name, "Lower-case letters, digits and dashes, e.g. web-1.")),
    h("fieldset.step", {}, h("legend", {}, "2. Hardware"),
      field("wiz-vcpus", "vCPUs", vcpus),
      field("wiz-memory", "Memory (MiB)", memory),
      radios("device_model", "Device model", [["virtio", "virtio (paravirtualized)"], ["emulated", "emulated (e1000 NIC, IDE disk) for legacy guests"]], "virtio"),
      radios("accel", "Acceleration", [["auto", "auto (KVM if usable, else TCG)"], ["kvm", "KVM (hardware-assisted)"], ["tcg", "TCG (binary translation)"]], "auto"),
      radios("nic", "Network", [["none", "none"], ["user", "user-mode NIC (outbound only)"]], "none")),
    h("fieldset.step", {}, h("legend", {}, "3. Review"), review,
      h("label.check", { for: "wiz-start" }, start, "Start after create")),
  ];
  const back = h("button", { type: "button", onclick: () => show(step - 1) }, "Back");
  const next = h("button.primary", { type: "submit", id: "wiz-next" }, "Next");
  const cancel = h("button", { type: "button", onclick: () => dialog.close() }, "Cancel");
  const form = h("form.wizard", { novalidate: false, "aria-labelledby": "dialog-title" },
    h("h2", { id: "dialog-title" }, "Create instance"),
    h("p.muted", { role: "status", id: "wiz-progress" }),
    steps, error, h("div.actions", {}, cancel, back, next));
  let step = 0;

  function spec() {
    const data = new FormData(form);
    return {
      name: name.value.trim(),
      image: image.value,
      vcpus: Number(vcpus.value),
      memory_mib: Number(memory.value),
      device_model: data.get("device_model"),
      accel: data.get("accel"),
      nics: data.get("nic") === "user" ? [{ mode: "user" }] : [],
      start: start.checked,
    };
  }

  function show(n) {
    step = Math.max(0, Math.min(n, steps.length - 1));
    steps.forEach((s, i) => { s.hidden = i !== step; });
    back.disabled = step === 0;
    next.textContent = step === steps.length - 1 ? "Create" : "Next";
    form.querySelector("#wiz-progress").textContent = `Step ${step + 1} of ${steps.length}`;
    if (step === steps.length - 1) {
      const s = spec();
      clear(review, [["Name", s.name], ["Image", s.image], ["vCPUs", s.vcpus], ["Memory", `${s.memory_mib} MiB`],
        ["Devices", devicesLabel(s.device_model)], ["Acceleration", s.accel], ["Network", s.nics.length ? "user-mode NIC" : "none"]]
        .map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
    }
    const first = steps[step].querySelector("input, select");
    if (first) first.focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const invalid = [...steps[step].querySelectorAll("input, select")].find((el) => !el.checkValidity());
    if (invalid) {
      invalid.reportValidity();
      return;
    }
    if (step < steps.length - 1) return show(step + 1);
    next.disabled = true;
    error.hidden = true;
    try {
      const op = await api.createInstance(spec());
      const created = spec().name;
      dialog.close();
      location.hash = `#/instances/${created}`;
      const done = await track(op);
      if (done.status !== "success") console.warn(`creating ${created} failed: ${failureText(done)}`);
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    } finally {
      next.disabled = false;
    }
  });

  clear(dialog, form);
  dialog.onclose = null;
  dialog.showModal();
  show(0);
  try {
    const images = await api.listImages();
    clear(image, images.length ? images.map((i) => h("option", { value: i.name }, i.name))
      : h("option", { value: "" }, "No images: build one with `virtfleet image build tiny`"));
  } catch (err) {
    error.textContent = errorText(err);
    error.hidden = false;
  }
}
