// Small DOM helpers shared by every page: element building, formatting, the mode badge.

// h("button.primary", {onclick, type: "button"}, "Start") -> <button class="primary">
export function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const DASH = "—";

export function mib(value) {
  if (value === undefined || value === null) return DASH;
  if (value >= 1024 * 1024) return `${(value / 1024 / 1024).toFixed(1)} TiB`;
  if (value >= 1024) return `${(value / 1024).toFixed(value % 1024 ? 1 : 0)} GiB`;
  return `${value} MiB`;
}

export function bytes(value) {
  if (!value) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i += 1;
  }
  return `${value.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function when(iso) {
  if (!iso) return DASH;
  const date = new Date(iso);
  return date.toLocaleString();
}

// The virtualization mode of an instance: KVM (hardware-assisted), TCG (binary
// translation) or container (OS-level), always shown with a label and a tooltip.
const MODES = {
  kvm: ["KVM", "hardware-assisted virtualization (KVM)"],
  tcg: ["TCG", "full virtualization by binary translation (QEMU TCG)"],
  container: ["Container", "OS-level virtualization (shared kernel)"],
};

export function modeOf(instance) {
  if (instance.spec && instance.spec.kind === "container") return "container";
  return instance.mode || "tcg";
}

export function modeBadge(mode) {
  const [label, title] = MODES[mode] || [mode.toUpperCase(), mode];
  return h(`span.badge.mode.mode-${mode}`, { title, "data-mode": mode }, label);
}

export function powerBadge(power) {
  return h(`span.badge.power.power-${power}`, { "data-power": power }, power);
}

export function devicesLabel(model) {
  return model === "emulated" ? "emulated (e1000, IDE)" : "virtio (paravirtualized)";
}

// A visible, announced message (role=alert for errors).
export function notice(text, kind = "error") {
  return h(`p.notice.notice-${kind}`, { role: kind === "error" ? "alert" : "status" }, text);
}

export function errorText(err) {
  if (err && err.code) return `${err.message} [${err.code}]`;
  return String((err && err.message) || err);
}
