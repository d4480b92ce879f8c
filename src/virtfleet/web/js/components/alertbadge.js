// The header's alert badge: how many warning or critical alerts fire and are not silenced
// (info ones, like "KVM unavailable" on a TCG host, would keep it lit forever), refreshed on
// each alert event from the events websocket and when a page says silences changed.
import * as api from "../api.js";

let badge = null;

export async function refreshAlertBadge() {
  if (!badge) return;
  try {
    const alerts = await api.get("/1.0/alerts");
    const now = Date.now() / 1000;
    const loud = alerts.filter((a) => a.state === "firing" && a.severity !== "info" && !(a.silenced_until && a.silenced_until > now));
    badge.hidden = loud.length === 0;
    badge.textContent = `${loud.length} alert${loud.length === 1 ? "" : "s"} firing`;
    badge.dataset.count = String(loud.length);
  } catch {
    badge.hidden = true; // alerts not available on this host
  }
}

function onEvent(e) {
  if (e.detail.kind.startsWith("alert.")) refreshAlertBadge();
}

export function startAlertBadge(element) {
  badge = element;
  window.addEventListener("vf:event", onEvent);
  window.addEventListener("vf:alerts-changed", refreshAlertBadge);
  refreshAlertBadge();
}

export function stopAlertBadge() {
  window.removeEventListener("vf:event", onEvent);
  window.removeEventListener("vf:alerts-changed", refreshAlertBadge);
  if (badge) badge.hidden = true;
  badge = null;
}
