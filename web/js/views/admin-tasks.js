// Admin: every user's tasks, filtered by user, model, status and type, with the operator's changes of status
// (PUT /api/tasks/{id}/status: cancel, fail, send a running image back to the queue). The owner's own cancel
// route answers only its owner, so an admin cancels anyone's task, their own included, as an operator.

import { api } from "../api.js";
import { confirmDialog, openDialog } from "../dialog.js";
import { formatDateTime, h, toast } from "../dom.js";
import { field, formErrorBox, select, showFormErrors, toastError, withBusyButton } from "../forms.js";
import { renderPagedTable } from "./admin-table.js";
import { STATUS_LABELS } from "./tasks.js";

const PAGE_SIZE = 25;
const ACTIVE = new Set(["queued", "running"]);

function failDialog(task, onChanged) {
  const code = h("input", { value: "operator", autocomplete: "off", required: true, maxlength: 128 });
  const message = h("textarea", { rows: 2, maxlength: 4096 });
  message.value = "Stopped by an operator.";
  const submit = h("button", { type: "submit", class: "button danger" }, "Fail task");
  const form = h(
    "form",
    { class: "dialog-form", novalidate: true },
    formErrorBox(),
    field({ label: "Error code", name: "error.code", control: code, hint: "The task's owner sees it." }),
    field({ label: "Message", name: "error.message", control: message }),
    h("div", { class: "dialog-actions" }, submit),
  );
  const { close } = openDialog({ title: `Fail task ${task.id}`, body: form });
  code.focus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!code.value.trim()) {
      showFormErrors(form, [{ field: "error.code", message: "Required." }]);
      return;
    }
    await withBusyButton(submit, "Failing…", async () => {
      try {
        const changed = await api("PUT", `/api/tasks/${encodeURIComponent(task.id)}/status`, {
          body: { status: "failed", error: { code: code.value.trim(), message: message.value } } });
        close();
        toast(`Task ${task.id} failed.`);
        onChanged(changed);
      } catch (error) {
        showFormErrors(form, error);
      }
    });
  });
}

export function renderAdminTasks(container) {
  const user = h("input", { id: "admin-tasks-user", autocomplete: "off", autocapitalize: "none", placeholder: "anyone" });
  const model = select([["", "All models"]], "");
  const status = select([["", "All statuses"], ...Object.entries(STATUS_LABELS)], "");
  const type = select([["", "All types"], ["image", "Image"], ["video", "Video"]], "");
  const filters = h(
    "form",
    { class: "filters admin-filters", role: "search", "aria-label": "Filter tasks" },
    field({ label: "User", name: "user", control: user }),
    field({ label: "Model", name: "model_id", control: model }),
    field({ label: "Status", name: "status", control: status }),
    field({ label: "Type", name: "type", control: type }),
    h("button", { type: "submit", class: "button" }, "Apply"),
  );

  // The status route answers with the task, not with the listing's owner fields: keep those from the row.
  const replaceRow = (task, rowElement, changed) => table.replaceRow(rowElement, { user: task.user, user_id: task.user_id, ...changed });

  async function change(task, rowElement, body, done) {
    try {
      const changed = await api("PUT", `/api/tasks/${encodeURIComponent(task.id)}/status`, { body });
      toast(done);
      replaceRow(task, rowElement, changed);
    } catch (error) {
      toastError(error);
    }
  }

  async function cancel(task, rowElement) {
    const confirmed = await confirmDialog({
      title: `Cancel task ${task.id}?`,
      message: `${task.user}'s ${task.type} task on ${task.model_id} ends as cancelled; a task that never reached Ark gives its quota back.`,
      confirmLabel: "Cancel task",
      cancelLabel: "Keep it",
      danger: true,
    });
    if (confirmed) await change(task, rowElement, { status: "cancelled" }, `Task ${task.id} cancelled.`);
  }

  function row(task) {
    const actions = [];
    const tr = h("tr", { dataset: { taskId: task.id, status: task.status } });
    if (ACTIVE.has(task.status)) {
      actions.push(h("button", { type: "button", class: "button small danger", "aria-label": `Cancel ${task.id}`,
        onclick: () => cancel(task, tr) }, "Cancel"));
      actions.push(h("button", { type: "button", class: "button small", "aria-label": `Fail ${task.id}`,
        onclick: () => failDialog(task, (changed) => replaceRow(task, tr, changed)) }, "Fail…"));
    }
    if (task.status === "running" && task.type === "image") {
      actions.push(h("button", { type: "button", class: "button small", "aria-label": `Requeue ${task.id}`,
        onclick: () => change(task, tr, { status: "queued" }, `Task ${task.id} is back in the queue.`) }, "Requeue"));
    }
    tr.append(
      h("th", { scope: "row" }, h("span", { class: "cell-title mono" }, task.id),
        h("time", { class: "cell-sub", datetime: task.created_at }, formatDateTime(task.created_at))),
      h("td", { dataset: { label: "User" } }, task.user || task.user_id),
      h("td", { dataset: { label: "Model" } }, h("span", { class: "cell-title" }, task.model_id),
        h("span", { class: "cell-sub" }, task.type)),
      h("td", { dataset: { label: "Status" } }, h("span", { class: `status-pill ${task.status}` }, STATUS_LABELS[task.status] || task.status),
        task.error ? h("span", { class: "cell-sub" }, task.error.code) : null),
      h("td", { dataset: { label: "Prompt" } }, h("span", { class: "prompt-cell" }, task.prompt || "–")),
      h("td", { dataset: { label: "Cost" } }, typeof task.cost === "number" ? `${task.cost} ${task.currency || ""}`.trim() : "–"),
      h("td", { class: "row-actions", dataset: { label: "Actions" } }, actions.length ? actions : h("span", { class: "cell-sub" }, "–")),
    );
    return tr;
  }

  const table = renderPagedTable(container, {
    title: "All tasks",
    filters,
    caption: "Tasks of every user, newest first",
    columns: ["Task", "User", "Model", "Status", "Prompt", "Cost", "Actions"],
    emptyText: "No tasks match.",
    fetchPage: async (cursor) => {
      const page = await api("GET", "/api/admin/tasks", { query: {
        user: user.value.trim().toLowerCase(), model_id: model.value, status: status.value, type: type.value,
        limit: PAGE_SIZE, cursor } });
      return { items: page.tasks, next_cursor: page.next_cursor };
    },
    row,
  });

  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    table.reload();
  });
  for (const control of [model, status, type]) control.addEventListener("change", () => table.reload());

  api("GET", "/api/admin/models").then(({ models }) => {
    model.append(...models.map((item) => h("option", { value: item.model_id }, item.model_id)));
  }).catch(() => {}); // the filter then offers "All models" only; the table shows the error if the API is down
}
