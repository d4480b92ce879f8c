// One image's detail (GET /1.0/images/{name}): checksum and source, and for an imported
// OCI or Docker image its config (entrypoint, cmd, env, working dir, user, ports, labels,
// architecture) and its layers, lowest first, with digest, size and entry count.
import { bytes, DASH, h } from "../dom.js";

const list = (items) => (items && items.length ? items.join(" ") : DASH);

export function imageDetail(img) {
  return [
    h("h2", { id: "image-detail-title" }, `Image ${img.name}`),
    h("dl.facts", {},
      fact("Format", img.format),
      fact("SHA-256", h("code.digest", {}, img.sha256 || DASH)),
      fact("Source", img.source || img.builder || DASH)),
    img.oci ? ociDetail(img.oci) : null,
  ];
}

function ociDetail(oci) {
  const c = oci.config;
  const labels = Object.entries(c.labels || {}).map(([k, v]) => `${k}=${v}`);
  return [
    h("h3", {}, "Container config"),
    h("dl.facts", { id: "oci-config" },
      fact("Entrypoint", list(c.entrypoint)),
      fact("Command", list(c.cmd)),
      fact("Environment", c.env && c.env.length ? h("ul.plain", {}, c.env.map((e) => h("li", {}, e))) : DASH),
      fact("Working directory", c.working_dir || DASH),
      fact("User", c.user || DASH),
      fact("Exposed ports", list(c.exposed_ports)),
      fact("Labels", list(labels)),
      fact("Platform", `${c.os}/${c.architecture || DASH}`),
      oci.stripped_setid && oci.stripped_setid.length ? fact("Set-id bits stripped", list(oci.stripped_setid)) : null,
      oci.stripped_caps && oci.stripped_caps.length ? fact("File capabilities stripped", list(oci.stripped_caps)) : null),
    h("h3", {}, `Layers (${oci.layers.length}, lowest first)`),
    h("div.table-wrap", {},
      h("table.layers", { id: "oci-layers" },
        h("caption.sr-only", {}, "Layers of the image, lowest first"),
        h("thead", {}, h("tr", {}, ["#", "Digest", "Size", "Entries"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, oci.layers.map((l, i) => h("tr", { dataset: { layer: l.digest || l.diff_id } },
          h("td", {}, String(i + 1)),
          h("td", {}, h("code.digest", { title: `diff id ${l.diff_id}` }, l.digest || l.diff_id)),
          h("td", {}, bytes(l.size_bytes)),
          h("td", {}, String(l.entries))))))),
  ];
}

function fact(label, ...value) {
  return [h("dt", {}, label), h("dd", {}, ...value)];
}
