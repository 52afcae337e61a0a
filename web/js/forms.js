// Form building blocks and error display shared by every screen.

import { h, toast, uniqueId } from "./dom.js";

const ERROR_TITLES = {
  validation_error: "Some fields need fixing",
  quota_exceeded: "Quota reached",
  too_many_attempts: "Too many attempts",
  too_many_requests: "Too many requests",
  model_disabled: "Model disabled",
  model_retired: "Model retired",
  model_changed: "The model changed meanwhile; send it again",
  not_a_draft: "Only a draft can be rendered",
  draft_not_succeeded: "The draft has not succeeded",
  draft_model_changed: "The draft's model has changed",
  draft_expired: "The draft is too old to render",
  not_cancellable: "This task can no longer be cancelled",
  illegal_transition: "Not possible from the task's status",
  task_changed: "The task changed meanwhile; look again",
  worker_busy: "A worker still holds this task",
  generating_at_ark: "Ark is generating it",
  video_at_ark: "The video is at Ark",
  ended_at_ark: "Ark has finished it",
  user_not_found: "No such user",
  conflict: "Conflict",
  payload_too_large: "Too large",
  forbidden: "Not allowed",
  not_found: "Not found",
  invalid_credentials: "Wrong username or password",
  unauthorized: "Not logged in",
  network_error: "Connection problem",
};

/** Title and sentence for an ApiError (or any Error), phrased for the person using the page. */
export function describeError(error) {
  const code = error.code || "error";
  let message = error.message || "Something went wrong.";
  if (error.retryAfter && (code === "quota_exceeded" || code.startsWith("too_many"))) {
    message += ` Try again in ${error.retryAfter} s.`;
  }
  return { title: ERROR_TITLES[code] || "Something went wrong", message, code };
}

/** Report an error that belongs to no form (a row action, a list) as a short-lived notice. */
export function toastError(error) {
  const { title, message } = describeError(error);
  toast(`${title}: ${message}`, "error");
}

/** Show an API error in a page's error box (a `.form-errors` element). */
export function showPageError(box, error) {
  const { title, message } = describeError(error);
  box.replaceChildren(h("p", { class: "form-errors-title" }, title), h("p", {}, message));
  box.hidden = false;
}

/**
 * A labelled field: label, control, optional hint, and an error slot. `name` is the API's field path
 * ("prompt", "params.duration", "images[0]") so server-side validation errors land next to the control.
 */
export function field({ label, name, control, hint, className = "" }) {
  const controlId = control.id || uniqueId("field");
  control.id = controlId;
  const hintNode = hint ? h("p", { class: "hint", id: `${controlId}-hint` }, hint) : null;
  const errorNode = h("p", { class: "field-error", id: `${controlId}-error`, hidden: true });
  const describedBy = [hintNode && hintNode.id, errorNode.id].filter(Boolean).join(" ");
  control.setAttribute("aria-describedby", describedBy);
  const wrapper = h(
    "div",
    { class: `field ${className}`.trim(), dataset: { field: name } },
    h("label", { for: controlId }, label),
    control,
    hintNode,
    errorNode,
  );
  // An error describes the value that was sent; once it is edited the message no longer applies.
  control.addEventListener("input", () => {
    if (wrapper.classList.contains("invalid")) clearFieldError(wrapper);
  });
  return wrapper;
}

/** A checkbox with its label after it and an error slot; returns {wrapper, input}. */
export function checkbox(label, name, checked = false) {
  const input = h("input", { type: "checkbox", id: uniqueId("check"), checked });
  const wrapper = h(
    "div",
    { class: "field check", dataset: { field: name } },
    input,
    h("label", { for: input.id }, label),
    h("p", { class: "field-error", hidden: true }),
  );
  return { wrapper, input };
}

/** A group of controls under one name (radio buttons, a list), rendered as a fieldset. */
export function fieldset({ legend, name, children, hint, className = "" }) {
  const errorNode = h("p", { class: "field-error", hidden: true });
  return h(
    "fieldset",
    { class: `field ${className}`.trim(), dataset: { field: name } },
    h("legend", {}, legend),
    children,
    hint ? h("p", { class: "hint" }, hint) : null,
    errorNode,
  );
}

export function setFieldError(wrapper, message) {
  const errorNode = wrapper.querySelector(":scope > .field-error");
  errorNode.textContent = message;
  errorNode.hidden = false;
  wrapper.classList.add("invalid");
  for (const control of wrapper.querySelectorAll("input, select, textarea")) {
    control.setAttribute("aria-invalid", "true");
  }
}

export function clearFieldError(wrapper) {
  wrapper.classList.remove("invalid");
  const errorNode = wrapper.querySelector(":scope > .field-error");
  errorNode.textContent = "";
  errorNode.hidden = true;
  for (const control of wrapper.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
}

export function clearErrors(form) {
  for (const wrapper of form.querySelectorAll(".field.invalid")) clearFieldError(wrapper);
  const summary = form.querySelector(".form-errors");
  if (summary) {
    summary.replaceChildren();
    summary.hidden = true;
  }
}

/** The error box at the top of a form; forms include it with formErrorBox(). */
export function formErrorBox() {
  return h("div", { class: "form-errors", role: "alert", tabindex: "-1", hidden: true });
}

function findFieldWrapper(form, fieldPath) {
  let path = fieldPath;
  while (path) {
    const wrapper = form.querySelector(`[data-field="${CSS.escape(path)}"]`);
    if (wrapper) return wrapper;
    const shorter = path.replace(/(\[\d+\]|\.[^.[\]]+)$/, "");
    if (shorter === path) return null;
    path = shorter;
  }
  return null;
}

/**
 * Show errors on a form: [{field, message}] problems go next to their fields (the rest in the summary); an
 * ApiError with validation details is shown the same way, any other error as a titled message.
 */
export function showFormErrors(form, errorOrProblems) {
  clearErrors(form);
  const summary = form.querySelector(".form-errors");
  let problems = Array.isArray(errorOrProblems) ? errorOrProblems : null;
  let described = null;
  if (!problems) {
    described = describeError(errorOrProblems);
    if (described.code === "validation_error" && Array.isArray(errorOrProblems.details)) {
      problems = errorOrProblems.details;
    }
  }
  const unplaced = [];
  for (const problem of problems || []) {
    const wrapper = problem.field ? findFieldWrapper(form, String(problem.field)) : null;
    if (wrapper) setFieldError(wrapper, problem.message);
    else unplaced.push(problem.field ? `${problem.field}: ${problem.message}` : problem.message);
  }
  const title = described ? described.title : ERROR_TITLES.validation_error;
  let detail = null;
  if (!problems) detail = h("p", { class: "form-errors-message" }, described.message);
  else if (unplaced.length) detail = h("ul", {}, unplaced.map((line) => h("li", {}, line)));
  summary.replaceChildren(h("p", { class: "form-errors-title" }, title), ...(detail ? [detail] : []));
  summary.dataset.code = described ? described.code : "validation_error";
  summary.hidden = false;
  const firstInvalid = form.querySelector(".field.invalid input, .field.invalid select, .field.invalid textarea");
  (firstInvalid || summary).focus?.();
  if (!firstInvalid) summary.scrollIntoView({ block: "nearest" });
}

/** Disable a submit button while `work` runs, showing `busyLabel`; restores it afterwards. */
export async function withBusyButton(button, busyLabel, work) {
  const label = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  button.textContent = busyLabel;
  try {
    return await work((progressLabel) => {
      button.textContent = progressLabel;
    });
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.textContent = label;
  }
}

/** A <select> with [value, label] options. */
export function select(options, value) {
  return h(
    "select",
    {},
    options.map(([optionValue, label]) => h("option", { value: optionValue, selected: optionValue === value }, label)),
  );
}
