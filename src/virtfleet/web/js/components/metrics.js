// Metrics charts: the instance page's Metrics tab and the dashboard's host metrics card.
// Data comes from /1.0/instances/{name}/metrics and /1.0/host/metrics (history with
// [time, avg, max] points); charts are small dependency-free SVGs (avg line, max dotted).
import { get, enc } from "../api.js";
import { bytes, clear, errorText, h, notice } from "../dom.js";

const SVG = "http://www.w3.org/2000/svg";
const RANGES = [["15m", "15 min"], ["1h", "1 hour"], ["1d", "1 day"], ["7d", "7 days"], ["30d", "30 days"]];
const REFRESH_MS = 10000;
const pct = (v) => `${v.toFixed(1)} %`;
const rate = (v) => `${bytes(v)}/s`;

const INSTANCE_CHARTS = [
  ["CPU (% of one core)", ["cpu_pct"], pct],
  ["CPU throttled by the cap (% of periods)", ["cpu_throttled_pct"], pct],
  ["Memory (QEMU RSS)", ["memory_rss_bytes", "balloon_actual_bytes"], bytes],
  ["Disk I/O", ["disk_read_bps", "disk_write_bps"], rate],
  ["Network I/O", ["net_rx_bps", "net_tx_bps"], rate],
];
const HOST_CHARTS = [
  ["Host CPU (% of all cores)", ["cpu_pct"], pct],
  ["Host memory available", ["memory_available_pct"], pct],
  ["Host disk I/O", ["disk_read_bps", "disk_write_bps"], rate],
  ["Memory pressure (PSI some, avg10)", ["pressure_memory_some_avg10"], pct],
];

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// One chart: every metric's average as a line, its maximum dotted; y from 0.
export function lineChart(title, series, format, width = 420, height = 120) {
  const all = series.flatMap(([, points]) => points);
  const figure = h("figure.chart", {}, h("figcaption", {}, title));
  if (!all.length) {
    figure.append(h("p.muted", {}, "No data in this range yet."));
    return figure;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]));
  const top = Math.max(...all.map((p) => p[2])) || 1;
  const x = (t) => (t1 === t0 ? width / 2 : ((t - t0) / (t1 - t0)) * (width - 4) + 2);
  const y = (v) => height - 2 - (v / top) * (height - 14);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart-svg" });
  chart.setAttribute("aria-label", `${title}: peak ${format(top)}`);
  series.forEach(([name, points], i) => {
    const path = (k) => points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[k]).toFixed(1)}`).join(" ");
    chart.append(svg("path", { d: path(2), class: `chart-max chart-s${i}`, fill: "none" }));
    chart.append(svg("path", { d: path(1), class: `chart-avg chart-s${i}`, fill: "none", "data-metric": name }));
    const [t, avg] = points[points.length - 1]; // the latest point, visible even when alone
    chart.append(svg("circle", { cx: x(t).toFixed(1), cy: y(avg).toFixed(1), r: 2.5, class: `chart-dot chart-s${i}` }));
  });
  const scale = svg("text", { x: 4, y: 11, class: "chart-scale" });
  scale.textContent = format(top);
  chart.append(scale);
  const last = series.map(([name, points], i) =>
    points.length ? h(`span.chart-key.chart-k${i}`, {}, `${name}: ${format(points[points.length - 1][1])}`) : null);
  figure.append(chart, h("div.chart-legend", {}, last));
  return figure;
}

function charts(history, specs) {
  return h("div.charts", {}, specs.map(([title, metrics, format]) =>
    lineChart(title, metrics.map((m) => [m, history.points[m] || []]).filter(([, p]) => p.length), format)));
}

function rangePicker(current, onPick) {
  return h("div.range-picker", { role: "group", "aria-label": "Time range" }, RANGES.map(([value, label]) =>
    h("button", { type: "button", "aria-pressed": String(value === current), onclick: () => onPick(value) }, label)));
}

function unavailable(latest) {
  if (!latest || !latest.unavailable) return null;
  const items = Object.entries(latest.unavailable);
  return items.length ? h("ul.muted.unavailable", {}, items.map(([what, why]) => h("li", {}, `Not measured — ${what}: ${why}`))) : null;
}

// The instance page's Metrics tab; returns its clean-up (stops the refresh).
export function metricsPanel(panel, name) {
  let range = "1h";
  const body = h("div.metrics");
  async function load() {
    try {
      const data = await get(`/1.0/instances/${enc(name)}/metrics?range=${range}`);
      const step = `every ${data.history.step_s} s (stored every ${data.history.tier_step_s} s)`;
      clear(body, rangePicker(range, (r) => { range = r; load(); }), h("p.muted", {}, step),
        data.latest ? null : notice("No current sample: the instance is not running.", "info"),
        charts(data.history, INSTANCE_CHARTS), unavailable(data.latest));
    } catch (err) {
      clear(body, notice(errorText(err)));
    }
  }
  panel.append(h("h2", {}, "Metrics"), body);
  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => clearInterval(timer);
}

// The dashboard's host metrics card: last hour of the host's history.
export function hostMetrics() {
  const body = h("div.metrics", {}, h("p.muted", {}, "Loading…"));
  get("/1.0/host/metrics?range=1h").then((data) => {
    clear(body, charts(data.history, HOST_CHARTS));
  }).catch((err) => clear(body, notice(errorText(err))));
  return body;
}
