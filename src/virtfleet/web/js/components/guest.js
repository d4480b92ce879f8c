// What the guest agent reports (GET /1.0/instances/{name}/guest): OS and IP addresses,
// filled in asynchronously; a dash when the VM has no agent channel or no answer.
import * as api from "../api.js";
import { DASH, h } from "../dom.js";

export function guestFacts(instance) {
  const os = h("span", { dataset: { guestOs: "" } }, DASH);
  const ips = h("span", { dataset: { guestIps: "" } }, DASH);
  if (instance.spec.guest_agent && instance.status.power === "running") {
    api.get(`/1.0/instances/${api.enc(instance.name)}/guest`).then((g) => {
      if (!g.agent) {
        os.textContent = `no agent answer (${g.error})`;
        return;
      }
      os.textContent = `${g.os_name} (kernel ${g.kernel}), hostname ${g.hostname}`;
      const addresses = g.interfaces.filter((n) => n.name !== "lo")
        .flatMap((n) => n.addresses.map((a) => `${n.name} ${a}`));
      ips.textContent = addresses.join(", ") || DASH;
    }).catch(() => {});
  }
  return { os, ips };
}
