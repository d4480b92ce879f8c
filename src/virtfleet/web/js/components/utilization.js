// The dashboard's utilisation report (GET /1.0/reports/utilization): allocation vs use for
// the host, and a uPlot bar chart of each instance's CPU and memory use as a share of what
// it was given, so idle and oversized VMs stand out; their findings listed under it.
import { loadUPlot } from "./uplot.js";
import { get } from "../api.js";
import { clear, errorText, h, mib, notice } from "../dom.js";

const WINDOWS = [["1h", "1 hour"], ["1d", "1 day"], ["7d", "7 days"], ["30d", "30 days"]];
const pct = (v) => (v === null || v === undefined ? "—" : `${v.toFixed(1)} %`);

function barOptions(uPlot, names, width) {
  const bars = uPlot.paths.bars({ size: [0.35, 40], align: 0 });
  return {
    width, height: 170,
    scales: { x: { time: false, range: [-0.5, names.length - 0.5] }, y: { range: [0, 100] } },
    axes: [{ splits: () => names.map((_, i) => i), values: () => names },
      { size: 50, values: (u, vals) => vals.map((v) => `${v} %`) }],
    series: [{ label: "instance", value: (u, i) => (i === null ? "—" : names[i]) },
      { label: "CPU of allocation", stroke: "#2563eb", fill: "#2563eb99", paths: bars, points: { show: false }, value: (u, v) => pct(v) },
      { label: "memory of allocation", stroke: "#d97706", fill: "#d9770699", paths: uPlot.paths.bars({ size: [0.35, 40], align: 1 }),
        points: { show: false }, value: (u, v) => pct(v) }],
  };
}

function summary(r) {
  return h("ul.plain.util-summary", {},
    h("li", {}, `vCPUs: ${r.allocated_vcpus} allocated on ${r.host_cpus} host CPUs; ${r.used_cpu_avg_cores.toFixed(2)} cores used on average (${pct(r.cpu_utilization_of_allocation_pct)} of the allocation)`),
    h("li", {}, `Memory: ${mib(r.allocated_memory_mib)} allocated of ${mib(r.host_memory_mib)}; ${mib(Math.round(r.used_memory_avg_mib))} used on average`),
    r.hints.map((hint) => h("li.check-warn", {}, hint)));
}

export function utilizationCard() {
  const body = h("div.util");
  const chartBox = h("figure.chart.util-chart", { dataset: { chart: "utilization" } });
  const picker = h("select", { id: "util-window", onchange: () => load() },
    WINDOWS.map(([v, label]) => h("option", { value: v, selected: v === "1d" }, label)));
  const rest = h("div");
  let plot = null;
  async function load() {
    try {
      const [r, uPlot] = await Promise.all([get(`/1.0/reports/utilization?window=${picker.value}`), loadUPlot()]);
      const rows = r.instances.filter((i) => i.samples > 0);
      if (plot) plot.destroy();
      plot = null;
      clear(chartBox, h("figcaption", {}, "Use as a share of allocation, per instance"));
      if (rows.length) {
        const names = rows.map((i) => i.name);
        const memPct = rows.map((i) => (i.memory_mib ? (100 * i.memory_used_avg_mib) / i.memory_mib : null));
        chartBox.setAttribute("aria-label", `CPU of allocation: ${rows.map((i) => `${i.name} ${pct(i.cpu_of_allocation_pct)}`).join(", ")}`);
        plot = new uPlot(barOptions(uPlot, names, Math.max(260, body.clientWidth || 600)),
          [names.map((_, i) => i), rows.map((i) => Math.min(100, i.cpu_of_allocation_pct)), memPct.map((v) => (v === null ? null : Math.min(100, v)))], chartBox);
      } else {
        chartBox.append(h("p.muted", {}, "No instance ran in this window."));
      }
      const flagged = r.instances.filter((i) => i.findings.length);
      clear(rest, summary(r), flagged.length ? h("ul.findings", {}, flagged.map((i) =>
        h("li", { dataset: { instance: i.name } }, h("strong", {}, i.name), `: ${i.findings.join("; ")}`))) : h("p.muted", {}, "No idle or oversized instance found."));
    } catch (err) {
      clear(rest, notice(errorText(err)));
    }
  }
  clear(body, h("div.field.inline", {}, h("label", { for: "util-window" }, "Window"), picker), chartBox, rest);
  load();
  return body;
}
