// Admin: models with today's usage and slots in use; create, edit, enable/disable, delete.

import { api } from "../api.js";
import { confirmDialog, openDialog } from "../dialog.js";
import { formatDateTime, h, toast } from "../dom.js";
import { checkbox, field, formErrorBox, select, showFormErrors, toastError, withBusyButton } from "../forms.js";
import { renderAdminTable } from "./admin-table.js";

// [field, label, required, minimum]; an optional limit left empty means "no limit" (null).
const LIMIT_FIELDS = [
  ["concurrency", "Concurrency (tasks running at once)", true, 1],
  ["daily_quota", "Daily quota (all users)", true, 0],
  ["user_daily_quota", "Daily quota per user", false, 0],
  ["max_running_per_user", "Running tasks per user", false, 1],
];

function limitText(value) {
  return value === null || value === undefined ? "no limit" : String(value);
}

function usageCell(label, used, limit) {
  return h(
    "td",
    { dataset: { label } },
    h("span", { class: "usage-text" }, `${used ?? 0} / ${limitText(limit)}`),
    Number.isFinite(limit) && limit > 0
      ? h("meter", { min: 0, max: limit, value: used || 0, high: limit * 0.8, optimum: 0, "aria-hidden": "true",
        class: (used || 0) >= limit ? "full" : "" })
      : null,
  );
}

/** Blank means "no limit" (null); anything else must be a whole number ≥ min. */
function readLimit(input, { required, min }) {
  const text = input.value.trim();
  if (!text) return required ? { problem: "Required." } : { value: null };
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) return { problem: `A whole number, at least ${min}.` };
  return { value };
}

function modelDialog(existing, onSaved) {
  const isNew = !existing;
  const model = existing || { type: "image", enabled: true, concurrency: 1, daily_quota: 100, defaults: {} };
  const inputs = {
    model_id: h("input", { value: model.model_id || "", required: true, readonly: !isNew, autocomplete: "off" }),
    type: select([["image", "Image"], ["video", "Video"]], model.type),
    display_name: h("input", { value: model.display_name || "", required: !isNew, placeholder: isNew ? "same as the model ID" : "" }),
    upstream_model: h("input", { value: model.upstream_model || "", required: true, placeholder: "doubao-seedream-4-5-251128" }),
    family: h("input", { value: model.family || "", autocomplete: "off", placeholder: "seedance-1.5-pro" }),
    defaults: h("textarea", { rows: 3, class: "mono" }),
  };
  const enabled = checkbox("Enabled (users can submit tasks)", "enabled", model.enabled !== false);
  inputs.defaults.value = JSON.stringify(model.defaults || {});
  if (!isNew) inputs.type.disabled = true;
  for (const [name, , required, min] of LIMIT_FIELDS) {
    inputs[name] = h("input", { type: "number", min, step: 1, inputmode: "numeric",
      value: model[name] ?? "", placeholder: required ? "" : "no limit" });
  }
  const submit = h("button", { type: "submit", class: "button primary" }, isNew ? "Create model" : "Save changes");
  const form = h(
    "form",
    { class: "dialog-form", novalidate: true },
    formErrorBox(),
    field({ label: "Model ID", name: "model_id", control: inputs.model_id, hint: isNew ? "Used in the API; cannot change later." : null }),
    h("div", { class: "row" },
      field({ label: "Type", name: "type", control: inputs.type }),
      field({ label: "Display name", name: "display_name", control: inputs.display_name })),
    field({ label: "Upstream Ark model", name: "upstream_model", control: inputs.upstream_model,
      hint: "An Ark model ID, or an ep-… endpoint ID with the model it serves below." }),
    field({ label: "Model the endpoint serves", name: "family", control: inputs.family,
      hint: "Needed with an ep-… endpoint: a model of GET /api/admin/ark-models, e.g. seedance-1.5-pro." }),
    h("div", { class: "row" }, LIMIT_FIELDS.slice(0, 2).map(([name, label]) => field({ label, name, control: inputs[name] }))),
    h("div", { class: "row" }, LIMIT_FIELDS.slice(2).map(([name, label]) => field({ label, name, control: inputs[name] }))),
    h("p", { class: "hint" }, "Leave a per-user limit empty for no limit."),
    field({ label: "Defaults (JSON)", name: "defaults", control: inputs.defaults,
      hint: "Prefilled form values, e.g. {\"size\": \"2K\"} or {\"resolution\": \"720p\", \"duration\": 5}." }),
    enabled.wrapper,
    h("div", { class: "dialog-actions" }, submit),
  );
  const { close } = openDialog({ title: isNew ? "New model" : `Edit ${model.model_id}`, body: form });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const problems = [];
    const body = { upstream_model: inputs.upstream_model.value.trim(), enabled: enabled.input.checked };
    const displayName = inputs.display_name.value.trim();
    if (displayName) body.display_name = displayName;
    else if (!isNew) problems.push({ field: "display_name", message: "Required." });
    if (isNew) {
      body.model_id = inputs.model_id.value.trim();
      body.type = inputs.type.value;
      if (!/^[a-z0-9][a-z0-9.-]{1,63}$/.test(body.model_id)) {
        problems.push({ field: "model_id", message: "2–64 lower-case letters, digits, dots or dashes." });
      }
    }
    if (!body.upstream_model) problems.push({ field: "upstream_model", message: "Required." });
    const family = inputs.family.value.trim();
    if (family && (isNew || family !== (model.family || "") || body.upstream_model !== model.upstream_model)) body.family = family;
    for (const [name, , required, min] of LIMIT_FIELDS) {
      const { value, problem } = readLimit(inputs[name], { required, min });
      if (problem) problems.push({ field: name, message: problem });
      else body[name] = value;
    }
    try {
      const defaults = JSON.parse(inputs.defaults.value.trim() || "{}");
      if (typeof defaults !== "object" || defaults === null || Array.isArray(defaults)) throw new Error();
      const empty = Object.keys(defaults).length === 0;
      // Unchanged defaults are left out of an update; emptied ones are cleared with null.
      if (isNew) body.defaults = empty ? null : defaults;
      else if (JSON.stringify(defaults) !== JSON.stringify(model.defaults || {})) body.defaults = empty ? null : defaults;
    } catch {
      problems.push({ field: "defaults", message: "A JSON object, e.g. {\"size\": \"2K\"}." });
    }
    if (problems.length) {
      showFormErrors(form, problems);
      return;
    }
    await withBusyButton(submit, "Saving…", async () => {
      try {
        if (isNew) await api("POST", "/api/admin/models", { body });
        else await saveChanges(model, body);
        close();
        toast(isNew ? `Model ${body.model_id} created.` : `Model ${model.model_id} saved.`);
        onSaved();
      } catch (error) {
        showFormErrors(form, error);
      }
    });
  });
}

/** A PUT; when queued tasks cannot move to the new upstream, the admin may fail them (their quota given back). */
async function saveChanges(model, body) {
  const path = `/api/admin/models/${encodeURIComponent(model.model_id)}`;
  try {
    await api("PUT", path, { body });
  } catch (error) {
    if (error.code !== "incompatible_queued_tasks") throw error;
    const count = error.details?.count ?? 0;
    const confirmed = await confirmDialog({
      title: "Queued tasks cannot move",
      message: `${count} queued task${count === 1 ? "" : "s"} ask for what the new upstream cannot do. Fail them `
        + "(their quota is given back) and change the upstream?",
      confirmLabel: `Fail ${count} and save`,
      danger: true,
    });
    if (!confirmed) throw error;
    await api("PUT", path, { body: { ...body, force: true } });
  }
}

/** The model's lifecycle at Ark and whether Ark last refused it as not there. */
function upstreamNotes(model) {
  const notes = [];
  if (model.status && model.status !== "active") {
    notes.push(h("span", { class: "cell-sub warning", dataset: { note: "lifecycle" } },
      `${model.status === "retired" ? "Retired" : "Deprecated"} at Ark${model.replacement ? `; use ${model.replacement}` : ""}`));
  }
  if (model.upstream_unavailable) {
    const { at, code } = model.upstream_unavailable;
    const since = formatDateTime(at);
    notes.push(h("span", { class: "cell-sub warning", dataset: { note: "unavailable" } },
      `Ark: not available (${code})`, since ? [" since ", h("time", { datetime: at }, since)] : null));
  }
  return notes;
}

export function renderAdminModels(container) {
  async function setEnabled(model, enabled) {
    try {
      await api("PUT", `/api/admin/models/${encodeURIComponent(model.model_id)}`, { body: { enabled } });
      toast(`${model.model_id} ${enabled ? "enabled" : "disabled"}.`);
      await load();
    } catch (error) {
      toastError(error);
    }
  }

  async function remove(model) {
    const confirmed = await confirmDialog({
      title: `Delete ${model.model_id}?`,
      message: "Users can no longer choose this model. Existing tasks keep their results.",
      confirmLabel: "Delete model",
      danger: true,
    });
    if (!confirmed) return;
    try {
      await api("DELETE", `/api/admin/models/${encodeURIComponent(model.model_id)}`);
      toast(`${model.model_id} deleted.`);
      await load();
    } catch (error) {
      toastError(error);
    }
  }

  function row(model) {
    return h(
      "tr",
      { dataset: { modelId: model.model_id } },
      h("th", { scope: "row" }, h("span", { class: "cell-title" }, model.display_name || model.model_id),
        h("span", { class: "cell-sub" }, model.model_id)),
      h("td", { dataset: { label: "Type" } }, model.type === "video" ? "Video" : "Image", h("span", { class: "cell-sub" }, model.upstream_model || ""),
        model.family && model.family !== model.upstream_model ? h("span", { class: "cell-sub" }, model.family) : null),
      h("td", { dataset: { label: "Status" } }, h("span", { class: `status-pill ${model.enabled ? "succeeded" : "cancelled"}` }, model.enabled ? "Enabled" : "Disabled"),
        ...upstreamNotes(model)),
      usageCell("Running now", model.slots_in_use, model.concurrency),
      usageCell("Used today", model.usage_today?.used, model.daily_quota),
      h("td", { dataset: { label: "Per user" } },
        model.user_daily_quota === null || model.user_daily_quota === undefined
          ? "no daily limit" : `${model.user_daily_quota} / day`,
        h("span", { class: "cell-sub" }, model.max_running_per_user === null || model.max_running_per_user === undefined
          ? "no running limit" : `${model.max_running_per_user} running at once`)),
      h(
        "td",
        { class: "row-actions", dataset: { label: "Actions" } },
        h("button", { type: "button", class: "button small", onclick: () => modelDialog(model, load),
          "aria-label": `Edit ${model.model_id}` }, "Edit"),
        h("button", { type: "button", class: "button small", onclick: () => setEnabled(model, !model.enabled),
          "aria-label": `${model.enabled ? "Disable" : "Enable"} ${model.model_id}` }, model.enabled ? "Disable" : "Enable"),
        h("button", { type: "button", class: "button small danger", onclick: () => remove(model),
          "aria-label": `Delete ${model.model_id}` }, "Delete"),
      ),
    );
  }

  const load = renderAdminTable(container, {
    title: "Models",
    toolbar: [
      h("button", { type: "button", class: "button", onclick: () => load() }, "Refresh"),
      h("button", { type: "button", class: "button primary", onclick: () => modelDialog(null, load) }, "New model"),
    ],
    caption: "Models with today's usage and slots in use",
    columns: ["Model", "Type", "Status", "Running now", "Used today", "Per user", "Actions"],
    fetchRows: async () => (await api("GET", "/api/admin/models")).models,
    row,
    emptyText: "No models yet. Create one to let users generate.",
  });
}
