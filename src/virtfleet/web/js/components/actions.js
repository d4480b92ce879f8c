// Power actions on instances (start, stop, force stop, reboot, pause, resume, delete):
// which apply in which state, confirmation for destructive ones, tracking as tasks.
import * as api from "../api.js";
import { errorText, h } from "../dom.js";
import { confirmChoice } from "./confirm.js";
import { failureText, track } from "./tasks.js";

// action -> [label, allowed power states, destructive?]
export const ACTIONS = {
  start: ["Start", ["stopped", "crashed"], false],
  stop: ["Stop", ["running", "paused", "starting"], false],
  "force-stop": ["Force stop", ["running", "paused", "starting", "stopping"], true],
  reboot: ["Reboot", ["running"], false],
  pause: ["Pause", ["running"], false],
  resume: ["Resume", ["paused"], false],
  delete: ["Delete", null, true],
};

export function allowed(action, power) {
  const states = ACTIONS[action][1];
  return states === null || states.includes(power);
}

// Submit ``action`` on ``name`` (no confirmation here); resolves to the finished operation.
// ``disks``: a delete also removes the disks (else they are kept, listed on the Host page).
export async function perform(name, action, disks = true) {
  let op;
  if (action === "delete") op = await api.deleteInstance(name, { disks });
  else if (action === "force-stop") op = await api.changeState(name, "stop", true);
  else if (action === "reboot") op = await api.changeState(name, "restart");
  else op = await api.changeState(name, action);
  return track(op);
}

// null when the user cancels, else {option}: for a delete, whether the disks go too.
export async function confirmed(action, names) {
  if (!ACTIONS[action][2]) return { option: true };
  const what = names.length === 1 ? `instance ${names[0]}` : `${names.length} instances (${names.join(", ")})`;
  const body = action === "delete"
    ? `Delete ${what}? It is stopped if running. This cannot be undone.`
    : `Force stop ${what}? This pulls the plug: unsaved data in the guest is lost.`;
  const option = action === "delete"
    ? { label: "Also delete its disks (untick to keep them: the Host page lists kept disks)", checked: true } : null;
  return confirmChoice({ title: `${ACTIONS[action][0]}?`, body, confirm: ACTIONS[action][0], option });
}

// Confirm if needed, run, and report failures into ``status`` (an element); true on success.
export async function run(names, action, status) {
  const answer = await confirmed(action, names);
  if (!answer) return false;
  status.textContent = "";
  const results = await Promise.all(names.map(async (name) => {
    try {
      const op = await perform(name, action, answer.option);
      return op.status === "success" ? null : `${name}: ${failureText(op)}`;
    } catch (err) {
      return `${name}: ${errorText(err)}`;
    }
  }));
  const failures = results.filter(Boolean);
  status.textContent = failures.join("\n");
  status.hidden = failures.length === 0;
  return failures.length === 0;
}

export function actionButton(action, onclick, disabled = false) {
  const [label, , destructive] = ACTIONS[action];
  return h(destructive ? "button.danger" : "button", {
    type: "button", onclick, disabled, dataset: { action },
  }, label);
}
