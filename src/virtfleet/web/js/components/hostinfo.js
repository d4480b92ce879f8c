// What several pages show of the cluster's hosts: a host's state badge, its etcd member's
// health in words, the host an instance's owner id names, and a capacity meter.
import { DASH, h } from "../dom.js";

const STATES = { online: "online", maintenance: "maintenance", offline: "offline" };

export function stateBadge(state) {
  return h(`span.badge.host-state.state-${STATES[state] || "offline"}`, { dataset: { hostState: state } }, state);
}

// The etcd member a host runs, in words; ``store``: the cluster's store kind.
export function etcdText(host, store) {
  if (store !== "etcd") return "none (single host)";
  const m = host.etcd;
  if (!m) return "no member of its own (etcd runs elsewhere)";
  if (m.error) return `unreachable: ${m.error}`;
  return `${m.leader ? "leader" : "healthy"}${m.version ? ` · etcd ${m.version}` : ""}`;
}

export function etcdLevel(host, store) {
  if (store !== "etcd" || !host.etcd) return "none";
  return host.etcd.error ? "fail" : "ok";
}

// The host ``id`` names in ``hosts`` (records of /1.0/hosts), else a short "unknown" label.
export function ownerName(hosts, id) {
  if (!id) return DASH;
  const found = hosts.find((host) => host.id === id);
  return found ? found.name : `unknown host ${id.slice(0, 8)}`;
}

// Whether the instance list needs a host column: more than one host, or an owner that is
// no listed host (a removed one).
export function manyHosts(hosts, instances) {
  const ids = new Set(hosts.map((host) => host.id));
  return hosts.length > 1 || instances.some((i) => i.owner && !ids.has(i.owner.host));
}

export function meter(label, used, limit, text) {
  return h("div.meter", { dataset: { meter: label } },
    h("div.meter-label", {}, h("span", {}, label), h("span.muted", {}, text)),
    h("meter", { min: 0, max: limit || 1, value: Math.min(used, limit || 1), high: (limit || 1) * 0.9, "aria-label": `${label}: ${text}` }));
}

// "12 s", "4 min", "2 h" for a lease age in seconds.
export function ageText(seconds) {
  if (seconds === null || seconds === undefined) return "lapsed (no lease)";
  if (seconds < 120) return `${Math.floor(seconds)} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h`;
}
