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
import { renderHost } from "./pages/host.js";
import { renderHosts } from "./pages/hosts.js";
import { renderOperations } from "./pages/operations.js";
import { renderUsers } from "./pages/admin.js";
import { renderAudit, renderEvents } from "./pages/activity.js";
import { startAlertBadge, stopAlertBadge } from "./components/alertbadge.js";

const main = document.getElementById("main");
let leave = null; // the current page's clean-up (closes websockets, timers)

// Each render gets a fresh view: a page still loading when the user moves on draws into
// a view that is no longer shown, never over the next page.
const ROUTES = [
  [/^#?\/?$/, "dashboard", (v) => renderDashboard(v)],
  [/^#\/instances(?:\?host=([^&]*))?$/, "instances", (v, m) => renderInstances(v, m[1] === undefined ? undefined : decodeURIComponent(m[1]))],
  [/^#\/instances\/([a-z0-9-]+)(?:\/([a-z]+))?$/, "instances", (v, m) => renderInstance(v, m[1], m[2])],
  [/^#\/networks$/, "networks", (v) => renderNetworks(v)],
  [/^#\/images$/, "images", (v) => renderImages(v)],
  [/^#\/templates$/, "templates", (v) => renderTemplates(v)],
  [/^#\/backups$/, "backups", (v) => renderBackups(v)],
  [/^#\/alerts$/, "alerts", (v) => renderAlerts(v)],
  [/^#\/hosts$/, "hosts", (v) => renderHosts(v)],
  [/^#\/host$/, "host", (v) => renderHost(v)],
  [/^#\/admin(?:\/users)?$/, "admin", (v) => renderUsers(v)],
  [/^#\/admin\/audit$/, "admin", (v) => renderAudit(v)],
  [/^#\/admin\/events$/, "admin", (v) => renderEvents(v)],
  [/^#\/admin\/operations$/, "admin", (v) => renderOperations(v)],
];

let shown = 0; // counts routes, so a late page learns it was left while loading

async function route() {
  if (leave) leave();
  leave = null;
  const mine = ++shown;
  if (!session.username) return;
  const hash = location.hash || "#/";
  for (const [pattern, nav, render] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    markNav(nav);
    const view = h("div.view", {}, h("p.muted", { role: "status" }, "Loading…"));
    clear(main, view);
    let done = null;
    try {
      done = (await render(view, match)) || null;
    } catch (err) {
      clear(view, notice(errorText(err)));
    }
    if (mine === shown) leave = done;
    else if (done) done();
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
  shown++;
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
