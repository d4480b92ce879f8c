// Entry point: checks the session, then routes #/... hashes to pages.
import * as api from "./api.js";
import { clear, errorText, h, notice } from "./dom.js";
import { session, setSession } from "./state.js";
import { startTasks, stopTasks } from "./components/tasks.js";
import { renderLogin } from "./pages/login.js";
import { renderDashboard } from "./pages/dashboard.js";
import { renderInstances } from "./pages/instances.js";
import { renderInstance } from "./pages/instance.js";
import { renderNetworks } from "./pages/networks.js";
import { renderImages } from "./pages/images.js";
import { renderTemplates } from "./pages/templates.js";
import { renderBackups } from "./pages/backups.js";
import { renderAlerts } from "./pages/alerts.js";
import { renderUsers } from "./pages/admin.js";
import { renderAudit, renderEvents } from "./pages/activity.js";
import { startAlertBadge, stopAlertBadge } from "./components/alertbadge.js";

const main = document.getElementById("main");
let leave = null; // the current page's clean-up (closes websockets, timers)

const ROUTES = [
  [/^#?\/?$/, "dashboard", () => renderDashboard(main)],
  [/^#\/instances$/, "instances", () => renderInstances(main)],
  [/^#\/instances\/([a-z0-9-]+)(?:\/([a-z]+))?$/, "instances", (m) => renderInstance(main, m[1], m[2])],
  [/^#\/networks$/, "networks", () => renderNetworks(main)],
  [/^#\/images$/, "images", () => renderImages(main)],
  [/^#\/templates$/, "templates", () => renderTemplates(main)],
  [/^#\/backups$/, "backups", () => renderBackups(main)],
  [/^#\/alerts$/, "alerts", () => renderAlerts(main)],
  [/^#\/admin(?:\/users)?$/, "admin", () => renderUsers(main)],
  [/^#\/admin\/audit$/, "admin", () => renderAudit(main)],
  [/^#\/admin\/events$/, "admin", () => renderEvents(main)],
];

async function route() {
  if (leave) leave();
  leave = null;
  if (!session.username) return;
  const hash = location.hash || "#/";
  for (const [pattern, nav, render] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    markNav(nav);
    try {
      leave = (await render(match)) || null;
    } catch (err) {
      clear(main, notice(errorText(err)));
    }
    return;
  }
  clear(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the dashboard")));
}

function markNav(active) {
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function enter(principal) {
  setSession(principal);
  document.body.dataset.role = principal.role;
  document.getElementById("topbar").hidden = false;
  document.getElementById("who").textContent = `${principal.username} (${principal.role})`;
  startTasks(document.getElementById("tasks"));
  startAlertBadge(document.getElementById("alert-badge"));
  await route();
}

async function showLogin() {
  if (leave) leave();
  leave = null;
  setSession({ username: "", role: "viewer" });
  stopTasks();
  stopAlertBadge();
  document.getElementById("topbar").hidden = true;
  renderLogin(main, enter);
}

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api.logout();
  } finally {
    await showLogin();
  }
});

window.addEventListener("hashchange", route);
window.addEventListener("vf:unauthenticated", showLogin);

try {
  await enter(await api.whoami());
} catch (err) {
  await showLogin();
}
