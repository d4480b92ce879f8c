// The dashboard: the cluster (store, hosts online, each host's instances and etcd health),
// host capacity (allocated vs used), instances by state and by mode,
// the host check summary, the last boot's start sequence (and, for admins, shutting every
// guest down), recent events and running tasks.
import * as api from "../api.js";
import { bytes, clear, errorText, h, mib, modeBadge, modeOf, notice, when } from "../dom.js";
import { hostMetrics } from "../components/metrics.js";
import { utilizationCard } from "../components/utilization.js";
import { bootCard } from "../components/bootreport.js";
import { etcdLevel, etcdText, stateBadge } from "../components/hostinfo.js";

const LIVE = ["running", "paused", "starting", "stopping"];

export async function renderDashboard(main) {
  const body = h("div.dashboard");
  clear(main, h("h1", {}, "Dashboard"), body);
  let timer = null;
  const metrics = hostMetrics(); // made once: it keeps its range, zoom and refresh timer
  const utilization = utilizationCard();
  const boot = bootCard();

  async function load() {
    const [host, instances, checks, events, operations, images, cluster] = await Promise.all([
      api.getHost(), api.listInstances(), api.checkHost(), api.listEvents(12), api.listOperations(), api.listImages(),
      api.clusterStatus(),
    ].map((p) => p.catch((err) => ({ error: err }))));
    clear(body,
      card("Cluster", clusterCard(cluster)),
      card("Host", hostCard(host, instances, images, cluster)),
      card("Instances", instanceCard(instances)),
      card("Host check", checkCard(checks)),
      card("Boot and shutdown", boot),
      card("Host metrics", metrics, "wide"),
      card("Utilization", utilization, "wide"),
      card("Running tasks", taskCard(operations)),
      card("Recent events", eventCard(events), "wide"));
    await boot.refresh();
  }

  const onEvent = () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; load().catch(() => {}); }, 500);
  };
  window.addEventListener("vf:event", onEvent);
  await load();
  return () => {
    metrics.stop();
    window.removeEventListener("vf:event", onEvent);
    if (timer) clearTimeout(timer);
  };
}

function card(title, content, extra = "") {
  const id = `card-${title.toLowerCase().replace(/\s+/g, "-")}`;
  return h(`section.card${extra ? `.${extra}` : ""}`, { "aria-labelledby": id, id: `${id}-section` },
    h("h2", { id }, title), content);
}

function failed(result) {
  return result && result.error ? notice(errorText(result.error)) : null;
}

function meter(label, used, total, text) {
  const pct = total ? Math.min(100, Math.round((used / total) * 100)) : 0;
  return h("div.meter", {},
    h("div.meter-label", {}, h("span", {}, label), h("span.muted", {}, text)),
    h("meter", { min: 0, max: total || 1, value: Math.min(used, total || 1), high: (total || 1) * 0.9, "aria-label": `${label}: ${text}` }),
    h("span.sr-only", {}, `${pct}%`));
}

function hostCard(host, instances, images, cluster) {
  if (host.error) return failed(host);
  const all = instances.error ? [] : instances;
  // This host's own instances: in a cluster the list holds every host's.
  const list = cluster.error ? all : all.filter((i) => !i.owner || i.owner.host === cluster.host_id);
  const live = list.filter((i) => LIVE.includes(i.status.power));
  const sum = (items, f) => items.reduce((n, i) => n + f(i), 0);
  const vcpuAll = sum(list, (i) => i.spec.vcpus);
  const vcpuLive = sum(live, (i) => i.spec.vcpus);
  const memAll = sum(list, (i) => i.spec.memory_mib);
  const memLive = sum(live, (i) => i.spec.memory_mib);
  const imageBytes = images.error ? 0 : sum(images, (i) => i.actual_size_bytes);
  const imageVirtual = images.error ? 0 : sum(images, (i) => i.virtual_size_bytes);
  const diskGib = sum(list, (i) => sum(i.spec.disks || [], (d) => d.size_gib || 0));
  const hostMode = host.kvm && host.kvm.usable ? "kvm" : "tcg";
  return h("div", {},
    h("p", {}, h("strong", {}, host.hostname || "this host"), " · ", host.cpu_model || host.cpu_vendor || "CPU",
      " · QEMU ", host.qemu_version || "—"),
    h("p", {}, "Virtualization: ", modeBadge(hostMode), " ",
      h("span.muted", {}, host.kvm && host.kvm.usable ? "KVM probe ran a vCPU" : `no usable KVM: ${(host.kvm && host.kvm.reason) || "not probed"}`)),
    meter("vCPUs in use (running)", vcpuLive, host.cpus, `${vcpuLive} used · ${vcpuAll} allocated · ${host.cpus} host CPUs`),
    meter("Memory in use (running)", memLive, host.memory_mib, `${mib(memLive)} used · ${mib(memAll)} allocated · ${mib(host.memory_mib)} host`),
    meter("Image storage", imageBytes, imageVirtual, `${bytes(imageBytes)} used · ${bytes(imageVirtual)} virtual · disks ${diskGib ? `${diskGib} GiB` : "thin (image size)"}`));
}

function clusterCard(cluster) {
  if (cluster.error) return failed(cluster);
  const online = cluster.hosts.filter((x) => x.state === "online").length;
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  return h("div", {},
    h("p", {}, h("strong", {}, cluster.summary)),
    h("p", { id: "cluster-hosts-online" }, `${online} of ${plural(cluster.hosts.length, "host")} online · ${plural(cluster.instances, "instance")}`),
    h("ul.plain.cluster-hosts", {}, cluster.hosts.map((x) => h("li", { dataset: { host: x.name } },
      h("strong", {}, x.name), " ", stateBadge(x.state), ` ${plural(x.instances, "instance")} (${x.running} running)`,
      cluster.store === "etcd" ? h(`span.etcd-${etcdLevel(x, cluster.store)}`, {}, ` · etcd: ${etcdText(x, cluster.store)}`) : null))),
    h("a", { href: "#/hosts" }, "All hosts"));
}

function instanceCard(instances) {
  if (instances.error) return failed(instances);
  const count = (f) => {
    const out = new Map();
    for (const i of instances) out.set(f(i), (out.get(f(i)) || 0) + 1);
    return out;
  };
  const states = count((i) => i.status.power);
  const modes = count(modeOf);
  return h("div", {},
    h("p.big", {}, h("a", { href: "#/instances" }, `${instances.length} instance${instances.length === 1 ? "" : "s"}`)),
    h("h3", {}, "By state"),
    h("ul.counts", {}, ["running", "paused", "stopped", "starting", "stopping", "crashed"]
      .filter((s) => states.get(s) || ["running", "stopped"].includes(s))
      .map((s) => h("li", { dataset: { state: s } }, h("span", { class: `badge power power-${s}` }, s), " ", String(states.get(s) || 0)))),
    h("h3", {}, "By virtualization mode"),
    h("ul.counts", {}, ["kvm", "tcg", "container"].map((m) =>
      h("li", { dataset: { mode: m } }, modeBadge(m), " ", String(modes.get(m) || 0)))));
}

function checkCard(checks) {
  if (checks.error) return failed(checks);
  const by = (level) => checks.filter((c) => c.level === level);
  const problems = [...by("fail"), ...by("warn")];
  return h("div", {},
    h("p", {}, `${by("ok").length} ok · ${by("warn").length} warnings · ${by("fail").length} failures`),
    problems.length ? h("ul.checks", {}, problems.map((c) =>
      h(`li.check-${c.level}`, {}, h("strong", {}, `${c.level}: ${c.name}`), c.detail ? ` — ${c.detail}` : "")))
      : h("p.muted", {}, "Everything checked is fine."));
}

function taskCard(operations) {
  if (operations.error) return failed(operations);
  const running = operations.filter((o) => o.status === "pending" || o.status === "running");
  if (!running.length) return h("p.muted", {}, "No task is running.");
  return h("ul.plain", {}, running.map((o) => h("li", {},
    `${o.kind} ${o.target} `, h("progress", { max: 100, value: o.progress, "aria-label": `${o.kind} ${o.target}` }), ` ${o.message}`)));
}

function eventCard(events) {
  if (events.error) return failed(events);
  if (!events.length) return h("p.muted", {}, "No events yet.");
  return h("table.events", {},
    h("thead", {}, h("tr", {}, ["Time", "Event", "Target", "Message"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, [...events].reverse().map((e) =>
      h("tr", {}, h("td", {}, when(e.time)), h("td", {}, e.kind), h("td", {}, e.target), h("td", {}, e.message)))));
}
