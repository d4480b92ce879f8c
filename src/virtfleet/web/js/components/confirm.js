// A modal confirmation dialog (<dialog>): resolves true only on the explicit confirm button
// (confirmChoice: with one checkbox, e.g. "also delete its disks").
import { clear, h } from "../dom.js";

export async function confirmDialog({ title, body, confirm = "Confirm", danger = true }) {
  return (await confirmChoice({ title, body, confirm, danger })) !== null;
}

// Like confirmDialog with one checkbox (``option``: {label, checked}): resolves null when
// cancelled, else {option: whether the box was ticked}.
export function confirmChoice({ title, body, confirm = "Confirm", danger = true, option = null }) {
  const dialog = document.getElementById("dialog");
  return new Promise((resolve) => {
    const box = option ? h("input", { type: "checkbox", id: "confirm-option", checked: Boolean(option.checked) }) : null;
    const done = (answer) => {
      dialog.onclose = null;
      dialog.close();
      resolve(answer ? { option: box ? box.checked : false } : null);
    };
    const cancel = h("button", { type: "button", onclick: () => done(false) }, "Cancel");
    const ok = h(danger ? "button.danger" : "button.primary", { type: "button", onclick: () => done(true) }, confirm);
    dialog.onclose = () => resolve(null);
    dialog.setAttribute("aria-labelledby", "dialog-title");
    clear(dialog,
      h("h2", { id: "dialog-title" }, title),
      h("p", {}, body),
      box ? h("label.check", { for: "confirm-option" }, box, option.label) : null,
      h("div.actions", {}, cancel, ok));
    trapFocus(dialog);
    dialog.showModal();
    cancel.focus(); // the safe choice has the focus
  });
}

// Keep keyboard focus inside a modal dialog: Tab past the last control wraps to the first
// (and Shift+Tab back), and focus returns to what opened the dialog when it closes.
export function trapFocus(dialog) {
  const opener = document.activeElement;
  dialog.onkeydown = (event) => {
    if (event.key !== "Tab") return;
    const focusable = [...dialog.querySelectorAll("button, input, select, textarea, a[href], [tabindex='0']")]
      .filter((el) => !el.disabled && !el.closest("[hidden]"));
    if (!focusable.length) return;
    const [first, last] = [focusable[0], focusable[focusable.length - 1]];
    if (event.shiftKey && document.activeElement === first) {
      last.focus();
      event.preventDefault();
    } else if (!event.shiftKey && document.activeElement === last) {
      first.focus();
      event.preventDefault();
    }
  };
  dialog.addEventListener("close", () => { if (opener && opener.focus) opener.focus(); }, { once: true });
}
