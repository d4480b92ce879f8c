// A modal confirmation dialog (<dialog>): resolves true only on the explicit confirm button.
import { clear, h } from "../dom.js";

export function confirmDialog({ title, body, confirm = "Confirm", danger = true }) {
  const dialog = document.getElementById("dialog");
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.close();
      resolve(answer);
    };
    const cancel = h("button", { type: "button", onclick: () => done(false) }, "Cancel");
    const ok = h(danger ? "button.danger" : "button.primary", { type: "button", onclick: () => done(true) }, confirm);
    dialog.onclose = () => resolve(false);
    dialog.setAttribute("aria-labelledby", "dialog-title");
    clear(dialog,
      h("h2", { id: "dialog-title" }, title),
      h("p", {}, body),
      h("div.actions", {}, cancel, ok));
    dialog.showModal();
    cancel.focus(); // the safe choice has the focus
  });
}
