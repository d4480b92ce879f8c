// uPlot (vendored from npm, web/package-lock.json), loaded on first use: if the web
// libraries are not installed, only the charts fail (with a message), not the whole app.
let loading = null;

export function loadUPlot() {
  loading ??= import("/ui/vendor/uplot/dist/uPlot.esm.js").then((m) => m.default);
  return loading;
}
