// Templates: list with their clone defaults and linked clones; make one from a stopped VM
// or an image; deploy N clones (the create wizard, preset); delete (refused while clones
// use it, the error names them).
import * as api from "../api.js";
import { bytes, clear, DASH, errorText, h, when } from "../dom.js";
import { canOperate } from "../state.js";
import { confirmDialog } from "../components/confirm.js";
import { failureText, track } from "../components/tasks.js";
import { openCreateWizard } from "./create.js";

// "vcpus 2, memory_mib 512, nics user" from a template's defaults (unset ones left out).
export function defaultsText(defaults) {
  const parts = Object.entries(defaults || {})
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k} ${Array.isArray(v) ? v.map((x) => x.network || x.mode || JSON.stringify(x)).join(" ") || "none"
      : typeof v === "object" ? JSON.stringify(v) : v}`);
  return parts.length ? parts.join(", ") : "image defaults";
}

const linkedClones = (tpl, instances) =>
  instances.filter((i) => (i.spec.disks || []).some((d) => d.image === tpl.name)).map((i) => i.name);

export async function renderTemplates(main) {
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const done = h("p.notice.notice-info", { role: "status", hidden: true });
  const body = h("tbody");
  const create = h("section.card", { "aria-labelledby": "tpl-create-title" });
  clear(main,
    h("div.page-head", {}, h("h1", {}, "Templates")),
    status, done,
    h("div.table-wrap", {},
      h("table.templates", {},
        h("caption.sr-only", {}, "Templates: golden images clones are made from"),
        h("thead", {}, h("tr", {},
          ["Name", "Source", "Size", "Clone defaults", "Linked clones", "Created", ""].map((c) => h("th", { scope: "col" }, c)))),
        body)),
    canOperate() ? create : null);

  function report(err, ok) {
    status.textContent = err ? errorText(err) : "";
    status.hidden = !err;
    done.textContent = ok || "";
    done.hidden = !ok;
  }

  async function refresh() {
    const [templates, instances] = await Promise.all([api.get("/1.0/templates"), api.listInstances()]);
    clear(body, templates.length ? templates.map((t) => row(t, linkedClones(t, instances)))
      : h("tr", {}, h("td.muted", { colspan: 7 }, "No templates yet.")));
    if (canOperate()) drawCreate(instances);
  }

  function row(t, clones) {
    const actions = canOperate() ? [
      h("button.primary", { type: "button", dataset: { deploy: t.name }, "aria-label": `Deploy clones of ${t.name}`,
        onclick: () => openCreateWizard({ kind: "template", source: t.name }) }, "Deploy"),
      h("button.danger", { type: "button", dataset: { delete: t.name }, "aria-label": `Delete template ${t.name}`,
        onclick: () => remove(t) }, "Delete"),
    ] : [];
    return h("tr", { dataset: { template: t.name } },
      h("th", { scope: "row" }, t.name),
      h("td", {}, t.source || DASH),
      h("td", {}, bytes(t.actual_size_bytes)),
      h("td.defaults", {}, defaultsText(t.defaults)),
      h("td.clones", {}, clones.length ? clones.map((n, i) => [i ? ", " : "", h("a", { href: `#/instances/${n}` }, n)]) : "none"),
      h("td", {}, when(t.created_at)),
      h("td", {}, h("div.actions", {}, actions)));
  }

  async function remove(t) {
    const ok = await confirmDialog({ title: "Delete template?", body: `Delete template ${t.name}? Refused while clones use it.`, confirm: "Delete" });
    if (!ok) return;
    report(null);
    try {
      await api.del(`/1.0/templates/${api.enc(t.name)}`);
      report(null, `Template ${t.name} deleted.`);
      await refresh();
    } catch (err) {
      report(err);
    }
  }

  function drawCreate(instances) {
    const stopped = instances.filter((i) => i.spec.kind !== "container" && ["stopped", "crashed"].includes(i.status.power));
    const from = h("select", { id: "tpl-from", required: true },
      stopped.map((i) => h("option", { value: `instance:${i.name}` }, `VM ${i.name} (stopped)`)));
    const name = h("input", { id: "tpl-name", required: true, pattern: "[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?", autocomplete: "off" });
    const agent = h("input", { type: "checkbox", id: "tpl-agent" }); // a VM's template keeps the VM's own setting
    const form = h("form.inline-form", {
      onsubmit: async (e) => {
        e.preventDefault();
        const [kind, source] = from.value.split(/:(.*)/s);
        report(null);
        try {
          const body = { name: name.value, [kind]: source };
          if (kind === "image" && agent.checked) body.defaults = { guest_agent: true };
          const op = await track(await api.post("/1.0/templates", body));
          if (op.status !== "success") return report({ message: failureText(op) });
          report(null, `Template ${name.value} created.`);
          await refresh();
        } catch (err) {
          report(err);
        }
      },
    },
    h("div.field", {}, h("label", { for: "tpl-from" }, "From"), from),
    h("div.field", {}, h("label", { for: "tpl-name" }, "Template name"), name),
    h("label.check", { for: "tpl-agent" }, agent, "Clones get a guest agent channel (image sources only; a VM's template keeps its own)"),
    h("button.primary", { type: "submit" }, "Make template"));
    clear(create, h("h2", { id: "tpl-create-title" }, "New template"), form);
    api.listImages().then((images) => from.append(...images.filter((i) => i.kind !== "template" && !["rootfs-tar", "oci"].includes(i.format))
      .map((i) => h("option", { value: `image:${i.name}` }, `Image ${i.name}`)))).catch(report);
  }

  await refresh();
}
