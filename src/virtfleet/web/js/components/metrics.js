// Metrics charts: the instance page's Metrics tab and the dashboard's host metrics card.
// Data comes from /1.0/instances/{name}/metrics and /1.0/host/metrics (history with
// [time, avg, max] points), drawn with uPlot (vendored from npm, web/package-lock.json):
// average solid, maximum dashed; drag to zoom (double-click resets), hover for values.
import { loadUPlot } from "./uplot.js";
import { get, enc } from "../api.js";
import { bytes, clear, errorText, h, notice } from "../dom.js";

const RANGES = [["15m", "15 min"], ["1h", "1 hour"], ["1d", "1 day"], ["7d", "7 days"], ["30d", "30 days"]];
const REFRESH_MS = 10000;
const COLORS = ["#2563eb", "#d97706"];
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
  ["Host network I/O", ["net_rx_bps", "net_tx_bps"], rate],
  ["Memory pressure (PSI some, avg10)", ["pressure_memory_some_avg10"], pct],
];

// uPlot's columns: shared times, then each metric's average and maximum (null where absent).
export function columns(series) {
  const times = [...new Set(series.flatMap(([, points]) => points.map((p) => p[0])))].sort((a, b) => a - b);
  const cols = [times];
  for (const [, points] of series) {
    const at = new Map(points.map((p) => [p[0], p]));
    cols.push(times.map((t) => (at.has(t) ? at.get(t)[1] : null)), times.map((t) => (at.has(t) ? at.get(t)[2] : null)));
  }
  return cols;
}

function plotOptions(series, format, width) {
  const show = (u, v) => (v === null || v === undefined ? "—" : format(v));
  return {
    width, height: 150,
    cursor: { drag: { x: true, y: false } },
    scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [{}, { size: 84, values: (u, vals) => vals.map((v) => format(v)) }],
    series: [{}, ...series.flatMap(([name], i) => [
      { label: name, stroke: COLORS[i % 2], width: 1.6, value: show },
      { label: "max", stroke: COLORS[i % 2], width: 1, dash: [3, 3], value: show },
    ])],
  };
}

// One chart that keeps its zoom across refreshes: {element, update(series)}.
function chart(title, metrics, format) {
  const figure = h("figure.chart", { dataset: { metrics: metrics.join(" ") } }, h("figcaption", {}, title));
  const empty = h("p.muted", {}, "No data in this range yet.");
  const box = h("div.chart-box");
  figure.append(empty, box);
  let plot = null;
  let zoomed = false;
  async function update(series) {
    const has = series.filter(([, p]) => p.length);
    const uPlot = has.length ? await loadUPlot() : null; // awaited first: the rest runs at once
    empty.hidden = has.length > 0;
    if (!has.length) {
      if (plot) plot.destroy();
      plot = null;
      zoomed = false;
      return;
    }
    const last = has.map(([name, p]) => `${name} ${format(p[p.length - 1][1])}`).join(", ");
    figure.setAttribute("aria-label", `${title}: latest ${last}`);
    if (plot && plot.series.length === 1 + 2 * has.length) {
      plot.setData(columns(has), !zoomed);
      return;
    }
    if (plot) plot.destroy();
    plot = new uPlot(plotOptions(has, format, Math.max(240, figure.clientWidth || 320)), columns(has), box);
    plot.root._plot = plot; // reachable from the page (browser tests read the zoomed scale)
    plot.over.addEventListener("mouseup", () => { zoomed = plot.select.width > 0 || zoomed; });
    plot.over.addEventListener("dblclick", () => { zoomed = false; });
  }
  const resize = new ResizeObserver(() => { if (plot && figure.clientWidth) plot.setSize({ width: figure.clientWidth, height: 150 }); });
  resize.observe(figure);
  return { element: figure, update };
}

// A grid of charts for `specs`; update(history) redraws them in place.
function chartGrid(specs) {
  const made = specs.map(([title, metrics, format]) => [metrics, chart(title, metrics, format)]);
  return {
    element: h("div.charts", {}, made.map(([, c]) => c.element)),
    update: (history) => Promise.all(made.map(([metrics, c]) => c.update(metrics.map((m) => [m, history.points[m] || []])))),
  };
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
  return liveCharts(panel, "Metrics", `/1.0/instances/${enc(name)}/metrics`, INSTANCE_CHARTS, "1h", true);
}

// The dashboard's host metrics card (CPU, memory, disk, network) with its range picker.
export function hostMetrics() {
  const body = h("div");
  const stop = liveCharts(body, null, "/1.0/host/metrics", HOST_CHARTS, "1h", false);
  body.stop = stop;
  return body;
}

function liveCharts(panel, heading, path, specs, initial, perInstance) {
  let range = initial;
  const grid = chartGrid(specs);
  const picker = h("div");
  const step = h("p.muted");
  const status = h("div");
  const extra = h("div");
  function pick(r) {
    range = r;
    grid.update({ points: {} }); // a new range: drop the old one's zoom
    load();
  }
  async function load() {
    try {
      const data = await get(`${path}?range=${range}`);
      clear(picker, rangePicker(range, pick));
      step.textContent = `every ${data.history.step_s} s (stored every ${data.history.tier_step_s} s)`;
      clear(status, perInstance && !data.latest ? notice("No current sample: the instance is not running.", "info") : null);
      await grid.update(data.history);
      clear(extra, perInstance ? unavailable(data.latest) : null);
    } catch (err) {
      clear(status, notice(errorText(err)));
    }
  }
  panel.append(heading ? h("h2", {}, heading) : "", h("div.metrics", {}, picker, step, status, grid.element, extra));
  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => clearInterval(timer);
}
