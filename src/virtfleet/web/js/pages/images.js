// Images and templates: sizes, checksums, sources; an image's detail (OCI layers and config);
// build an image (operators); import a disk image, an OVA package or an OCI layout / `docker
// save` archive, and export an image (admins; components/imageforms.js); make a template
// from an image; deploy N linked or full clones from a template (one all-or-nothing
// operation); delete.
import * as api from "../api.js";
import { bytes, clear, errorText, h, when } from "../dom.js";
import { canOperate, isAdmin } from "../state.js";
import { imageDetail } from "../components/imagedetail.js";
import { confirmDialog } from "../components/confirm.js";
import { failureText, track } from "../components/tasks.js";
import { buildForm, diskImportForm, EXPORT_FORMATS, EXPORT_HINT, exportDialog, ovaImportForm } from "../components/imageforms.js";

export async function renderImages(main) {
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const notice = h("p.notice.notice-info", { role: "status", hidden: true, id: "images-done" });
  const body = h("tbody");
  const deploy = h("section.card", { hidden: true, "aria-labelledby": "deploy-title" });
  const detail = h("section.card", { hidden: true, "aria-labelledby": "image-detail-title", id: "image-detail" });
  clear(main,
    h("div.page-head", {}, h("h1", {}, "Images and templates")),
    status, notice,
    h("div.table-wrap", {},
      h("table.images", {},
        h("caption.sr-only", {}, "Images and templates in the store"),
        h("thead", {}, h("tr", {},
          ["Name", "Kind", "Virtual size", "On disk", "Source", "Created", ""].map((c) => h("th", { scope: "col" }, c)))),
        body)),
    detail,
    deploy,
    canOperate() ? buildForm(runOp) : null,
    isAdmin() ? [diskImportForm(runOp), ovaImportForm(runOp), importForm()] : null);

  async function refresh() {
    const images = await api.listImages();
    clear(body, ...images.map((img) => row(img)));
  }

  function report(err) {
    status.textContent = err ? errorText(err) : "";
    status.hidden = !err;
    notice.hidden = true;
  }

  async function runOp(promise) {
    report(null);
    try {
      const op = await track(await promise);
      if (op.status !== "success") report({ message: failureText(op) });
      await refresh();
      return op;
    } catch (err) {
      report(err);
      return null;
    }
  }

  function row(img) {
    const actions = [h("button", { type: "button", dataset: { details: img.name }, onclick: () => showDetail(img.name) }, "Details")];
    if (canOperate()) {
      if (img.kind === "template") {
        actions.push(h("button.primary", { type: "button", dataset: { deploy: img.name }, onclick: () => showDeploy(img) }, "Deploy"));
      } else {
        actions.push(h("button", { type: "button", dataset: { templatize: img.name }, onclick: () => makeTemplate(img) }, "Make template"));
      }
      actions.push(h("button.danger", { type: "button", dataset: { delete: img.name }, onclick: () => remove(img) }, "Delete"));
    }
    if (isAdmin() && !["rootfs-tar", "oci"].includes(img.format)) {
      actions.push(h("button", { type: "button", dataset: { export: img.name }, "aria-label": `Export ${img.name}`, onclick: () => exportImage(img) }, "Export…"));
    }
    return h("tr", { dataset: { image: img.name } },
      h("th", { scope: "row" }, img.name),
      h("td", {}, img.kind),
      h("td", {}, bytes(img.virtual_size_bytes)),
      h("td", {}, bytes(img.actual_size_bytes)),
      h("td", {}, img.source || img.builder || ""),
      h("td", {}, when(img.created_at)),
      h("td", {}, actions));
  }

  async function showDetail(name) {
    report(null);
    try {
      clear(detail, imageDetail(await api.get(`/1.0/images/${api.enc(name)}`)));
      detail.hidden = false;
      detail.querySelector("h2").tabIndex = -1;
      detail.querySelector("h2").focus();
    } catch (err) {
      report(err);
    }
  }

  // The path is read by the daemon: a file or directory in its import directory (only the
  // local root over the Unix socket may name any host path; the server enforces it).
  function importForm() {
    const name = h("input", { id: "oci-name", required: true, pattern: "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", autocomplete: "off" });
    const path = h("input", { id: "oci-path", autocomplete: "off", spellcheck: "false", "aria-describedby": "oci-path-hint" });
    const from = h("input", { id: "oci-from", autocomplete: "off", spellcheck: "false", pattern: "docker://.+", placeholder: "docker://registry.example/app:1", "aria-describedby": "oci-from-hint" });
    const done = h("p.muted", { role: "status", id: "oci-status" });
    const submit = h("button.primary", { type: "submit" }, "Import");
    const form = h("form.inline-form", {
      id: "oci-import", "aria-labelledby": "oci-import-title",
      onsubmit: async (e) => {
        e.preventDefault();
        submit.disabled = true;
        done.textContent = "";
        const source = from.value.trim() ? { from_ref: from.value.trim() } : { path: path.value.trim() };
        const op = await runOp(api.post("/1.0/images/import-oci", { name: name.value.trim(), ...source }));
        submit.disabled = false;
        if (op && op.status === "success") {
          done.textContent = `Imported ${name.value.trim()}.`;
          await showDetail(name.value.trim());
        }
      },
    },
    h("div.field", {}, h("label", { for: "oci-name" }, "Image name"), name),
    h("div.field", {}, h("label", { for: "oci-path" }, "Path on the host"), path,
      h("small.hint", { id: "oci-path-hint" }, "An OCI image layout (directory or tarball) or a docker save archive in the daemon's import directory.")),
    h("div.field", {}, h("label", { for: "oci-from" }, "Or a registry image"), from,
      h("small.hint", { id: "oci-from-hint" }, "docker://REFERENCE: the daemon fetches it with skopeo (instead of a path).")),
    submit, done);
    return h("section.card", { "aria-labelledby": "oci-import-title" },
      h("h2", { id: "oci-import-title" }, "Import an OCI or Docker image"), form);
  }

  function exportImage(img) {
    exportDialog({
      title: `Export image ${img.name}`, hint: EXPORT_HINT, suggested: `${img.name}.qcow2`, formats: EXPORT_FORMATS, runOp,
      send: (path, format) => api.post(`/1.0/images/${api.enc(img.name)}/export`, { path, format }),
      onDone: (r) => { notice.textContent = `Exported ${r.image} as ${r.format} to ${r.path}.`; notice.hidden = false; },
    });
  }

  async function makeTemplate(img) {
    const name = `${img.name}-tpl`;
    await runOp(api.post("/1.0/templates", { name, image: img.name }));
  }

  async function remove(img) {
    const ok = await confirmDialog({
      title: `Delete ${img.kind}?`,
      body: `Delete ${img.kind} ${img.name}? Refused while VMs use it.`,
      confirm: "Delete",
    });
    if (!ok) return;
    report(null);
    try {
      await api.del(img.kind === "template" ? `/1.0/templates/${api.enc(img.name)}` : `/1.0/images/${api.enc(img.name)}`);
      await refresh();
    } catch (err) {
      report(err);
    }
  }

  function showDeploy(img) {
    const names = h("input", { id: "deploy-names", required: true, value: "web-{1..3}" });
    const mode = h("select", { id: "deploy-mode" }, h("option", { value: "linked" }, "Linked clones (qcow2 overlays)"),
      h("option", { value: "full" }, "Full clones (independent copies)"));
    const start = h("input", { id: "deploy-start", type: "checkbox", checked: true });
    const result = h("p.muted", { role: "status" });
    const form = h("form", {
      onsubmit: async (e) => {
        e.preventDefault();
        const op = await runOp(api.post(`/1.0/templates/${api.enc(img.name)}/instances`,
          { names: names.value.split(/\s+/).filter(Boolean), clone: mode.value, start: start.checked }));
        if (op && op.status === "success") result.textContent = `Created ${op.result.instances.join(", ")}`;
      },
    },
    h("label", { for: "deploy-names" }, "Names (web-{1..10} expands)"), names,
    h("label", { for: "deploy-mode" }, "Clone type"), mode,
    h("label", {}, start, " Start them"),
    h("button.primary", { type: "submit" }, "Deploy"));
    clear(deploy, h("h2", { id: "deploy-title" }, `Deploy from ${img.name}`), form, result);
    deploy.hidden = false;
    names.focus();
  }

  await refresh();
}
