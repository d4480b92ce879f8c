// The instance list: state, mode, vCPUs, memory, IPs and, with more than one host, the
// owning host; filter by state and by host (#/instances?host=NAME), search, bulk actions.
import * as api from "../api.js";
import { clear, DASH, errorText, h, mib, modeBadge, modeOf, powerBadge } from "../dom.js";
import { canOperate } from "../state.js";
import { run } from "../components/actions.js";
import { openCreateWizard } from "./create.js";
import { addressText } from "./networks.js";
import { manyHosts, ownerName } from "../components/hostinfo.js";

const STATES = ["all", "running", "paused", "stopped", "starting", "stopping", "crashed"];
const view = { state: "all", search: "", host: "all" }; // kept across visits

export async function renderInstances(main, host) {
  if (host !== undefined) view.host = host || "all";
  const body = h("tbody");
  const head = h("thead");
  const count = h("p.muted", { role: "status" });
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const selectAll = h("input", { type: "checkbox", id: "select-all", "aria-label": "Select all shown instances" });
  const bulk = canOperate()
    ? h("div.bulk", { role: "group", "aria-label": "Actions on selected instances" },
        ["start", "stop", "delete"].map((action) => h(action === "delete" ? "button.danger" : "button", {
          type: "button", dataset: { bulk: action }, disabled: true,
          onclick: () => bulkAction(action),
        }, `${action[0].toUpperCase()}${action.slice(1)} selected`)))
    : null;
  let instances = [];
  let hosts = []; // /1.0/hosts records: owner ids to names
  let showHosts = false; // a host column and filter only when there is more than one host

  const filter = h("select", { id: "state-filter", onchange: (e) => { view.state = e.target.value; draw(); } },
    STATES.map((s) => h("option", { value: s, selected: s === view.state }, s === "all" ? "All states" : s)));
  const hostFilter = h("select", { id: "host-filter", onchange: (e) => { view.host = e.target.value; remember(); draw(); } });
  const hostLabel = h("label", { for: "host-filter" }, "Host");
  const search = h("input", {
    id: "search", type: "search", placeholder: "Name, image or mode", value: view.search,
    oninput: (e) => { view.search = e.target.value; draw(); },
  });

  clear(main,
    h("div.page-head", {},
      h("h1", {}, "Instances"),
      canOperate() ? h("button.primary", { type: "button", id: "create-instance", onclick: openCreateWizard }, "Create instance") : null),
    h("div.toolbar", {},
      h("label", { for: "state-filter" }, "State"), filter,
      hostLabel, hostFilter,
      h("label", { for: "search" }, "Search"), search,
      bulk),
    status,
    h("div.table-wrap", {},
      h("table.instances", {},
        h("caption.sr-only", {}, "Instances"),
        head,
        body)),
    count);

  selectAll.addEventListener("change", () => {
    for (const box of body.querySelectorAll("input[type=checkbox]")) box.checked = selectAll.checked;
    updateBulk();
  });

  const hostOf = (i) => ownerName(hosts, i.owner && i.owner.host);

  function shown() {
    const needle = view.search.trim().toLowerCase();
    return instances.filter((i) =>
      (view.state === "all" || i.status.power === view.state) &&
      (!showHosts || view.host === "all" || hostOf(i) === view.host) &&
      (!needle || [i.name, i.spec.image || "", modeOf(i), showHosts ? hostOf(i) : ""].some((v) => v.toLowerCase().includes(needle))));
  }

  // The filter in the address, so a reload or a link keeps it (no new history entry).
  function remember() {
    history.replaceState(null, "", view.host === "all" ? "#/instances" : `#/instances?host=${api.enc(view.host)}`);
  }

  function drawHosts() {
    showHosts = manyHosts(hosts, instances);
    const names = [...new Set([...hosts.map((x) => x.name), ...instances.map(hostOf)])].filter((n) => n !== DASH).sort();
    if (view.host !== "all" && !names.includes(view.host)) names.push(view.host); // as asked, even if gone
    clear(hostFilter, h("option", { value: "all" }, "All hosts"),
      names.map((n) => h("option", { value: n, selected: n === view.host }, n)));
    hostFilter.hidden = hostLabel.hidden = !showHosts;
    search.placeholder = showHosts ? "Name, image, mode or host" : "Name, image or mode";
    clear(head, h("tr", {},
      canOperate() ? h("th", { scope: "col" }, selectAll) : null,
      ["Name", "State", "Mode", ...(showHosts ? ["Host"] : []), "vCPUs", "Memory", "Devices", "IPs"].map((c) => h("th", { scope: "col" }, c))));
  }

  function selected() {
    return [...body.querySelectorAll("input[type=checkbox]:checked")].map((b) => b.value);
  }

  function updateBulk() {
    const n = selected().length;
    for (const b of main.querySelectorAll("[data-bulk]")) b.disabled = n === 0;
  }

  function draw() {
    const keep = new Set(selected());
    const rows = shown();
    clear(body, rows.length ? rows.map((i) => row(i, keep.has(i.name))) :
      h("tr", {}, h("td.muted", { colspan: showHosts ? 9 : 8 }, instances.length ? "No instance matches." : "No instances yet.")));
    count.textContent = `${rows.length} of ${instances.length} instances shown`;
    selectAll.checked = false;
    updateBulk();
  }

  function row(i, checked) {
    return h("tr", { dataset: { name: i.name } },
      canOperate() ? h("td", {}, h("input", {
        type: "checkbox", value: i.name, checked, "aria-label": `Select ${i.name}`, onchange: updateBulk,
      })) : null,
      h("th", { scope: "row" }, h("a", { href: `#/instances/${i.name}` }, i.name)),
      h("td", {}, powerBadge(i.status.power)),
      h("td", {}, modeBadge(modeOf(i))),
      showHosts ? h("td", { dataset: { host: hostOf(i) } }, hostOf(i)) : null,
      h("td.num", {}, String(i.spec.vcpus)),
      h("td.num", {}, mib(i.spec.memory_mib)),
      h("td", {}, i.spec.device_model),
      h("td", {}, addressText(i)));
  }

  async function bulkAction(action) {
    const names = selected();
    if (names.length && (await run(names, action, status))) load();
  }

  async function load() {
    try {
      [instances, hosts] = await Promise.all([api.listInstances(), api.listHosts().catch(() => hosts)]);
      drawHosts();
      draw();
    } catch (err) {
      status.textContent = errorText(err);
      status.hidden = false;
    }
  }

  const onEvent = (e) => {
    if (e.detail.kind.startsWith("instance.") || e.detail.kind === "operation.done") load();
  };
  window.addEventListener("vf:event", onEvent);
  drawHosts();
  await load();
  return () => window.removeEventListener("vf:event", onEvent);
}
