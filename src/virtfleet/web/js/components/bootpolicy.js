// An instance's start-at-boot policy (autostart, start order, start delay; for VMs also
// what a host shutdown does): shown to everyone, changed by operators through
// PATCH /1.0/instances/{name} with only the fields that differ, like `vm set --autostart`.
import * as api from "../api.js";
import { errorText, h } from "../dom.js";
import { canOperate } from "../state.js";
import { failureText, track } from "./tasks.js";

// ``onChanged(message)`` reloads the instance and draws its tab again with ``message``.
export function bootPolicyPanel(instance, onChanged, message = "") {
  const spec = instance.spec;
  const facts = h("dl.facts", { id: "boot-policy" },
    h("dt", {}, "Start at boot"), h("dd", {}, spec.autostart ? "yes" : "no"),
    h("dt", {}, "Start order"), h("dd", {}, String(spec.start_order)),
    h("dt", {}, "Start delay"), h("dd", {}, `${spec.start_delay_s} s`),
    spec.kind === "vm" ? [h("dt", {}, "At host shutdown"), h("dd", {}, spec.host_shutdown)] : null);
  return h("section.boot-policy", { "aria-labelledby": "boot-policy-title" },
    h("h3", { id: "boot-policy-title" }, "Start at boot and host shutdown"), facts,
    canOperate() ? policyForm(instance, onChanged, message) : null);
}

function policyForm(instance, onChanged, message) {
  const spec = instance.spec;
  const autostart = h("input", { type: "checkbox", id: "policy-autostart", checked: spec.autostart });
  const order = h("input", { type: "number", id: "policy-order", min: 0, max: 10000, required: true, value: String(spec.start_order) });
  const delay = h("input", { type: "number", id: "policy-delay", min: 0, max: 3600, step: "any", required: true, value: String(spec.start_delay_s) });
  const shutdown = h("select", { id: "policy-shutdown" },
    ["stop", "suspend"].map((v) => h("option", { value: v, selected: v === spec.host_shutdown }, v === "stop" ? "Stop (ACPI, then forced)" : "Suspend (memory saved, resumed at the next boot)")));
  const status = h("p.notice", { role: "status", hidden: !message, id: "policy-status" }, message);
  const apply = h("button.primary", { type: "submit", id: "policy-apply" }, "Save boot policy");
  const form = h("form.inline-form", { id: "policy-form", "aria-label": "Change the boot policy" },
    h("label.check", { for: "policy-autostart" }, autostart, "Start when the host boots"),
    h("label.field", { for: "policy-order" }, "Start order (lowest first)", order),
    h("label.field", { for: "policy-delay" }, "Start delay (s)", delay),
    spec.kind === "vm" ? h("label.field", { for: "policy-shutdown" }, "At host shutdown", shutdown) : null,
    apply, status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const wanted = { autostart: autostart.checked, start_order: Number(order.value), start_delay_s: Number(delay.value) };
    if (spec.kind === "vm") wanted.host_shutdown = shutdown.value;
    const body = Object.fromEntries(Object.entries(wanted).filter(([k, v]) => v !== spec[k]));
    if (!Object.keys(body).length) return say(status, "Nothing to change.");
    apply.disabled = true;
    try {
      const op = await track(await api.request("PATCH", `/1.0/instances/${api.enc(instance.name)}`, body));
      if (op.status === "success") await onChanged("Boot policy saved.");
      else say(status, failureText(op));
    } catch (err) {
      say(status, errorText(err));
    } finally {
      apply.disabled = false;
    }
  });
  return form;
}

function say(status, text) {
  status.textContent = text;
  status.hidden = false;
}
