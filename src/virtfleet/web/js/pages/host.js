// The Host page: every probed fact (`host show`), the full host check with its
// recommendation (`host check`), capacity and overcommit (`host capacity`: totals, limits,
// allocated, available, used) and the instance disk directories (`disk list`), where the
// disks kept from a deleted instance are deleted (`disk delete`) or attached to a new
// instance of that name (the create wizard with reuse_disks).
import * as api from "../api.js";
import { bytes, clear, DASH, errorText, h, mib, modeBadge, notice } from "../dom.js";
import { canOperate } from "../state.js";
import { confirmDialog } from "../components/confirm.js";
import { openCreateWizard } from "./create.js";

const view = { keptOnly: false }; // kept across visits

export async function renderHost(main) {
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const done = h("p.notice.notice-info", { role: "status", hidden: true });
  const facts = section("host-facts", "Host facts");
  const checks = section("host-checks", "Host check");
  const capacity = section("host-capacity", "Capacity and overcommit");
  const disks = section("host-disks", "Instance disks");
  clear(main, h("div.page-head", {}, h("h1", {}, "Host")), status, done, capacity, checks, disks, facts);

  function report(err, ok) {
    status.textContent = err ? errorText(err) : "";
    status.hidden = !err;
    done.textContent = ok || "";
    done.hidden = !ok;
  }

  async function load() {
    const [host, check, cap, dirs] = await Promise.all([
      api.getHost(), api.checkHost(), api.get("/1.0/host/capacity"), api.get("/1.0/disks"),
    ].map((p) => p.catch((err) => ({ error: err }))));
    fill(facts, host, factsView);
    fill(checks, check, (c) => checksView(c, host));
    fill(capacity, cap, capacityView);
    fill(disks, dirs, (d) => disksView(d, remove, reuse));
  }

  async function remove(dir) {
    const ok = await confirmDialog({
      title: "Delete kept disks?",
      body: `Delete the disks kept from the deleted instance ${dir.name} (${dir.files.join(", ")}, ${bytes(dir.size_bytes)})? This cannot be undone.`,
      confirm: "Delete disks",
    });
    if (!ok) return;
    report(null);
    try {
      await api.del(`/1.0/disks/${api.enc(dir.name)}`);
      report(null, `Kept disks of ${dir.name} deleted.`);
    } catch (err) {
      report(err);
    }
    await load();
  }

  function reuse(dir) {
    openCreateWizard({ name: dir.name, reuse: true, kind: dir.files.some((f) => f.endsWith(".qcow2")) ? "image" : "container" });
  }

  await load();
}

function section(id, title) {
  return h("section.card", { id, "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title` }, title));
}

// Replace a section's body (everything after its heading) with ``draw(data)`` or the error.
function fill(el, data, draw) {
  const heading = el.querySelector("h2");
  clear(el, heading, data && data.error ? notice(errorText(data.error)) : draw(data));
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", { dataset: { fact: label } }, value === null || value === undefined || value === "" ? DASH : value)];
}

function factsView(f) {
  const kvm = f.kvm || {};
  return h("dl.facts", {},
    fact("Hostname", f.hostname),
    fact("CPU", `${f.cpu_vendor || DASH} ${f.cpu_model || ""}`.trim()),
    fact("CPUs", String(f.cpus)),
    fact("Memory", mib(f.memory_mib)),
    fact("Virtualization flags", (f.virt_flags || []).join(" ") || "none"),
    fact("Runs under a hypervisor", f.cpu_hypervisor ? "yes" : "no"),
    fact("KVM module", f.kvm_module || "none"),
    fact("Nested virtualization", f.nested === null || f.nested === undefined ? DASH : f.nested ? "yes" : "no"),
    fact("IOMMU", f.iommu ? "yes" : "no"),
    fact("/dev/kvm", kvm.device_present ? "present" : "absent"),
    fact("KVM usable", kvm.usable ? "yes (a test vCPU ran)" : `no${kvm.reason ? `: ${kvm.reason}` : ""}`),
    fact("QEMU", `${f.qemu_version || DASH} (${f.qemu_path || DASH})`),
    fact("qemu-img", f.qemu_img_path),
    fact("cgroups", f.cgroup_mode),
    fact("Boot id", h("code.digest", {}, f.boot_id || DASH)));
}

function checksView(checks, host) {
  const mode = host && !host.error && host.kvm && host.kvm.usable ? "kvm" : "tcg";
  return [
    h("p", {}, "VMs run as ", modeBadge(mode), " ", h("span.muted", {},
      `${checks.filter((c) => c.level === "ok").length} ok · ${checks.filter((c) => c.level === "warn").length} warnings · ${checks.filter((c) => c.level === "fail").length} failures`)),
    host && host.recommendation ? h("p", { id: "host-recommendation" }, host.recommendation) : null,
    h("div.table-wrap", {}, h("table", { id: "checks-table" },
      h("caption.sr-only", {}, "Every host check"),
      h("thead", {}, h("tr", {}, ["Level", "Check", "Detail"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, checks.map((c) => h(`tr.check-${c.level}`, { dataset: { check: c.name } },
        h("td", {}, c.level), h("th", { scope: "row" }, c.name), h("td", {}, c.detail || DASH)))))),
  ];
}

function meter(label, used, limit, text) {
  return h("div.meter", { dataset: { meter: label } },
    h("div.meter-label", {}, h("span", {}, label), h("span.muted", {}, text)),
    h("meter", { min: 0, max: limit || 1, value: Math.min(used, limit || 1), high: (limit || 1) * 0.9, "aria-label": `${label}: ${text}` }));
}

function capacityView(c) {
  const used = c.used || {};
  return [
    meter("vCPUs allocated", c.allocated_vcpus, c.vcpus_limit,
      `${c.allocated_vcpus} of ${c.vcpus_limit} (${c.cpus} CPUs × ${c.ratios.cpu}) · ${c.available_vcpus} available`),
    meter("Memory allocated", c.allocated_memory_mib, c.memory_limit_mib,
      `${mib(c.allocated_memory_mib)} of ${mib(c.memory_limit_mib)} (${mib(c.memory_mib)} × ${c.ratios.memory}) · ${mib(c.available_memory_mib)} available`),
    h("dl.facts", { id: "capacity-facts" },
      fact("CPU overcommit", `${c.ratios.cpu} vCPUs per host CPU`),
      fact("Memory overcommit", `${c.ratios.memory}× host memory`),
      fact("Instances counted", String(c.instances)),
      fact("Memory used now", used.memory_used_mib === undefined ? DASH : mib(used.memory_used_mib)),
      fact("CPU load (1 min)", used.cpu_load_pct === undefined ? DASH : `${used.cpu_load_pct.toFixed(0)}% of all CPUs`)),
    h("p.muted", {}, "Allocated counts every instance that runs or should run; a start beyond the limits is refused. The ratios are set when the daemon starts (VIRTFLEET_CPU_OVERCOMMIT, VIRTFLEET_MEMORY_OVERCOMMIT)."),
  ];
}

function disksView(dirs, remove, reuse) {
  const keptOnly = h("input", { type: "checkbox", id: "disks-kept-only", checked: view.keptOnly });
  const body = h("tbody");
  const draw = () => {
    const shown = dirs.filter((d) => !view.keptOnly || d.orphaned);
    clear(body, shown.length ? shown.map((d) => diskRow(d, remove, reuse))
      : h("tr", {}, h("td.muted", { colspan: 5 }, view.keptOnly ? "No kept disks." : "No instance disks yet.")));
  };
  keptOnly.addEventListener("change", () => { view.keptOnly = keptOnly.checked; draw(); });
  draw();
  const kept = dirs.filter((d) => d.orphaned);
  return [
    h("p", { id: "kept-summary" }, kept.length
      ? `${kept.length} kept (no instance owns them): ${bytes(kept.reduce((n, d) => n + d.size_bytes, 0))}.`
      : "No kept disks: every disk directory belongs to an instance."),
    h("label.check", { for: "disks-kept-only" }, keptOnly, "Only kept disks (from deleted instances)"),
    h("div.table-wrap", {}, h("table", { id: "disks-table" },
      h("caption.sr-only", {}, "Instance disk directories"),
      h("thead", {}, h("tr", {}, ["Name", "Files", "On disk", "Owner", ""].map((c) => h("th", { scope: "col" }, c)))),
      body)),
  ];
}

function diskRow(d, remove, reuse) {
  const actions = d.orphaned && canOperate() ? [
    h("button", { type: "button", "aria-label": `Create an instance on the kept disks of ${d.name}`, onclick: () => reuse(d) }, "Reuse…"),
    h("button.danger", { type: "button", "aria-label": `Delete the kept disks of ${d.name}`, onclick: () => remove(d) }, "Delete"),
  ] : [];
  return h("tr", { dataset: { disk: d.name, kept: String(d.orphaned) } },
    h("th", { scope: "row" }, d.orphaned ? d.name : h("a", { href: `#/instances/${d.name}` }, d.name)),
    h("td", {}, d.files.join(", ") || DASH),
    h("td", {}, bytes(d.size_bytes)),
    h("td", {}, d.orphaned ? "kept (instance deleted)" : "its instance"),
    h("td", {}, h("div.actions", {}, actions)));
}
