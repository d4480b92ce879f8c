// One instance: header with state, mode and actions; tabs Summary (with the owning host),
// Hardware, Console,
// Container or Snapshots and Backups, Metrics, Networks, and Settings (start at boot).
import * as api from "../api.js";
import { clear, DASH, devicesLabel, errorText, h, mib, modeBadge, modeOf, notice, powerBadge, when } from "../dom.js";
import { canOperate, isAdmin } from "../state.js";
import { ACTIONS, actionButton, allowed, run } from "../components/actions.js";
import { tabView } from "../components/tabs.js";
import { serialConsole } from "../components/serial.js";
import { graphicalConsole } from "../components/vnc.js";
import { metricsPanel } from "../components/metrics.js";
import { containerPanel } from "./container.js";

import { addressText, instanceNetworks } from "./networks.js";
import { hardwarePanel } from "../components/resources.js";
import { guestFacts } from "../components/guest.js";
import { bootPolicyPanel } from "../components/bootpolicy.js";

import { backupsPanel, snapshotsPanel } from "../panels/protection.js";
import { vmExportDialog } from "../components/imageforms.js";
import { failureText, track } from "../components/tasks.js";
import { stateBadge } from "../components/hostinfo.js";

const LIVE = ["running", "paused", "starting", "stopping"];

export async function renderInstance(main, name, initialTab = "summary") {
  let instance;
  try {
    instance = await api.getInstance(name);
  } catch (err) {
    clear(main, h("h1", {}, name), notice(errorText(err)), h("a", { href: "#/instances" }, "Back to instances"));
    return null;
  }
  let owner = await ownerOf(instance); // the owning host's record (null: none known)
  const head = h("div.instance-head");
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const done = h("p.notice.notice-info", { role: "status", hidden: true, id: "instance-done" });
  const tabs = tabView([
    { id: "summary", label: "Summary", render: (p) => summary(p, () => instance) },
    { id: "hardware", label: "Hardware", render: (p) => drawHardware(p) },
    { id: "console", label: "Console", render: (p) => consoles(p, () => instance) },
    ...(instance.spec.kind === "container"
      ? [{ id: "container", label: "Container", render: (p) => containerPanel(p, () => instance, reload) }] : []),
    ...(instance.spec.kind === "vm" ? [
      { id: "snapshots", label: "Snapshots", render: (p) => snapshotsPanel(p, name) },
      { id: "backups", label: "Backups", render: (p) => backupsPanel(p, name) },
    ] : []),
    { id: "metrics", label: "Metrics", render: (p) => metricsPanel(p, name) },
    { id: "networks", label: "Networks", render: (p) => instanceNetworks(p, instance) },
    { id: "settings", label: "Settings", render: (p) => drawSettings(p) },
  ], initialTab, (id) => history.replaceState(null, "", `#/instances/${name}/${id}`));

  clear(main, h("nav.crumbs", { "aria-label": "Breadcrumb" }, h("a", { href: "#/instances" }, "Instances"), " / ", name),
    head, status, done, tabs.element);

  // The head's buttons are made once and only their state changes on a refresh: a button
  // replaced under the pointer between mouse-down and mouse-up loses the user's click.
  const title = h("h1");
  const buttons = canOperate() ? Object.keys(ACTIONS).map((action) => [action, actionButton(action, () => act(action), true)]) : [];
  const exportButton = canOperate() && isAdmin() && instance.spec.kind === "vm" ? h("button", {
    type: "button", id: "export-vm", disabled: true,
    title: "Export the stopped VM as an OVA package or one disk", onclick: () => vmExportDialog(instance, exportOp, exported),
  }, "Export…") : null;
  clear(head, title, buttons.length ? h("div.actions", { role: "group", "aria-label": "Instance actions" },
    buttons.map(([, b]) => b), exportButton) : null);

  function drawHead() {
    const power = instance.status.power;
    clear(title, name, " ", powerBadge(power), " ", modeBadge(modeOf(instance)));
    for (const [action, button] of buttons) button.disabled = !allowed(action, power);
    if (exportButton) exportButton.disabled = !["stopped", "crashed"].includes(power);
  }

  // An export's operation, followed in the Tasks panel; failures shown in the page's alert.
  async function exportOp(promise) {
    status.hidden = true;
    try {
      const op = await track(await promise);
      if (op.status !== "success") throw new Error(failureText(op));
      return op;
    } catch (err) {
      status.textContent = errorText(err);
      status.hidden = false;
      return null;
    }
  }

  function exported(text) {
    clear(done, text);
    done.hidden = false;
  }

  async function act(action) {
    for (const b of head.querySelectorAll("[data-action]")) b.disabled = true;
    const ok = await run([name], action, status);
    if (ok && action === "delete") {
      location.hash = "#/instances";
      return;
    }
    await reload();
  }

  let left = false; // an answer arriving after the user left must not redraw the page
  async function reload() {
    try {
      instance = await api.getInstance(name);
      owner = await ownerOf(instance); // it may have moved, its host gone offline
    } catch (err) {
      if (left) return;
      if (err.status === 404) {
        clear(main, h("h1", {}, name), notice(`Instance ${name} no longer exists.`, "info"), h("a", { href: "#/instances" }, "Back to instances"));
        return;
      }
    }
    if (left) return;
    drawHead();
    const current = main.querySelector("[role=tab][aria-selected=true]");
    if (current && current.dataset.tab === "summary") summaryRefresh();
  }

  function drawHardware(panel, message = "") {
    panel.replaceChildren();
    hardwarePanel(panel, instance, async (done) => { await reload(); drawHardware(panel, done); }, message);
  }

  function drawSettings(panel, message = "") {
    panel.replaceChildren(bootPolicyPanel(instance, async (done) => { await reload(); drawSettings(panel, done); }, message));
  }

  let summaryRefresh = () => {};
  function summary(panel, getInstance) {
    const draw = () => {
      const i = getInstance();
      const s = i.status;
      const guest = guestFacts(i);
      clear(panel,
        h("div.summary", {},
          h("dl.facts", {},
            fact("State", powerBadge(s.power)),
            fact("Host", ...hostFact(i, owner)),
            fact("Virtualization", modeBadge(modeOf(i)), " ", h("span.muted", {}, s.accel_reason || modeText(i))),
            fact("Devices", devicesLabel(i.spec.device_model)),
            i.spec.kind === "vm" ? fact("Firmware", firmwareText(i.spec)) : null,
            fact("Image", i.spec.image || DASH),
            fact("vCPUs", String(i.spec.vcpus)),
            fact("Memory", mib(i.spec.memory_mib)),
            fact("IP addresses", addressText(i)),
            fact("Guest agent IPs", guest.ips),
            fact("Guest agent", guest.os),
            fact("Started", LIVE.includes(s.power) ? when(s.started_at) : DASH),
            fact("QEMU", s.qemu_version || DASH),
            fact("Restarts", String(s.restarts)),
            s.exit_code == null ? null : fact("Exit code", String(s.exit_code)),
            s.error_code ? fact("Last error", `${s.error_message} [${s.error_code}]`) : null,
            s.reason ? fact("Reason", s.reason) : null),
          i.spec.kind === "container" ? null : screenshot(i)));
    };
    summaryRefresh = draw;
    draw();
    const timer = setInterval(() => {
      const img = panel.querySelector("img.screenshot");
      if (img && getInstance().status.power === "running") img.src = api.screenshotUrl(name);
    }, 5000);
    return () => { clearInterval(timer); summaryRefresh = () => {}; };
  }

  const onEvent = (e) => {
    const target = e.detail.target || "";
    if (target === name || target.endsWith(`/${name}`)) reload();
  };
  window.addEventListener("vf:event", onEvent);
  drawHead();
  tabs.start();
  return () => {
    left = true;
    window.removeEventListener("vf:event", onEvent);
    tabs.close();
  };
}

// The record of the host that owns ``instance``; null when it has no owner or the host is
// no longer listed (removed from the cluster).
async function ownerOf(instance) {
  if (!instance.owner) return null;
  try {
    return await api.hostRecord(instance.owner.host);
  } catch {
    return null;
  }
}

function hostFact(instance, owner) {
  if (!instance.owner) return [DASH];
  if (!owner) return [h("span", { id: "instance-host" }, `unknown host ${instance.owner.host}`), " ", h("span.muted", {}, "(no longer a member)")];
  return [h("a", { href: "#/hosts", id: "instance-host" }, owner.name), " ", stateBadge(owner.state)];
}

const FIRMWARE = { bios: "BIOS (SeaBIOS)", uefi: "UEFI", "uefi-secure": "UEFI with Secure Boot" };

function firmwareText(spec) {
  return [FIRMWARE[spec.firmware] || spec.firmware, spec.tpm ? "TPM 2.0" : null, spec.os === "windows" ? "Windows" : null]
    .filter(Boolean).join(" · ");
}

function fact(label, ...value) {
  return [h("dt", {}, label), h("dd", {}, ...value)];
}

function modeText(i) {
  const mode = modeOf(i);
  if (mode === "kvm") return "hardware-assisted";
  if (mode === "tcg") return "binary translation";
  return "OS-level";
}

function screenshot(i) {
  const running = ["running", "paused"].includes(i.status.power);
  if (!running) return h("figure.screenshot", {}, h("div.screenshot-off", {}, "No screen: the instance is not running."));
  const img = h("img.screenshot", { src: api.screenshotUrl(i.name), alt: `Screen of ${i.name}`, width: 320, height: 200 });
  const save = h("a", { href: api.screenshotUrl(i.name), download: `${i.name}.png`, id: "save-screenshot",
    onclick: () => { save.href = api.screenshotUrl(i.name); } }, "Save as PNG");
  const figure = h("figure.screenshot", {}, img, h("figcaption", {}, h("a", { href: `#/instances/${i.name}/console` }, "Open the console"), " · ", save));
  img.addEventListener("error", () => {
    figure.replaceChildren(h("div.screenshot-off", {}, "Screenshot not available."));
  }, { once: true });
  return figure;
}

function consoles(panel, getInstance) {
  const name = getInstance().name;
  const running = ["running", "paused"].includes(getInstance().status.power);
  const live = canOperate() && running;
  if (!canOperate()) panel.append(notice("Live consoles need the operator role: a console is a shell on the guest. Its console log is below.", "info"));
  else if (!running) panel.append(notice("The instance is not running: start it to use its consoles. Its console log is below.", "info"));
  const area = h("div.console-area");
  let close = null;
  const choose = (kind) => {
    if (close) close();
    area.replaceChildren();
    for (const b of switcher.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.kind === kind));
    close = kind === "serial" ? serialConsole(area, name) : kind === "vnc" ? graphicalConsole(area, name) : consoleLog(area, name);
  };
  const button = (kind, id, label, hidden = false) => h("button", { type: "button", id, hidden, dataset: { kind }, onclick: () => choose(kind) }, label);
  const switcher = h("div.console-switch", { role: "group", "aria-label": "Console type" },
    live ? button("serial", "console-serial", "Serial console") : null,
    live ? button("vnc", "console-vnc", "Graphical console", getInstance().spec.kind === "container") : null,
    button("log", "console-log", "Console log"));
  panel.append(switcher, area);
  choose(live ? "serial" : "log");
  return () => { if (close) close(); };
}

// The console log (a VM's serial output, a container init's), also once it stopped: what
// `virtfleet logs` prints, the last 64 KiB.
function consoleLog(area, name) {
  const text = h("pre.console-log", { id: "console-log-text", tabindex: "0", "aria-label": `Console log of ${name}` }, "Loading…");
  const load = async () => {
    try {
      const r = await api.get(`/1.0/instances/${api.enc(name)}/log?tail_bytes=65536`);
      text.textContent = r.log || "The log is empty.";
      text.scrollTop = text.scrollHeight;
    } catch (err) {
      text.textContent = errorText(err);
    }
  };
  area.append(h("div.actions", {}, h("button", { type: "button", onclick: load }, "Reload the log")), text);
  load();
  return null;
}
