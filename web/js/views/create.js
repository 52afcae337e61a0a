// The "Create" panel: image and video task forms built from the chosen model's capabilities (its fields, values,
// ranges and input modes), checked in the browser before anything is sent.

import { api } from "../api.js";
import { acceptedTypes, fieldSpec, inputMode, namesText, rangeText, ratioText, startValue } from "../capabilities.js";
import { formatBytes, h, newUuid, toast, uniqueId } from "../dom.js";
import { checkbox, clearErrors, clearFieldError, field, fieldset, formErrorBox, select, setFieldError, showFormErrors, withBusyButton } from "../forms.js";
import { INLINE_UPLOAD_MAX_BYTES, imageDimensions, referenceToImageValue } from "../uploads.js";
import { inputImageProblem, mediaReferenceProblem, validateImageForm, validateVideoForm } from "../validate.js";

// How the form names each field the API knows; a field not listed here is still shown, under its path.
const LABELS = {
  max_images: "Images to generate",
  watermark: "Add watermark",
  output_format: "Output format",
  "params.resolution": "Resolution",
  "params.ratio": "Aspect ratio",
  "params.duration": "Duration (seconds)",
  "params.seed": "Seed",
  "params.camera_fixed": "Keep the camera fixed",
  "params.generate_audio": "Generate audio",
  "params.draft": "Draft first (a quick preview to render in full later)",
  "params.return_last_frame": "Return the last frame as an image",
  "params.watermark": "Add watermark",
  "params.service_tier": "Service tier",
  "params.priority": "Priority (higher runs first)",
  "params.execution_expires_after": "Give up after (seconds)",
  "params.output_format": "Video format",
};
const HINTS = {
  "params.ratio": "adaptive follows the first frame.",
  "params.seed": "-1 picks a random seed.",
  "params.service_tier": "flex is cheaper and slower.",
};
// The web app's own starting values where a model sets none: a video's last frame is the player's poster.
const FORM_DEFAULTS = { "params.return_last_frame": true };
// Fields filled in from the start; the other numbers stay empty, leaving the value to the model.
const PREFILLED = new Set(["max_images", "params.duration", "params.seed"]);
// Fields the form does not offer: frames is another way of giving the duration, which the form asks for.
const NOT_OFFERED = new Set(["params.frames"]);
// Where a video field goes: the main rows, or under "More options"; booleans go with the checks.
const MAIN_VIDEO_FIELDS = new Set(["params.resolution", "params.ratio", "params.duration", "params.seed"]);

/** The nodes of a list that are there (a field the model lacks is null). */
function present(...nodes) {
  return nodes.flat().filter(Boolean);
}

/** "" stays NaN instead of turning into 0, so an empty number field fails validation. */
function numberValue(input) {
  return input.value.trim() === "" ? Number.NaN : Number(input.value);
}

async function fileReference(file) {
  const size = await imageDimensions(file);
  return { kind: "file", type: "image", file, width: size?.width, height: size?.height, previewUrl: URL.createObjectURL(file) };
}

function releaseReference(reference) {
  if (reference && reference.previewUrl) URL.revokeObjectURL(reference.previewUrl);
}

function referenceLabel(reference) {
  if (reference.kind === "url") return reference.url;
  const dimensions = reference.width ? ` · ${reference.width}×${reference.height}` : "";
  return `${reference.file.name} · ${formatBytes(reference.file.size)}${dimensions}`;
}

function referencePreview(reference) {
  if (reference.kind === "file") return h("img", { class: "thumb", src: reference.previewUrl, alt: "" });
  return h("span", { class: "thumb link-thumb", "aria-hidden": "true" }, reference.type === "image" ? "URL" : reference.type);
}

function imageRulesText(rules) {
  const sides = rules.max_side === null ? `sides over ${rules.min_side} px` : `sides ${rules.min_side}–${rules.max_side} px`;
  return `${namesText(rules.formats)} up to ${formatBytes(rules.max_bytes)}, ${sides}, ` +
    `width ÷ height ${ratioText(rules.aspect.min)}–${ratioText(rules.aspect.max)}.`;
}

/** "Choose file" and "add by link" controls; calls onFiles(File[]) or onUrl(string, type). */
function sourcePicker({ multiple, fileLabel, urlLabel, accept, linkTypes = ["image"], onFiles, onUrl }) {
  const fileInput = h("input", { type: "file", accept, multiple, hidden: true });
  fileInput.addEventListener("change", () => {
    if (fileInput.files.length) onFiles([...fileInput.files]);
    fileInput.value = "";
  });
  const typeSelect = linkTypes.length > 1 ? select(linkTypes.map((type) => [type, type]), linkTypes[0]) : null;
  if (typeSelect) typeSelect.setAttribute("aria-label", "Link type");
  const urlInput = h("input", { type: "url", inputmode: "url", placeholder: "https://…", "aria-label": urlLabel });
  const addUrl = async () => {
    const url = urlInput.value.trim();
    if (url && (await onUrl(url, typeSelect ? typeSelect.value : linkTypes[0]))) urlInput.value = "";
  };
  urlInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      addUrl();
    }
  });
  return h(
    "div",
    { class: "source-picker" },
    h("button", { type: "button", class: "button", onclick: () => fileInput.click() }, fileLabel),
    fileInput,
    h("span", { class: "or" }, "or"),
    h("div", { class: "url-adder" }, typeSelect, urlInput, h("button", { type: "button", class: "button", onclick: addUrl }, "Add link")),
  );
}

/**
 * A list of reference media under one request path (`images` of an image task, `references` of a video task),
 * kept while the model changes; `configure({limit, types, rules, countText})` fits it to the chosen model.
 */
function referenceList({ legend, name, urlLabel }) {
  let items = [];
  let settings = null;
  const list = h("ul", { class: "reference-list" });
  const count = h("p", { class: "hint" });
  const pickerSlot = h("div");
  const wrapper = fieldset({ legend, name, children: [list, pickerSlot, count] });
  const render = () => {
    list.replaceChildren(...items.map((reference, index) => h(
      "li",
      { class: "field reference", dataset: { field: `${name}[${index}]` } },
      referencePreview(reference),
      h("span", { class: "reference-name" }, referenceLabel(reference)),
      h("button", {
        type: "button",
        class: "button ghost small",
        "aria-label": `Remove reference ${index + 1}`,
        onclick: () => {
          releaseReference(items[index]);
          items = items.filter((_, position) => position !== index);
          render();
        },
      }, "Remove"),
      h("p", { class: "field-error", hidden: true }),
    )));
    if (settings) count.textContent = settings.countText(items);
  };
  // Returns true when everything was added, so the link box can be emptied.
  const add = async (candidates) => {
    const problems = [];
    for (const candidate of candidates) {
      if (items.length >= settings.limit) {
        problems.push(`At most ${settings.limit} references.`);
        break;
      }
      const reference = candidate.file
        ? await fileReference(candidate.file)
        : { kind: "url", type: candidate.type, url: candidate.url };
      const problem = mediaReferenceProblem(reference, settings.rules);
      if (problem) {
        releaseReference(reference);
        problems.push(problem);
      } else {
        items = [...items, reference];
      }
    }
    render();
    if (problems.length) setFieldError(wrapper, problems.join(" "));
    else clearFieldError(wrapper);
    return !problems.length;
  };
  return {
    wrapper,
    get: () => items,
    configure(next) {
      settings = next;
      pickerSlot.replaceChildren(sourcePicker({
        multiple: true,
        fileLabel: "Choose images…",
        urlLabel,
        accept: acceptedTypes(next.rules),
        linkTypes: next.types,
        onFiles: (files) => add(files.map((file) => ({ file }))),
        onUrl: (url, type) => add([{ url, type }]),
      }));
      render();
    },
  };
}

/** One first/last frame slot: empty it offers a file or a link, filled it shows the frame and "Remove". */
function frameSlot({ legend, name, rules }) {
  let reference = null;
  const content = h("div", { class: "frame-slot" });
  const wrapper = fieldset({ legend, name, children: [content] });
  const render = () => {
    if (reference) {
      content.replaceChildren(
        h("div", { class: "reference" }, referencePreview(reference),
          h("span", { class: "reference-name" }, referenceLabel(reference)),
          h("button", { type: "button", class: "button ghost small", "aria-label": `Remove ${legend.toLowerCase()}`,
            onclick: () => set(null) }, "Remove")),
      );
    } else {
      content.replaceChildren(sourcePicker({
        multiple: false,
        fileLabel: "Choose file…",
        urlLabel: `${legend} link`,
        accept: acceptedTypes(rules()),
        onFiles: async ([file]) => set(await fileReference(file)),
        onUrl: (url) => set({ kind: "url", type: "image", url }),
      }));
    }
  };
  const set = (next) => {
    const problem = next && inputImageProblem(next, rules());
    if (problem) {
      releaseReference(next);
      setFieldError(wrapper, problem);
      return false;
    }
    clearFieldError(wrapper);
    releaseReference(reference);
    reference = next;
    render();
    return true;
  };
  return { wrapper, get: () => reference, render };
}

/**
 * The control of one field from its spec: a select (enum), a checkbox (boolean), a number (integer; with an
 * "Auto" switch when the spec has an `auto` value). Returns {path, spec, wrapper, value(), set(value)}; `value()`
 * is what the request carries (undefined: left to the model).
 */
function fieldControl(path, spec, modelDefault) {
  const label = LABELS[path] || path;
  const start = startValue(spec, modelDefault);
  if (spec.type === "boolean") {
    const box = checkbox(label, path, start === true);
    return { path, spec, wrapper: box.wrapper, value: () => box.input.checked, set: (value) => { box.input.checked = value; } };
  }
  if (spec.type === "enum") {
    const first = start !== null && typeof start === "object" ? start.text : start;
    const control = select(spec.values.map((value) => [String(value), String(value)]), String(first));
    return { path, spec, wrapper: field({ label, name: path, control, hint: HINTS[path] }),
      value: () => control.value, set: (value) => { control.value = String(value); } };
  }
  const input = h("input", { type: "number", min: spec.min, max: spec.max, step: 1, inputmode: "numeric",
    value: PREFILLED.has(path) && start !== null && start !== spec.auto ? String(start) : "",
    placeholder: spec.default === null ? "" : String(spec.default) });
  const hasAuto = spec.auto !== undefined && spec.auto !== null;
  const hint = [`${rangeText(spec)}${path === "params.duration" ? " s" : ""}.`, HINTS[path]].filter(Boolean).join(" ");
  const wrapper = field({ label, name: path, control: input, hint });
  const auto = hasAuto ? checkbox("Auto length", path, start === spec.auto) : null;
  if (auto) {
    // Part of the duration's field: its error slot reports this value too.
    delete auto.wrapper.dataset.field;
    auto.wrapper.querySelector(".field-error").remove();
    wrapper.insertBefore(auto.wrapper, wrapper.querySelector(".hint"));
    const sync = () => { input.disabled = auto.input.checked; };
    auto.input.addEventListener("change", sync);
    sync();
  }
  return {
    path,
    spec,
    wrapper,
    value: () => {
      if (auto && auto.input.checked) return spec.auto;
      return input.value.trim() === "" && !PREFILLED.has(path) ? undefined : numberValue(input);
    },
    set: (value) => { input.value = String(value); },
  };
}

/** Controls for the model's fields (those the form offers and `skip` does not take over), in the table's order. */
function fieldControls(model, skip) {
  const defaults = model.defaults || {};
  const controls = Object.entries(model.capabilities.fields)
    .filter(([path]) => !skip.has(path) && !NOT_OFFERED.has(path))
    .map(([path, spec]) => fieldControl(path, spec, defaults[path.replace(/^params\./, "")] ?? FORM_DEFAULTS[path]));
  // A switch that needs other values sets them when turned on (a draft's resolution), and turns off a switch it
  // cannot come with (a draft's last frame); the checks still judge what is sent.
  for (const control of controls) {
    if (control.spec.type !== "boolean") continue;
    control.wrapper.querySelector("input").addEventListener("change", (event) => {
      if (!event.target.checked) return;
      for (const [path, value] of Object.entries(control.spec.requires || {})) {
        controls.find((other) => other.path === path)?.set(value);
      }
      for (const path of control.spec.not_with || []) {
        const other = controls.find((item) => item.path === path && item.spec.type === "boolean");
        if (other) other.set(false);
      }
    });
  }
  return controls;
}

function valuesOf(controls) {
  return Object.fromEntries(controls.map((control) => [control.path, control.value()]));
}

/** The request body's fields from form values by path ("params.duration" → body.params.duration). */
function assignValues(body, values) {
  for (const [path, value] of Object.entries(values)) {
    if (value === undefined) continue;
    const [head, rest] = path.split(".");
    if (rest) body[head] = { ...(body[head] || {}), [rest]: value };
    else body[head] = value;
  }
  return body;
}

function modelLabel(model) {
  const name = model.display_name || model.model_id;
  return model.status === "deprecated" ? `${name} (deprecated)` : name;
}

/** The chosen model; null when the API has reported it disabled, so validation asks for another. */
function selectedModel(control, models) {
  const option = control.selectedOptions[0];
  return option && !option.disabled ? models.find((model) => model.model_id === option.value) : null;
}

/** The model picker and the notice of a deprecated model (its warning, and a switch to its replacement). */
function modelPicker(models, onChange) {
  const control = select(models.map((model) => [model.model_id, modelLabel(model)]));
  const notice = h("div", { class: "notice warning model-notice", role: "status", hidden: true });
  const showNotice = (model) => {
    const warnings = model.warnings || [];
    notice.hidden = !warnings.length;
    const replacement = models.find((item) => item.capabilities.family === model.replacement && item !== model);
    notice.replaceChildren(...present(
      warnings.map((warning) => h("p", {}, warning.message)),
      replacement
        ? h("button", { type: "button", class: "button small", onclick: () => {
          control.value = replacement.model_id;
          control.dispatchEvent(new Event("change"));
        } }, `Use ${replacement.display_name || replacement.model_id}`)
        : null,
    ));
  };
  control.addEventListener("change", () => {
    const model = models.find((item) => item.model_id === control.value);
    showNotice(model);
    onChange(model);
  });
  return {
    control,
    elements: [field({ label: "Model", name: "model_id", control }), notice],
    start() {
      control.dispatchEvent(new Event("change"));
    },
  };
}

function promptField({ required, placeholder, label }) {
  const control = h("textarea", { rows: 4, placeholder, required });
  const wrapper = field({ label, name: "prompt", control, hint: " " });
  return {
    control,
    wrapper,
    configure({ max_chars: maxChars }) {
      control.maxLength = maxChars;
      wrapper.querySelector(".hint").textContent = `Up to ${maxChars} characters.`;
    },
  };
}

async function sendTask(form, button, buildBody, { noun, modelControl, onSubmitted }) {
  await withBusyButton(button, "Sending…", async (progress) => {
    try {
      const body = await buildBody(progress);
      progress("Sending…");
      const created = await api("POST", "/api/tasks", { body, headers: { "Idempotency-Key": newUuid() } });
      clearErrors(form);
      toast(`${noun} task queued.`);
      for (const warning of created.warnings || []) toast(warning.message, "warning");
      onSubmitted(created.id);
    } catch (error) {
      showFormErrors(form, error);
      const chosen = modelControl.selectedOptions[0];
      if (error.code === "model_disabled" && chosen && !chosen.disabled) {
        chosen.disabled = true;
        chosen.textContent += " (disabled)";
      }
    }
  });
}

/** Resolve references to the strings the API takes, uploading large files; a failure names the item it belongs to. */
async function mediaValues(references, name, progress) {
  const values = [];
  for (const [index, reference] of references.entries()) {
    if (reference.kind === "file" && reference.file.size > INLINE_UPLOAD_MAX_BYTES) {
      progress(`Uploading ${index + 1} of ${references.length}…`);
    }
    try {
      values.push(await referenceToImageValue(reference));
    } catch (error) {
      if (error.status === 401 || (error.code === "validation_error" && error.details)) throw error;
      throw Object.assign(new Error(error.message), {
        code: "validation_error",
        details: [{ field: `${name}[${index}]`, message: error.message }],
      });
    }
  }
  return values;
}

/** The size control: the model's presets or a custom WxH, with its pixel and aspect range as the hint. */
function sizeControl(spec, modelDefault) {
  const start = String(startValue(spec, modelDefault) ?? "");
  const custom = /^(\d+)x(\d+)$/i.exec(start);
  const sizeName = uniqueId("size");
  const radios = [...spec.presets, "custom"].map((value) => {
    const checked = custom ? value === "custom" : value === start.toUpperCase();
    const input = h("input", { type: "radio", name: sizeName, value, id: uniqueId("size"), checked });
    return { input, label: h("label", { class: "radio", for: input.id }, value === "custom" ? "Custom" : value) };
  });
  if (!radios.some((radio) => radio.input.checked)) radios[0].input.checked = true;
  const width = h("input", { type: "number", min: 1, step: 1, value: custom ? custom[1] : "2048", inputmode: "numeric", id: uniqueId("w") });
  const height = h("input", { type: "number", min: 1, step: 1, value: custom ? custom[2] : "2048", inputmode: "numeric", id: uniqueId("h") });
  const customSize = h(
    "div",
    { class: "custom-size", hidden: !custom },
    h("label", { for: width.id }, "Width"), width,
    h("span", { "aria-hidden": "true" }, "×"),
    h("label", { for: height.id }, "Height"), height,
    h("span", { class: "unit" }, "px"),
  );
  const choice = () => radios.find((radio) => radio.input.checked).input.value;
  for (const radio of radios) radio.input.addEventListener("change", () => { customSize.hidden = choice() !== "custom"; });
  const wrapper = fieldset({
    legend: "Size",
    name: "size",
    children: [h("div", { class: "segmented" }, radios.map((radio) => [radio.input, radio.label])), customSize],
    hint: `Custom sizes: ${spec.pixels.min.toLocaleString("en")} to ${spec.pixels.max.toLocaleString("en")} pixels ` +
      `in total, width ÷ height between ${ratioText(spec.aspect.min)} and ${ratioText(spec.aspect.max)}.`,
  });
  return {
    path: "size",
    spec,
    wrapper,
    value: () => (choice() === "custom" ? { width: numberValue(width), height: numberValue(height) } : { preset: choice() }),
  };
}

/** Web search: one switch per tool the model offers. */
function toolsControl(spec) {
  const boxes = spec.values.map((tool) => [tool, checkbox(tool === "web_search" ? "Search the web" : tool, "tools")]);
  return {
    path: "tools",
    spec,
    wrapper: h("div", { class: "checks" }, boxes.map(([, box]) => box.wrapper)),
    value: () => {
      const chosen = boxes.filter(([, box]) => box.input.checked).map(([tool]) => ({ type: tool }));
      return chosen.length ? chosen : undefined;
    },
  };
}

function imageForm(models, callbacks) {
  const prompt = promptField({ label: "Prompt", required: true, placeholder: "A lighthouse on a cliff at dawn, watercolor" });
  const references = referenceList({ legend: "Reference images (optional)", name: "images", urlLabel: "Reference image link" });
  const modelFields = h("div", { class: "model-fields" });
  let model = null;
  let controls = [];
  let form = null;
  const picker = modelPicker(models, (chosen) => {
    model = chosen;
    if (form) clearErrors(form); // they named the fields of the model chosen before
    const { capabilities } = model;
    prompt.configure(capabilities.prompt);
    const sizeSpec = fieldSpec(capabilities, "size");
    const size = sizeControl(sizeSpec, (model.defaults || {}).size);
    const tools = fieldSpec(capabilities, "tools") ? toolsControl(fieldSpec(capabilities, "tools")) : null;
    const others = fieldControls(model, new Set(["size", "tools"]));
    controls = [size, ...others, ...(tools ? [tools] : [])];
    const mode = inputMode(capabilities, "reference_images");
    const rules = capabilities.inputs.image;
    if (mode) {
      references.configure({
        limit: mode.images.max,
        types: ["image"],
        rules,
        countText: (items) => `${items.length} of ${mode.images.max} · ${imageRulesText(rules)}`,
      });
    }
    modelFields.replaceChildren(...present(
      size.wrapper,
      mode ? references.wrapper : null,
      h("div", { class: "row" }, others.filter((control) => control.spec.type !== "boolean").map((control) => control.wrapper)),
      h("div", { class: "checks" }, others.filter((control) => control.spec.type === "boolean").map((control) => control.wrapper),
        tools ? tools.wrapper : null),
    ));
  });

  const submit = h("button", { type: "submit", class: "button primary" }, "Generate image");
  form = h(
    "form",
    { class: "task-form", novalidate: true, "aria-label": "New image task" },
    formErrorBox(),
    picker.elements,
    prompt.wrapper,
    modelFields,
    h("div", { class: "form-actions" }, submit),
  );
  picker.start();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = selectedModel(picker.control, models);
    const mode = inputMode(model.capabilities, "reference_images");
    const state = { model_id: chosen?.model_id, prompt: prompt.control.value, references: mode ? references.get() : [],
      values: valuesOf(controls) };
    const problems = validateImageForm(state, model.capabilities);
    if (problems.length) {
      showFormErrors(form, problems);
      return;
    }
    sendTask(form, submit, async (progress) => {
      const { size, max_images: maxImages, ...rest } = state.values;
      const body = assignValues({
        type: "image",
        model_id: state.model_id,
        prompt: state.prompt.trim(),
        size: size.preset || `${size.width}x${size.height}`,
      }, rest);
      if (maxImages > 1) body.max_images = maxImages;
      if (state.references.length) body.images = await mediaValues(state.references, "images", progress);
      return body;
    }, { noun: "Image", modelControl: picker.control, ...callbacks });
  });
  return form;
}

function videoForm(models, callbacks) {
  let model = null;
  let controls = [];
  let form = null;
  const rules = () => model.capabilities.inputs.image;
  const prompt = promptField({ label: "Prompt", required: false, placeholder: "The camera slowly pushes in on a sleeping cat" });
  const first = frameSlot({ legend: "First frame (optional)", name: "images[0]", rules });
  const last = frameSlot({ legend: "Last frame (optional)", name: "images[1]", rules });
  const references = referenceList({ legend: "Reference media (optional)", name: "references", urlLabel: "Reference link" });
  const modelFields = h("div", { class: "model-fields" });
  const picker = modelPicker(models, (chosen) => {
    model = chosen;
    if (form) clearErrors(form); // they named the fields of the model chosen before
    const { capabilities } = model;
    prompt.configure(capabilities.prompt);
    const label = prompt.wrapper.querySelector("label");
    label.textContent = inputMode(capabilities, "text") ? "Prompt (optional with a first frame)" : "Prompt (optional)";
    const firstFrame = inputMode(capabilities, "first_frame");
    const lastFrame = inputMode(capabilities, "first_last_frame");
    const referenceMode = inputMode(capabilities, "references");
    first.render();
    last.render();
    if (referenceMode) {
      const limits = referenceMode.references;
      const types = Object.keys(limits).filter((type) => limits[type].max > 0);
      references.configure({
        limit: types.reduce((total, type) => total + limits[type].max, 0),
        types,
        rules: capabilities.inputs.image,
        countText: () => `Up to ${types.map((type) => `${limits[type].max} ${type}`).join(", ")}; never with first/last frames.` +
          (limits.audio.max && !limits.audio.alone ? " Audio needs an image or video with it." : ""),
      });
    }
    controls = fieldControls(model, new Set());
    const main = controls.filter((control) => MAIN_VIDEO_FIELDS.has(control.path));
    const checks = controls.filter((control) => control.spec.type === "boolean");
    const more = controls.filter((control) => !main.includes(control) && !checks.includes(control));
    modelFields.replaceChildren(...present(
      firstFrame ? h("div", { class: "row frames" }, first.wrapper, lastFrame ? last.wrapper : null) : null,
      referenceMode ? references.wrapper : null,
      firstFrame || referenceMode ? h("p", { class: "hint" }, `Images: ${imageRulesText(capabilities.inputs.image)}`) : null,
      h("div", { class: "row" }, main.map((control) => control.wrapper)),
      h("div", { class: "checks" }, checks.map((control) => control.wrapper)),
      more.length ? h("details", { class: "more-options" }, h("summary", {}, "More options"),
        h("div", { class: "row" }, more.map((control) => control.wrapper))) : null,
    ));
  });

  const submit = h("button", { type: "submit", class: "button primary" }, "Generate video");
  form = h(
    "form",
    { class: "task-form", novalidate: true, "aria-label": "New video task" },
    formErrorBox(),
    picker.elements,
    prompt.wrapper,
    modelFields,
    h("div", { class: "form-actions" }, submit),
  );
  picker.start();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const { capabilities } = model;
    const chosen = selectedModel(picker.control, models);
    const firstFrame = inputMode(capabilities, "first_frame");
    const state = {
      model_id: chosen?.model_id,
      prompt: prompt.control.value,
      first: firstFrame ? first.get() : null,
      last: inputMode(capabilities, "first_last_frame") ? last.get() : null,
      references: inputMode(capabilities, "references") ? references.get() : [],
      values: valuesOf(controls),
    };
    const problems = validateVideoForm(state, capabilities);
    if (problems.length) {
      showFormErrors(form, problems);
      return;
    }
    sendTask(form, submit, async (progress) => {
      const body = assignValues({ type: "video", model_id: state.model_id, params: {} }, state.values);
      if (state.prompt.trim()) body.prompt = state.prompt.trim();
      const frames = [state.first, state.last].filter(Boolean);
      if (frames.length) body.images = await mediaValues(frames, "images", progress);
      if (state.references.length) {
        const urls = await mediaValues(state.references, "references", progress);
        body.references = state.references.map((reference, index) => ({ type: reference.type, url: urls[index] }));
      }
      return body;
    }, { noun: "Video", modelControl: picker.control, ...callbacks });
  });
  return form;
}

function noModels(kind) {
  return h("p", { class: "notice" }, `No ${kind} model is available right now. An administrator can enable one.`);
}

/**
 * The create panel with Image/Video tabs; `callbacks.onSubmitted(taskId)` runs after a task is accepted. A retired
 * model (or one whose capabilities the API does not know) is not offered.
 */
export function createPanel(models, callbacks) {
  const offered = models.filter((model) => model.status !== "retired" && model.capabilities);
  const kinds = [
    ["image", "Image", () => {
      const available = offered.filter((model) => model.type === "image");
      return available.length ? imageForm(available, callbacks) : noModels("image");
    }],
    ["video", "Video", () => {
      const available = offered.filter((model) => model.type === "video");
      return available.length ? videoForm(available, callbacks) : noModels("video");
    }],
  ];
  const tabs = [];
  const panels = [];
  for (const [kind, label, build] of kinds) {
    const tabId = uniqueId(`tab-${kind}`);
    const panelId = uniqueId(`panel-${kind}`);
    tabs.push(h("button", { type: "button", role: "tab", id: tabId, "aria-controls": panelId, dataset: { kind } }, label));
    panels.push(h("div", { role: "tabpanel", id: panelId, "aria-labelledby": tabId, class: "tabpanel" }, build()));
  }
  const activate = (index, focus) => {
    tabs.forEach((tab, position) => {
      const selected = position === index;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      panels[position].hidden = !selected;
    });
    if (focus) tabs[index].focus();
  };
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => activate(index, false));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) activate((index + step + tabs.length) % tabs.length, true);
    });
  });
  activate(0, false);
  return h(
    "section",
    { class: "panel create", "aria-labelledby": "create-heading" },
    h("h2", { id: "create-heading" }, "Create"),
    h("div", { role: "tablist", "aria-label": "What to create", class: "tabs" }, tabs),
    panels,
  );
}
