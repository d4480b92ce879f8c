// The login form: POST /1.0/login sets the session and CSRF cookies.
import * as api from "../api.js";
import { clear, errorText, h } from "../dom.js";

export function renderLogin(main, onLoggedIn) {
  const message = h("p.notice.notice-error", { role: "alert", hidden: true });
  const username = h("input", { id: "login-username", name: "username", autocomplete: "username", required: true });
  const password = h("input", {
    id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true,
  });
  const submit = h("button.primary", { type: "submit" }, "Log in");
  const form = h("form.login", { "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "virtfleet"),
    h("p.muted", {}, "Virtual machines and containers on this host, in one place."),
    h("label", { for: "login-username" }, "Username"), username,
    h("label", { for: "login-password" }, "Password"), password,
    message, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    message.hidden = true;
    try {
      const result = await api.login(username.value, password.value);
      await onLoggedIn({ username: result.username, role: result.role });
    } catch (err) {
      message.textContent = errorText(err);
      message.hidden = false;
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  clear(main, h("section.login-page", {}, form));
  username.focus();
}
