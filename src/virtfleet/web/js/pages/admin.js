// Administration: one's own password (everyone), users (create, change role, reset
// password, disable/enable, delete; admins only), API
// tokens (create with role and expiry, the secret shown once; revoke), and links to the
// audit log and the event history (pages/activity.js) and the operations (pages/operations.js).
import * as api from "../api.js";
import { clear, DASH, errorText, h, when } from "../dom.js";
import { canOperate, isAdmin, session } from "../state.js";
import { confirmDialog } from "../components/confirm.js";

const ROLES = ["viewer", "operator", "admin"];
const EXPIRIES = [["86400", "1 day"], ["604800", "7 days"], ["2592000", "30 days"], ["31536000", "1 year"], ["never", "Never"]];

export function adminNav(current) {
  return h("nav.subnav", { "aria-label": "Administration" }, h("ul", {},
    [["users", "Users and tokens"], ["audit", "Audit log"], ["events", "Event history"], ["operations", "Operations"]].map(([id, label]) =>
      h("li", {}, h("a", { href: `#/admin/${id}`, "aria-current": id === current ? "page" : null }, label)))));
}

function select(id, options, value) {
  return h("select", { id }, options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
}

export async function renderUsers(main) {
  const status = h("p.notice.notice-error", { role: "alert", hidden: true });
  const done = h("p.notice.notice-info", { role: "status", hidden: true });
  const users = h("section", { "aria-labelledby": "users-title" });
  const tokens = h("section", { "aria-labelledby": "tokens-title" });
  clear(main, h("div.page-head", {}, h("h1", {}, "Administration")), adminNav("users"), status, done, users, tokens,
    passwordForm());

  function report(err, ok) {
    status.textContent = err ? errorText(err) : "";
    status.hidden = !err;
    done.textContent = ok || "";
    done.hidden = !ok;
  }
  async function attempt(fn, ok) {
    report(null);
    try {
      await fn();
      report(null, ok);
      await load();
    } catch (err) {
      report(err);
    }
  }

  async function load() {
    drawUsers(isAdmin() ? await api.get("/1.0/users") : null);
    drawTokens(await api.get("/1.0/tokens"));
  }

  function drawUsers(list) {
    if (!list) {
      clear(users, h("h2", { id: "users-title" }, "Users"), h("p.muted", {}, `Only admins see and manage users. You are ${session.username} (${session.role}).`));
      return;
    }
    clear(users, h("h2", { id: "users-title" }, "Users"),
      h("div.table-wrap", {}, h("table", {}, h("caption.sr-only", {}, "Users"),
        h("thead", {}, h("tr", {}, ["User", "Role", "Created", "State", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, list.map(userRow)))),
      userForm());
  }

  function userRow(u) {
    const self = u.username === session.username;
    const role = h("select", { "aria-label": `Role of ${u.username}`, disabled: self, onchange: () =>
      attempt(() => api.request("PATCH", `/1.0/users/${api.enc(u.username)}`, { role: role.value }),
        `${u.username} is now ${role.value}.`) },
    ROLES.map((r) => h("option", { value: r, selected: r === u.role }, r)));
    return h("tr", { dataset: { user: u.username } },
      h("th", { scope: "row" }, u.username), h("td", {}, role), h("td", {}, when(u.created_at)),
      h("td.user-state", {}, u.disabled ? "disabled" : "active"),
      h("td", {}, h("div.actions", {},
        h("button", { type: "button", "aria-label": `Reset password of ${u.username}`, onclick: () => resetPassword(u) }, "Reset password"),
        self ? null : h("button", { type: "button", "aria-label": `${u.disabled ? "Enable" : "Disable"} ${u.username}`,
          onclick: () => attempt(() => api.request("PATCH", `/1.0/users/${api.enc(u.username)}`, { disabled: !u.disabled }),
            `${u.username} ${u.disabled ? "enabled" : "disabled"}.`) }, u.disabled ? "Enable" : "Disable"),
        self ? null : h("button.danger", { type: "button", "aria-label": `Delete user ${u.username}`,
          onclick: () => removeUser(u) }, "Delete"))));
  }

  function userForm() {
    const name = h("input", { id: "user-name", required: true, autocomplete: "off", pattern: "[a-z_][a-z0-9_-]{0,31}" });
    const password = h("input", { id: "user-password", type: "password", required: true, minlength: 8, autocomplete: "new-password" });
    const role = select("user-role", ROLES.map((r) => [r, r]), "viewer");
    return h("form.inline-form.card", { "aria-labelledby": "user-form-title", onsubmit: (e) => {
      e.preventDefault();
      attempt(() => api.post("/1.0/users", { username: name.value, password: password.value, role: role.value }),
        `User ${name.value} created (${role.value}).`);
    } },
    h("h3.full", { id: "user-form-title" }, "New user"),
    h("div.field", {}, h("label", { for: "user-name" }, "Username"), name),
    h("div.field", {}, h("label", { for: "user-password" }, "Initial password"), password),
    h("div.field", {}, h("label", { for: "user-role" }, "Role"), role),
    h("button.primary", { type: "submit" }, "Create user"));
  }

  async function resetPassword(u) {
    const password = window.prompt(`New password for ${u.username} (at least 8 characters):`);
    if (!password) return;
    attempt(() => api.put(`/1.0/users/${api.enc(u.username)}/password`, { password }),
      `Password of ${u.username} reset: their sessions and tokens are revoked.`);
  }

  async function removeUser(u) {
    if (!(await confirmDialog({ title: "Delete user?", body: `Delete user ${u.username}? Their tokens stop working.`, confirm: "Delete" }))) return;
    attempt(() => api.del(`/1.0/users/${api.enc(u.username)}`), `User ${u.username} deleted.`);
  }

  // `user passwd` for oneself: the current password proves it is really you.
  function passwordForm() {
    const current = h("input", { id: "my-current-password", type: "password", required: true, autocomplete: "current-password" });
    const next = h("input", { id: "my-new-password", type: "password", required: true, minlength: 8, autocomplete: "new-password" });
    return h("form.inline-form.card", { id: "my-password", "aria-labelledby": "my-password-title", onsubmit: (e) => {
      e.preventDefault();
      attempt(async () => {
        await api.put(`/1.0/users/${api.enc(session.username)}/password`, { password: next.value, current_password: current.value });
        current.value = next.value = "";
      }, "Your password is changed: your other sessions ended and your API tokens were revoked.");
    } },
    h("h2.full", { id: "my-password-title" }, `Your password (${session.username})`),
    h("div.field", {}, h("label", { for: "my-current-password" }, "Current password"), current),
    h("div.field", {}, h("label", { for: "my-new-password" }, "New password (8 characters or more)"), next),
    h("button", { type: "submit" }, "Change my password"));
  }

  function drawTokens(list) {
    clear(tokens, h("h2", { id: "tokens-title" }, isAdmin() ? "API tokens (everyone's)" : "Your API tokens"),
      h("div.table-wrap", {}, h("table", {}, h("caption.sr-only", {}, "API tokens"),
        h("thead", {}, h("tr", {}, ["Token", "Owner", "Role", "Description", "Created", "Expires", "State", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, list.length ? list.map(tokenRow) : h("tr", {}, h("td.muted", { colspan: 8 }, "No tokens."))))),
      canOperate() ? tokenForm() : null);
  }

  function tokenRow(t) {
    const state = t.revoked_at ? `revoked ${when(t.revoked_at)}` : t.expires_at && new Date(t.expires_at) < new Date() ? "expired" : "active";
    return h("tr", { dataset: { token: t.id } },
      h("th", { scope: "row" }, h("code", {}, t.id)), h("td", {}, t.owner), h("td", {}, t.role),
      h("td", {}, t.description || DASH), h("td", {}, when(t.created_at)), h("td", {}, t.expires_at ? when(t.expires_at) : "never"),
      h("td.token-state", {}, state),
      h("td", {}, canOperate() && !t.revoked_at ? h("button.danger", { type: "button", "aria-label": `Revoke token ${t.id}`,
        onclick: () => revoke(t) }, "Revoke") : null));
  }

  async function revoke(t) {
    if (!(await confirmDialog({ title: "Revoke token?", body: `Revoke token ${t.id}? Programs using it get 401 from now on.`, confirm: "Revoke" }))) return;
    attempt(() => api.del(`/1.0/tokens/${api.enc(t.id)}`), `Token ${t.id} revoked.`);
  }

  function tokenForm() {
    const role = select("token-role", ROLES.filter((r) => ROLES.indexOf(r) <= ROLES.indexOf(session.role)).map((r) => [r, r]), "viewer");
    const expiry = select("token-expiry", EXPIRIES, "2592000");
    const description = h("input", { id: "token-description", maxlength: 200, autocomplete: "off" });
    const secret = h("div", { id: "new-token" });
    return h("form.inline-form.card", { "aria-labelledby": "token-form-title", onsubmit: async (e) => {
      e.preventDefault();
      const body = { role: role.value, description: description.value };
      if (expiry.value === "never") body.never_expires = true;
      else body.expires_in_s = Number(expiry.value);
      report(null);
      try {
        const made = await api.post("/1.0/tokens", body);
        await load();
        showSecret(made);
      } catch (err) {
        report(err);
      }
    } },
    h("h3.full", { id: "token-form-title" }, "New API token"),
    h("div.field", {}, h("label", { for: "token-role" }, "Token role"), role),
    h("div.field", {}, h("label", { for: "token-expiry" }, "Expires after"), expiry),
    h("div.field", {}, h("label", { for: "token-description" }, "Description"), description),
    h("button.primary", { type: "submit" }, "Create token"), secret);
  }

  // The secret exists only in this response: shown once, in a box the user copies from.
  function showSecret(made) {
    const box = document.getElementById("new-token") || tokens.appendChild(h("div", { id: "new-token" }));
    const value = h("input", { id: "token-secret", readonly: true, value: made.token, size: 40 });
    clear(box, h("div.notice.notice-info.full", { role: "status" },
      h("p", {}, `Token ${made.id} created. Copy it now: it is never shown again.`),
      h("label", { for: "token-secret" }, "Token secret "), value,
      h("p.hint", {}, "Send it as: Authorization: Bearer <token>")));
    value.focus();
    value.select();
  }

  await load();
}
