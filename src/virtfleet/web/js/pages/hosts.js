// The Hosts page (`cluster status`): the store, then one card per host — its state, lease
// age, capacity bars (vCPUs and memory allocated against its overcommit limits, its data
// disk), the instances it owns (a link to the instance list filtered to it), its etcd
// member's health and versions — and etcd's members when the store is etcd.
// Refreshed by the event stream (instances change) and every lease TTL (a host whose lease
// lapsed sends no event); the lease ages tick on locally in between.
import * as api from "../api.js";
import { bytes, clear, DASH, errorText, h, mib, notice } from "../dom.js";
import { ageText, etcdLevel, etcdText, meter, stateBadge } from "../components/hostinfo.js";

const LEASE_TTL_MS = 15000; // the daemon's host lease: no state changes faster than that

export async function renderHosts(main) {
  const summary = h("p", { id: "cluster-summary" });
  const grid = h("div.host-grid", { id: "host-cards" });
  const members = h("section.card", { id: "etcd-members", "aria-labelledby": "etcd-members-title", hidden: true });
  clear(main, h("div.page-head", {}, h("h1", {}, "Hosts")), summary, grid, members);
  let loadedAt = 0;
  let timer = null;

  async function load() {
    let status;
    try {
      status = await api.clusterStatus();
    } catch (err) {
      clear(grid, notice(errorText(err)));
      return;
    }
    loadedAt = Date.now();
    const online = status.hosts.filter((host) => host.state === "online").length;
    clear(summary, h("strong", {}, status.summary), ` · ${online} of ${status.hosts.length} host${status.hosts.length === 1 ? "" : "s"} online · `,
      h("a", { href: "#/instances" }, `${status.instances} instance${status.instances === 1 ? "" : "s"}`));
    clear(grid, status.hosts.map((host) => hostCard(host, status.store)));
    members.hidden = status.store !== "etcd";
    if (!members.hidden) clear(members, h("h2", { id: "etcd-members-title" }, "etcd members"), membersTable(status.members));
  }

  // Lease ages as of now, without asking the daemon again.
  const tick = setInterval(() => {
    for (const el of grid.querySelectorAll("[data-lease-age]")) {
      const age = Number(el.dataset.leaseAge) + (Date.now() - loadedAt) / 1000;
      el.textContent = ageText(age);
    }
  }, 1000);
  const refresh = setInterval(() => load(), LEASE_TTL_MS);
  const onEvent = (e) => {
    const kind = e.detail.kind || "";
    if (timer || !(kind.startsWith("instance.") || kind === "operation.done")) return;
    timer = setTimeout(() => { timer = null; load(); }, 500);
  };
  window.addEventListener("vf:event", onEvent);
  await load();
  return () => {
    clearInterval(tick);
    clearInterval(refresh);
    if (timer) clearTimeout(timer);
    window.removeEventListener("vf:event", onEvent);
  };
}

function fact(label, ...value) {
  return [h("dt", {}, label), h("dd", { dataset: { fact: label } }, ...value)];
}

function hostCard(host, store) {
  const cap = host.capacity;
  const disk = (host.disks || [])[0];
  const versions = Object.entries(host.versions || {}).map(([k, v]) => `${k} ${v}`).join(" · ");
  const age = host.lease_age_s === null || host.lease_age_s === undefined
    ? h("span", {}, ageText(null)) : h("span", { dataset: { leaseAge: String(host.lease_age_s) } }, ageText(host.lease_age_s));
  const title = `host-${host.id}`;
  return h("section.card.host-card", { "aria-labelledby": title, dataset: { host: host.name } },
    h("h2", { id: title }, host.name, " ", stateBadge(host.state), host.this_host ? h("span.muted", {}, " (this host)") : null),
    h("p.host-instances", {},
      h("a", { href: `#/instances?host=${api.enc(host.name)}`, "aria-label": `Instances on ${host.name}` },
        `${host.instances} instance${host.instances === 1 ? "" : "s"}`),
      ` · ${host.running} running`),
    meter("vCPUs allocated", host.allocated_vcpus, cap.vcpus_limit,
      `${host.allocated_vcpus} of ${cap.vcpus_limit} (${cap.cpus} CPUs)`),
    meter("Memory allocated", host.allocated_memory_mib, cap.memory_limit_mib,
      `${mib(host.allocated_memory_mib)} of ${mib(cap.memory_limit_mib)} (${mib(cap.memory_mib)} RAM)`),
    disk && disk.total_bytes ? meter("Disk used", disk.total_bytes - disk.free_bytes, disk.total_bytes,
      `${bytes(disk.total_bytes - disk.free_bytes)} of ${bytes(disk.total_bytes)} · ${disk.path}`) : null,
    h("dl.facts", {},
      fact("Lease age", age),
      fact("etcd", h(`span.etcd-${etcdLevel(host, store)}`, {}, etcdText(host, store))),
      fact("API", host.api_url || DASH),
      fact("Versions", versions || DASH),
      host.this_host ? fact("Details", h("a", { href: "#/host" }, "Facts, checks and disks of this host")) : null));
}

function membersTable(members) {
  return h("div.table-wrap", {}, h("table", { id: "etcd-members-table" },
    h("caption.sr-only", {}, "etcd members"),
    h("thead", {}, h("tr", {}, ["Member", "Client URLs", "Health", "DB size", "Raft index", "Version"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, members.map((m) => h("tr", { dataset: { member: m.name } },
      h("th", { scope: "row" }, m.name),
      h("td", {}, m.client_urls.join(", ") || DASH),
      h(`td.etcd-${m.error ? "fail" : "ok"}`, {}, m.error ? `unreachable: ${m.error}` : m.leader ? "leader" : "healthy"),
      h("td", {}, m.db_size_bytes === null ? DASH : bytes(m.db_size_bytes)),
      h("td.num", {}, m.raft_index === null ? DASH : String(m.raft_index)),
      h("td", {}, m.version || DASH))))));
}
