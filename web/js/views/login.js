// The login screen: the first thing a new visitor sees.

import { api } from "../api.js";
import { h } from "../dom.js";
import { field, formErrorBox, showFormErrors, withBusyButton } from "../forms.js";

export function renderLogin(container, { message, onLoggedIn }) {
  const username = h("input", { name: "username", autocomplete: "username", required: true, autocapitalize: "none" });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit", class: "button primary" }, "Log in");
  const form = h(
    "form",
    { class: "login-form", novalidate: true },
    formErrorBox(),
    field({ label: "Username", name: "username", control: username }),
    field({ label: "Password", name: "password", control: password }),
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const problems = [];
    if (!username.value.trim()) problems.push({ field: "username", message: "Enter your username." });
    if (!password.value) problems.push({ field: "password", message: "Enter your password." });
    if (problems.length) {
      showFormErrors(form, problems);
      return;
    }
    await withBusyButton(submit, "Logging in…", async () => {
      try {
        const body = { username: username.value.trim(), password: password.value };
        const result = await api("POST", "/api/users/login", { body, auth: false });
        onLoggedIn({ token: result.token, role: result.role, expires_at: result.expires_at, username: body.username });
      } catch (error) {
        password.value = "";
        showFormErrors(form, error);
      }
    });
  });
  container.append(
    h(
      "section",
      { class: "login panel" },
      h("h1", {}, "Log in to arkflow"),
      h("p", { class: "lead" }, "Generate images with Seedream and videos with Seedance."),
      message ? h("p", { class: "notice", role: "status" }, message) : null,
      form,
    ),
  );
  username.focus();
}
