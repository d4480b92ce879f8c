// Virtual networks: the Networks page (list, create for admins, delete) and the
// instance page's Networks tab (each NIC's network, MAC and leased IP).
import * as api from "../api.js";
import { clear, DASH, errorText, h, notice } from "../dom.js";
import { session } from "../state.js";
import { confirmDialog } from "../components/confirm.js";

const isAdmin = () => session.role === "admin";

export async function renderNetworks(main) {
  const body = h("tbody");
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const form = isAdmin() ? createForm(status, load) : null;
  clear(main,
    h("div.page-head", {}, h("h1", {}, "Networks")),
    status,
    h("div.table-wrap", {},
      h("table.networks", {},
        h("caption.sr-only", {}, "Virtual networks on this host"),
        h("thead", {}, h("tr", {},
          ["Name", "Mode", "Subnet", "VLAN", "Bridge", "DHCP/DNS", "Leases", "Used by", ""].map((c) => h("th", { scope: "col" }, c)))),
        body)),
    form);

  async function load() {
    try {
      const nets = await api.listNetworks();
      clear(body, nets.length ? nets.map(row) : h("tr", {}, h("td.muted", { colspan: 9 }, "No networks yet.")));
      status.hidden = true;
    } catch (err) {
      status.textContent = errorText(err);
      status.hidden = false;
    }
  }

  function row(n) {
    const s = n.spec;
    const st = n.state;
    const remove = isAdmin() ? h("button.danger", {
      type: "button", dataset: { deleteNetwork: n.name }, onclick: () => removeNetwork(n.name),
    }, "Delete") : null;
    return h("tr", { dataset: { name: n.name } },
      h("th", { scope: "row" }, n.name),
      h("td", {}, s.mode),
      h("td", {}, s.subnet || DASH),
      h("td", {}, s.vlan ? String(s.vlan) : DASH),
      h("td", {}, st.present ? st.bridge : `${st.bridge} (missing)`),
      h("td", {}, st.dnsmasq_pid ? "running" : DASH),
      h("td", {}, st.leases.length ? st.leases.map((l) => `${l.ip} ${l.hostname || l.mac}`).join(", ") : DASH),
      h("td", {}, st.users.length ? st.users.map((u) => h("a", { href: `#/instances/${u}` }, u, " ")) : DASH),
      h("td", {}, remove));
  }

  async function removeNetwork(name) {
    const ok = await confirmDialog({ title: `Delete network ${name}?`, body: "Its bridge, DHCP/DNS and rules are removed.", confirm: "Delete" });
    if (!ok) return;
    try {
      await api.deleteNetwork(name);
      await load();
    } catch (err) {
      status.textContent = errorText(err);
      status.hidden = false;
    }
  }

  const onEvent = (e) => { if (e.detail.kind.startsWith("network.")) load(); };
  window.addEventListener("vf:event", onEvent);
  await load();
  return () => window.removeEventListener("vf:event", onEvent);
}

function field(id, label, attrs = {}) {
  return h("div.field", {}, h("label", { for: id }, label), h("input", { id, name: id, ...attrs }));
}

function createForm(status, reload) {
  const mode = h("select", { id: "net-mode", name: "net-mode" },
    ["nat", "isolated", "bridged"].map((m) => h("option", { value: m }, m)));
  const form = h("form.network-create", { "aria-labelledby": "net-create-title" },
    h("h2", { id: "net-create-title" }, "Create a network"),
    field("net-name", "Name", { required: true, placeholder: "lan0", maxlength: 15 }),
    h("div.field", {}, h("label", { for: "net-mode" }, "Mode"), mode),
    field("net-subnet", "IPv4 subnet", { placeholder: "10.10.0.0/24" }),
    field("net-parent", "Parent bridge (bridged)", { placeholder: "br0" }),
    field("net-vlan", "VLAN id (bridged)", { type: "number", min: 1, max: 4094 }),
    h("button.primary", { type: "submit" }, "Create network"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = (id) => form.querySelector(`#${id}`).value.trim();
    const spec = { name: value("net-name"), mode: mode.value };
    if (value("net-subnet")) spec.subnet = value("net-subnet");
    if (value("net-parent")) spec.parent = value("net-parent");
    if (value("net-vlan")) spec.vlan = Number(value("net-vlan"));
    try {
      await api.createNetwork(spec);
      form.reset();
      await reload();
    } catch (err) {
      status.textContent = errorText(err);
      status.hidden = false;
    }
  });
  return form;
}

// The instance page's tab: one row per NIC.
export function instanceNetworks(panel, instance) {
  const nics = instance.spec.nics;
  if (!nics.length) {
    panel.append(notice("This instance has no network interface.", "info"));
    return;
  }
  const rows = nics.map((nic, index) => {
    const ips = (instance.addresses || []).filter((a) => a.nic === index).map((a) => a.ip);
    const where = nic.mode === "network" ? h("a", { href: "#/networks" }, nic.network) : `${nic.mode}${nic.restrict ? " (restricted)" : ""}`;
    return h("tr", {},
      h("th", { scope: "row" }, `eth${index}`),
      h("td", {}, where),
      h("td", {}, nic.model || instance.spec.device_model),
      h("td", {}, nic.mac || DASH),
      h("td", {}, ips.length ? ips.join(", ") : DASH));
  });
  panel.append(h("table.nics", {},
    h("caption.sr-only", {}, "Network interfaces"),
    h("thead", {}, h("tr", {}, ["NIC", "Network", "Model", "MAC", "IP address"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows)));
}

export function addressText(instance) {
  const ips = (instance.addresses || []).map((a) => a.ip);
  return ips.length ? ips.join(", ") : DASH;
}
