// The "Create" panel: image and video task forms, checked in the browser before anything is sent.

import { api } from "../api.js";
import { formatBytes, h, newUuid, toast, uniqueId } from "../dom.js";
import { checkbox, clearErrors, clearFieldError, field, fieldset, formErrorBox, select, setFieldError, showFormErrors, withBusyButton } from "../forms.js";
import * as L from "../limits.js";
import { imageDimensions, referenceToImageValue } from "../uploads.js";
import { imageReferenceProblem, validateImageForm, validateVideoForm, videoFrameProblem } from "../validate.js";

const ACCEPTED_TYPES = L.IMAGE_INPUT_FORMATS.map((format) => `image/${format}`).join(",");
const FORMAT_NAMES = `${L.IMAGE_INPUT_FORMATS.slice(0, -1).join(", ")} or ${L.IMAGE_INPUT_FORMATS.at(-1)}`;

/** "" stays NaN instead of turning into 0, so an empty number field fails validation. */
function numberValue(input) {
  return input.value.trim() === "" ? Number.NaN : Number(input.value);
}

async function fileReference(file) {
  const size = await imageDimensions(file);
  return { kind: "file", file, width: size?.width, height: size?.height, previewUrl: URL.createObjectURL(file) };
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
  return reference.kind === "file"
    ? h("img", { class: "thumb", src: reference.previewUrl, alt: "" })
    : h("span", { class: "thumb link-thumb", "aria-hidden": "true" }, "URL");
}

/** "Choose file" and "add by link" controls; calls onFiles(FileList) or onUrl(string). */
function sourcePicker({ multiple, fileLabel, urlLabel, onFiles, onUrl }) {
  const fileInput = h("input", { type: "file", accept: ACCEPTED_TYPES, multiple, hidden: true });
  fileInput.addEventListener("change", () => {
    if (fileInput.files.length) onFiles([...fileInput.files]);
    fileInput.value = "";
  });
  const urlInput = h("input", { type: "url", inputmode: "url", placeholder: "https://…", "aria-label": urlLabel });
  const addUrl = async () => {
    const url = urlInput.value.trim();
    if (url && (await onUrl(url))) urlInput.value = "";
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
    h("div", { class: "url-adder" }, urlInput, h("button", { type: "button", class: "button", onclick: addUrl }, "Add link")),
  );
}

/** The chosen model id; empty when the API has reported it disabled, so validation asks for another. */
function selectedModel(control) {
  const option = control.selectedOptions[0];
  return option && !option.disabled ? option.value : "";
}

function modelSelect(models) {
  const control = select(models.map((model) => [model.model_id, model.display_name || model.model_id]));
  return { control, wrapper: field({ label: "Model", name: "model_id", control }) };
}

function promptField({ required, placeholder }) {
  const control = h("textarea", { rows: 4, maxlength: L.PROMPT_MAX_CHARS, placeholder, required });
  const wrapper = field({
    label: required ? "Prompt" : "Prompt (optional with a first frame)",
    name: "prompt",
    control,
    hint: `Up to ${L.PROMPT_MAX_CHARS} characters.`,
  });
  return { control, wrapper };
}

async function sendTask(form, button, buildBody, { noun, modelControl, onSubmitted }) {
  await withBusyButton(button, "Sending…", async (progress) => {
    try {
      const body = await buildBody(progress);
      progress("Sending…");
      const created = await api("POST", "/api/tasks", { body, headers: { "Idempotency-Key": newUuid() } });
      clearErrors(form);
      toast(`${noun} task queued.`);
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

/** Resolve references to `images[]` values, uploading large files; a failure names the image it belongs to. */
async function imageValues(references, progress) {
  const values = [];
  for (const [index, reference] of references.entries()) {
    if (reference.kind === "file" && reference.file.size > L.INLINE_UPLOAD_MAX_BYTES) {
      progress(`Uploading ${index + 1} of ${references.length}…`);
    }
    try {
      values.push(await referenceToImageValue(reference));
    } catch (error) {
      if (error.status === 401 || (error.code === "validation_error" && error.details)) throw error;
      throw Object.assign(new Error(error.message), {
        code: "validation_error",
        details: [{ field: `images[${index}]`, message: error.message }],
      });
    }
  }
  return values;
}

function imageForm(models, callbacks) {
  const model = modelSelect(models);
  const prompt = promptField({ required: true, placeholder: "A lighthouse on a cliff at dawn, watercolor" });

  const sizeName = uniqueId("size");
  const sizeRadios = ["2K", "4K", "custom"].map((value) => {
    const input = h("input", { type: "radio", name: sizeName, value, id: uniqueId("size"), checked: value === "2K" });
    return { input, label: h("label", { class: "radio", for: input.id }, value === "custom" ? "Custom" : value) };
  });
  const width = h("input", { type: "number", min: 1, step: 1, value: "2048", inputmode: "numeric", id: uniqueId("w") });
  const height = h("input", { type: "number", min: 1, step: 1, value: "2048", inputmode: "numeric", id: uniqueId("h") });
  const customSize = h(
    "div",
    { class: "custom-size", hidden: true },
    h("label", { for: width.id }, "Width"), width,
    h("span", { "aria-hidden": "true" }, "×"),
    h("label", { for: height.id }, "Height"), height,
    h("span", { class: "unit" }, "px"),
  );
  const sizeChoice = () => sizeRadios.find((radio) => radio.input.checked).input.value;
  for (const radio of sizeRadios) {
    radio.input.addEventListener("change", () => {
      customSize.hidden = sizeChoice() !== "custom";
    });
  }
  const sizeField = fieldset({
    legend: "Size",
    name: "size",
    children: [h("div", { class: "segmented" }, sizeRadios.map((radio) => [radio.input, radio.label])), customSize],
    hint: "Custom sizes: 2560×1440 to 4096×4096 pixels in total, width ÷ height between 1/16 and 16.",
  });

  let references = [];
  const referenceList = h("ul", { class: "reference-list" });
  const referenceCount = h("p", { class: "hint" });
  const referencesField = fieldset({
    legend: "Reference images (optional)",
    name: "images",
    children: [
      referenceList,
      sourcePicker({
        multiple: true,
        fileLabel: "Choose files…",
        urlLabel: "Reference image link",
        onFiles: (files) => addReferences(files.map((file) => ({ file }))),
        onUrl: (url) => addReferences([{ url }]),
      }),
      referenceCount,
    ],
  });
  const renderReferences = () => {
    referenceList.replaceChildren(
      ...references.map((reference, index) =>
        h(
          "li",
          { class: "field reference", dataset: { field: `images[${index}]` } },
          referencePreview(reference),
          h("span", { class: "reference-name" }, referenceLabel(reference)),
          h("button", {
            type: "button",
            class: "button ghost small",
            "aria-label": `Remove reference image ${index + 1}`,
            onclick: () => {
              releaseReference(references[index]);
              references = references.filter((_, position) => position !== index);
              renderReferences();
            },
          }, "Remove"),
          h("p", { class: "field-error", hidden: true }),
        ),
      ),
    );
    referenceCount.textContent = `${references.length} of ${L.IMAGE_MAX_REFERENCE_IMAGES} · ${FORMAT_NAMES}, ` +
      `up to ${formatBytes(L.IMAGE_INPUT_MAX_BYTES)} each.`;
  };
  // Returns true when everything was added, so the link box can be emptied.
  const addReferences = async (items) => {
    const problems = [];
    for (const item of items) {
      if (references.length >= L.IMAGE_MAX_REFERENCE_IMAGES) {
        problems.push(`At most ${L.IMAGE_MAX_REFERENCE_IMAGES} reference images.`);
        break;
      }
      const reference = item.file ? await fileReference(item.file) : { kind: "url", url: item.url };
      const problem = imageReferenceProblem(reference);
      if (problem) {
        releaseReference(reference);
        problems.push(problem);
      } else {
        references = [...references, reference];
      }
    }
    renderReferences();
    if (problems.length) setFieldError(referencesField, problems.join(" "));
    else clearFieldError(referencesField);
    return !problems.length;
  };
  renderReferences();

  const maxImages = h("input", { type: "number", min: 1, max: L.IMAGE_MAX_IMAGES, step: 1, value: "1", inputmode: "numeric" });
  const maxImagesField = field({
    label: "Images to generate",
    name: "max_images",
    control: maxImages,
    hint: `1 for a single image, 2–${L.IMAGE_MAX_IMAGES} for a related group (references + generated ≤ ${L.IMAGE_MAX_TOTAL_IMAGES}).`,
  });
  const watermark = checkbox("Add watermark", "watermark");

  const applyDefaults = () => {
    const defaults = models.find((item) => item.model_id === model.control.value)?.defaults || {};
    if (typeof defaults.size === "string") {
      const preset = defaults.size.toUpperCase();
      const match = /^(\d+)x(\d+)$/i.exec(defaults.size);
      for (const radio of sizeRadios) radio.input.checked = radio.input.value === (match ? "custom" : preset);
      if (match) [width.value, height.value] = [match[1], match[2]];
      customSize.hidden = !match;
    }
    if (Number.isInteger(defaults.max_images)) maxImages.value = String(defaults.max_images);
    if (typeof defaults.watermark === "boolean") watermark.input.checked = defaults.watermark;
  };
  model.control.addEventListener("change", applyDefaults);
  applyDefaults();

  const submit = h("button", { type: "submit", class: "button primary" }, "Generate image");
  const form = h(
    "form",
    { class: "task-form", novalidate: true, "aria-label": "New image task" },
    formErrorBox(),
    model.wrapper,
    prompt.wrapper,
    sizeField,
    referencesField,
    h("div", { class: "row" }, maxImagesField, watermark.wrapper),
    h("div", { class: "form-actions" }, submit),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const choice = sizeChoice();
    const state = {
      model_id: selectedModel(model.control),
      prompt: prompt.control.value,
      size: choice === "custom" ? { width: numberValue(width), height: numberValue(height) } : { preset: choice },
      references,
      maxImages: numberValue(maxImages),
    };
    const problems = validateImageForm(state);
    if (problems.length) {
      showFormErrors(form, problems);
      return;
    }
    sendTask(form, submit, async (progress) => {
      const body = {
        type: "image",
        model_id: state.model_id,
        prompt: state.prompt.trim(),
        size: state.size.preset || `${state.size.width}x${state.size.height}`,
        watermark: watermark.input.checked,
      };
      if (state.maxImages > 1) body.max_images = state.maxImages;
      if (references.length) body.images = await imageValues(references, progress);
      return body;
    }, { noun: "Image", modelControl: model.control, ...callbacks });
  });
  return form;
}

/** One first/last frame slot: empty it offers a file or a link, filled it shows the frame and "Remove". */
function frameSlot({ legend, name }) {
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
        onFiles: async ([file]) => set(await fileReference(file)),
        onUrl: (url) => set({ kind: "url", url }),
      }));
    }
  };
  const set = (next) => {
    const problem = next && videoFrameProblem(next);
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
  render();
  return { wrapper, get: () => reference };
}

function videoForm(models, callbacks) {
  const model = modelSelect(models);
  const prompt = promptField({ required: false, placeholder: "The camera slowly pushes in on a sleeping cat" });
  const first = frameSlot({ legend: "First frame (optional)", name: "images[0]" });
  const last = frameSlot({ legend: "Last frame (optional)", name: "images[1]" });
  const resolution = select(L.VIDEO_RESOLUTIONS.map((value) => [value, value]), L.VIDEO_DEFAULT_RESOLUTION);
  const ratio = select(L.VIDEO_RATIOS.map((value) => [value, value]), "16:9");
  const duration = h("input", {
    type: "number", min: L.VIDEO_MIN_DURATION, max: L.VIDEO_MAX_DURATION, step: 1,
    value: String(L.VIDEO_DEFAULT_DURATION), inputmode: "numeric",
  });
  const seed = h("input", { type: "number", min: L.VIDEO_MIN_SEED, max: L.VIDEO_MAX_SEED, step: 1, value: "-1" });
  const cameraFixed = checkbox("Keep the camera fixed", "params.camera_fixed");
  const returnLastFrame = checkbox("Return the last frame as an image", "params.return_last_frame", true);
  const watermark = checkbox("Add watermark", "params.watermark");

  const applyDefaults = () => {
    const defaults = models.find((item) => item.model_id === model.control.value)?.defaults || {};
    if (L.VIDEO_RESOLUTIONS.includes(defaults.resolution)) resolution.value = defaults.resolution;
    if (L.VIDEO_RATIOS.includes(defaults.ratio)) ratio.value = defaults.ratio;
    if (Number.isInteger(defaults.duration)) duration.value = String(defaults.duration);
    if (Number.isInteger(defaults.seed)) seed.value = String(defaults.seed);
    if (typeof defaults.camera_fixed === "boolean") cameraFixed.input.checked = defaults.camera_fixed;
    if (typeof defaults.return_last_frame === "boolean") returnLastFrame.input.checked = defaults.return_last_frame;
    if (typeof defaults.watermark === "boolean") watermark.input.checked = defaults.watermark;
  };
  model.control.addEventListener("change", applyDefaults);
  applyDefaults();

  const submit = h("button", { type: "submit", class: "button primary" }, "Generate video");
  const form = h(
    "form",
    { class: "task-form", novalidate: true, "aria-label": "New video task" },
    formErrorBox(),
    model.wrapper,
    prompt.wrapper,
    h("div", { class: "row frames" }, first.wrapper, last.wrapper),
    h("p", { class: "hint" }, `Frames: ${FORMAT_NAMES} up to ${formatBytes(L.VIDEO_INPUT_MAX_BYTES)}, ` +
      `sides ${L.VIDEO_INPUT_MIN_SIDE_EXCLUSIVE}–${L.VIDEO_INPUT_MAX_SIDE_EXCLUSIVE} px, ` +
      `width ÷ height between ${L.VIDEO_INPUT_MIN_ASPECT_EXCLUSIVE} and ${L.VIDEO_INPUT_MAX_ASPECT_EXCLUSIVE}.`),
    h(
      "div",
      { class: "row" },
      field({ label: "Resolution", name: "params.resolution", control: resolution }),
      field({ label: "Aspect ratio", name: "params.ratio", control: ratio, hint: "adaptive follows the first frame." }),
    ),
    h(
      "div",
      { class: "row" },
      field({ label: "Duration (seconds)", name: "params.duration", control: duration,
        hint: `${L.VIDEO_MIN_DURATION}–${L.VIDEO_MAX_DURATION} s.` }),
      field({ label: "Seed", name: "params.seed", control: seed, hint: "-1 picks a random seed." }),
    ),
    h("div", { class: "checks" }, cameraFixed.wrapper, returnLastFrame.wrapper, watermark.wrapper),
    h("div", { class: "form-actions" }, submit),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const state = {
      model_id: selectedModel(model.control),
      prompt: prompt.control.value,
      first: first.get(),
      last: last.get(),
      resolution: resolution.value,
      ratio: ratio.value,
      duration: numberValue(duration),
      seed: numberValue(seed),
    };
    const problems = validateVideoForm(state);
    if (problems.length) {
      showFormErrors(form, problems);
      return;
    }
    sendTask(form, submit, async (progress) => {
      const body = {
        type: "video",
        model_id: state.model_id,
        params: {
          resolution: state.resolution,
          ratio: state.ratio,
          duration: state.duration,
          seed: state.seed,
          camera_fixed: cameraFixed.input.checked,
          return_last_frame: returnLastFrame.input.checked,
          watermark: watermark.input.checked,
        },
      };
      if (state.prompt.trim()) body.prompt = state.prompt.trim();
      const frames = [state.first, state.last].filter(Boolean);
      if (frames.length) body.images = await imageValues(frames, progress);
      return body;
    }, { noun: "Video", modelControl: model.control, ...callbacks });
  });
  return form;
}

function noModels(kind) {
  return h("p", { class: "notice" }, `No ${kind} model is available right now. An administrator can enable one.`);
}

/** The create panel with Image/Video tabs; `callbacks.onSubmitted(taskId)` runs after a task is accepted. */
export function createPanel(models, callbacks) {
  const kinds = [
    ["image", "Image", () => {
      const available = models.filter((model) => model.type === "image");
      return available.length ? imageForm(available, callbacks) : noModels("image");
    }],
    ["video", "Video", () => {
      const available = models.filter((model) => model.type === "video");
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
