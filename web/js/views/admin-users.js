// Admin: users; create, change role, disable/enable, reset password, delete.

import { api } from "../api.js";
import { confirmDialog, openDialog } from "../dialog.js";
import { formatDateTime, h, toast } from "../dom.js";
import { field, formErrorBox, select, showFormErrors, toastError, withBusyButton } from "../forms.js";
import { renderAdminTable } from "./admin-table.js";

const ROLES = [["user", "User"], ["admin", "Admin"]];
const MIN_PASSWORD_CHARS = 8;

function passwordProblem(password) {
  return password.length < MIN_PASSWORD_CHARS ? `At least ${MIN_PASSWORD_CHARS} characters.` : null;
}

function userDialog(onSaved) {
  const username = h("input", { autocomplete: "off", autocapitalize: "none", required: true });
  const password = h("input", { type: "password", autocomplete: "new-password", required: true });
  const role = select(ROLES, "user");
  const submit = h("button", { type: "submit", class: "button primary" }, "Create user");
  const form = h(
    "form",
    { class: "dialog-form", novalidate: true },
    formErrorBox(),
    field({ label: "Username", name: "username", control: username }),
    field({ label: "Password", name: "password", control: password, hint: `At least ${MIN_PASSWORD_CHARS} characters.` }),
    field({ label: "Role", name: "role", control: role }),
    h("div", { class: "dialog-actions" }, submit),
  );
  const { close } = openDialog({ title: "New user", body: form });
  username.focus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { username: username.value.trim(), password: password.value, role: role.value, disabled: false };
    const problems = [];
    if (!/^[a-z0-9_.-]{3,64}$/i.test(body.username)) {
      problems.push({ field: "username", message: "3–64 letters, digits, dots, dashes or underscores." });
    }
    const weak = passwordProblem(body.password);
    if (weak) problems.push({ field: "password", message: weak });
    if (problems.length) {
      showFormErrors(form, problems);
      return;
    }
    await withBusyButton(submit, "Creating…", async () => {
      try {
        await api("POST", "/api/admin/users", { body });
        close();
        toast(`User ${body.username} created.`);
        onSaved();
      } catch (error) {
        showFormErrors(form, error);
      }
    });
  });
}

function passwordDialog(user, onSaved) {
  const password = h("input", { type: "password", autocomplete: "new-password", required: true });
  const submit = h("button", { type: "submit", class: "button primary" }, "Set password");
  const form = h(
    "form",
    { class: "dialog-form", novalidate: true },
    formErrorBox(),
    field({ label: "New password", name: "password", control: password, hint: `At least ${MIN_PASSWORD_CHARS} characters.` }),
    h("div", { class: "dialog-actions" }, submit),
  );
  const { close } = openDialog({ title: `Reset password for ${user.username}`, body: form });
  password.focus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const weak = passwordProblem(password.value);
    if (weak) {
      showFormErrors(form, [{ field: "password", message: weak }]);
      return;
    }
    await withBusyButton(submit, "Saving…", async () => {
      try {
        await api("PUT", `/api/admin/users/${encodeURIComponent(user.username)}`, { body: { password: password.value } });
        close();
        toast(`Password for ${user.username} changed.`);
        onSaved();
      } catch (error) {
        showFormErrors(form, error);
      }
    });
  });
}

export function renderAdminUsers(container, { session }) {
  async function update(user, changes, done) {
    try {
      await api("PUT", `/api/admin/users/${encodeURIComponent(user.username)}`, { body: changes });
      toast(done);
    } catch (error) {
      toastError(error);
    }
    await load();
  }

  async function remove(user) {
    const confirmed = await confirmDialog({
      title: `Delete ${user.username}?`,
      message: "They can no longer log in. This cannot be undone.",
      confirmLabel: "Delete user",
      danger: true,
    });
    if (!confirmed) return;
    try {
      await api("DELETE", `/api/admin/users/${encodeURIComponent(user.username)}`);
      toast(`User ${user.username} deleted.`);
      await load();
    } catch (error) {
      toastError(error);
    }
  }

  function row(user) {
    const isSelf = user.username === session.username;
    const role = select(ROLES, user.role);
    role.setAttribute("aria-label", `Role of ${user.username}`);
    role.disabled = isSelf;
    role.addEventListener("change", () => update(user, { role: role.value }, `${user.username} is now ${role.value}.`));
    return h(
      "tr",
      { dataset: { username: user.username } },
      h("th", { scope: "row" }, user.username, isSelf ? h("span", { class: "cell-sub" }, "you") : null),
      h("td", { dataset: { label: "Role" } }, role),
      h("td", { dataset: { label: "Status" } }, h("span", { class: `status-pill ${user.disabled ? "cancelled" : "succeeded"}` }, user.disabled ? "Disabled" : "Active")),
      h("td", { dataset: { label: "Created" } }, h("time", { datetime: user.created_at }, formatDateTime(user.created_at))),
      h(
        "td",
        { class: "row-actions", dataset: { label: "Actions" } },
        h("button", { type: "button", class: "button small", disabled: isSelf, "aria-label": `${user.disabled ? "Enable" : "Disable"} ${user.username}`,
          onclick: () => update(user, { disabled: !user.disabled }, `${user.username} ${user.disabled ? "enabled" : "disabled"}.`) },
        user.disabled ? "Enable" : "Disable"),
        h("button", { type: "button", class: "button small", "aria-label": `Reset password for ${user.username}`,
          onclick: () => passwordDialog(user, load) }, "Reset password"),
        h("button", { type: "button", class: "button small danger", disabled: isSelf, "aria-label": `Delete ${user.username}`,
          onclick: () => remove(user) }, "Delete"),
      ),
    );
  }

  const load = renderAdminTable(container, {
    title: "Users",
    toolbar: h("button", { type: "button", class: "button primary", onclick: () => userDialog(load) }, "New user"),
    caption: "Users",
    columns: ["Username", "Role", "Status", "Created", "Actions"],
    fetchRows: async () => (await api("GET", "/api/admin/users")).users,
    row,
  });
}
