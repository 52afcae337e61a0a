// Checks run in the browser before a task is sent, read from the chosen model's capabilities (the server judges
// again). Each returns [{field, message}] using the API's field paths, so client-side and server-side problems are
// displayed the same way.

import { fieldSpec, inIntegerRange, inputMode, namesText, ratioText, tieProblems } from "./capabilities.js";
import { formatBytes } from "./dom.js";

const EXTENSION_FORMATS = { jpg: "jpeg", jpeg: "jpeg", png: "png", webp: "webp", bmp: "bmp", tif: "tiff", tiff: "tiff", gif: "gif" };
const MEDIA_SCHEMES = { image: ["https:"], video: ["https:", "asset:"], audio: ["https:", "asset:"] };

/** "jpeg", "png", … for a File from its MIME type (or its extension when the browser gives none). */
export function fileFormat(file) {
  const fromType = /^image\/([a-z0-9.+-]+)$/i.exec(file.type || "");
  if (fromType) {
    const subtype = fromType[1].toLowerCase();
    return subtype === "jpg" ? "jpeg" : subtype;
  }
  const extension = (file.name.split(".").pop() || "").toLowerCase();
  return EXTENSION_FORMATS[extension] || extension;
}

function hasScheme(value, schemes) {
  try {
    return schemes.includes(new URL(value).protocol);
  } catch {
    return false;
  }
}

function aspectProblem(width, height, { min, max, inclusive = true }) {
  const aspect = width / height;
  const outside = inclusive ? aspect < min || aspect > max : aspect <= min || aspect >= max;
  return outside ? `Width ÷ height must be between ${ratioText(min)} and ${ratioText(max)}.` : null;
}

/** Why an input image of these dimensions breaks the model's `inputs.image` rules, or null. */
function dimensionProblem(width, height, rules) {
  const size = `this one is ${width}×${height}`;
  if (rules.max_side !== null) {
    if (Math.min(width, height) <= rules.min_side || Math.max(width, height) >= rules.max_side) {
      return `Each side must be between ${rules.min_side} and ${rules.max_side} px (${size}).`;
    }
  } else if (Math.min(width, height) <= rules.min_side) {
    return `Each side must be larger than ${rules.min_side} px (${size}).`;
  }
  if (rules.max_pixels !== null && width * height > rules.max_pixels) {
    return `At most ${rules.max_pixels.toLocaleString("en")} pixels (${size}).`;
  }
  return aspectProblem(width, height, rules.aspect);
}

/** Why an input image (a file or a link) cannot be used under the model's `inputs.image` rules, or null. */
export function inputImageProblem(reference, rules) {
  if (reference.kind === "url") return hasScheme(reference.url, ["https:"]) ? null : "Image links must start with https://.";
  const format = fileFormat(reference.file);
  if (!rules.formats.includes(format)) {
    return `${reference.file.name}: ${format || "this"} files are not accepted; use ${namesText(rules.formats)}.`;
  }
  const size = reference.file.size;
  if (rules.max_bytes_inclusive ? size > rules.max_bytes : size >= rules.max_bytes) {
    return `${reference.file.name} is ${formatBytes(size)}; the limit is ${formatBytes(rules.max_bytes)}.`;
  }
  return reference.width && reference.height ? dimensionProblem(reference.width, reference.height, rules) : null;
}

/** Why a video reference (`{type, url}`, or an image file) cannot be used, or null. */
export function mediaReferenceProblem(reference, rules) {
  if (reference.type === "image") return inputImageProblem(reference, rules);
  return hasScheme(reference.url, MEDIA_SCHEMES[reference.type])
    ? null
    : `${reference.type === "video" ? "Video" : "Audio"} links must start with https:// or asset://.`;
}

function promptProblems(prompt, { required, max_chars: maxChars }, requiredMessage) {
  if (required && !prompt.trim()) return [{ field: "prompt", message: requiredMessage }];
  if (prompt.length > maxChars) return [{ field: "prompt", message: `At most ${maxChars} characters (now ${prompt.length}).` }];
  return [];
}

function sizeProblem(size, spec) {
  if (size.preset) {
    return spec.presets.includes(size.preset) ? null : `Choose ${namesText(spec.presets)}, or a custom size.`;
  }
  const { width, height } = size;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    return "Width and height must be positive whole numbers.";
  }
  const pixels = width * height;
  if (pixels < spec.pixels.min || pixels > spec.pixels.max) {
    return `Total pixels must be between ${spec.pixels.min.toLocaleString("en")} and ` +
      `${spec.pixels.max.toLocaleString("en")}; ${width}×${height} is ${pixels.toLocaleString("en")}.`;
  }
  return aspectProblem(width, height, spec.aspect);
}

function enumProblems(capabilities, values, paths) {
  const problems = [];
  for (const path of paths) {
    const spec = fieldSpec(capabilities, path);
    if (spec && values[path] !== undefined && !spec.values.includes(values[path])) {
      problems.push({ field: path, message: `Choose ${namesText(spec.values)}.` });
    }
  }
  return problems;
}

/**
 * Problems with an image task form: `{model_id, prompt, references, values}`, `values` holding each field sent
 * by request path (`size` as {preset} or {width, height}).
 */
export function validateImageForm(form, capabilities) {
  const problems = [];
  if (!form.model_id) problems.push({ field: "model_id", message: "Choose a model." });
  problems.push(...promptProblems(form.prompt, capabilities.prompt, "Describe the image you want."));
  const { values } = form;
  const size = sizeProblem(values.size, fieldSpec(capabilities, "size"));
  if (size) problems.push({ field: "size", message: size });
  const referenceLimit = inputMode(capabilities, "reference_images")?.images.max ?? 0;
  if (form.references.length > referenceLimit) {
    problems.push({ field: "images", message: `At most ${referenceLimit} reference images.` });
  }
  form.references.forEach((reference, index) => {
    const problem = inputImageProblem(reference, capabilities.inputs.image);
    if (problem) problems.push({ field: `images[${index}]`, message: problem });
  });
  const count = values.max_images;
  const countSpec = fieldSpec(capabilities, "max_images");
  if (countSpec && count !== undefined) {
    if (!inIntegerRange(countSpec, count)) {
      problems.push({ field: "max_images", message: `Choose between ${countSpec.min} and ${countSpec.max} images.` });
    } else if (count + form.references.length > countSpec.max_total) {
      problems.push({
        field: "max_images",
        message: `Reference images plus generated images can be at most ${countSpec.max_total}; ` +
          `with ${form.references.length} references choose at most ${countSpec.max_total - form.references.length}.`,
      });
    }
  }
  problems.push(...enumProblems(capabilities, values, ["output_format"]));
  return problems;
}

function referenceCountProblems(references, mode) {
  const counts = { image: 0, video: 0, audio: 0 };
  for (const reference of references) counts[reference.type] += 1;
  const limits = mode.references;
  for (const type of Object.keys(counts)) {
    if (counts[type] > limits[type].max) {
      return [{ field: "references", message: `At most ${limits[type].max} reference ${type} items.` }];
    }
  }
  if (counts.audio && !counts.image && !counts.video && !limits.audio.alone) {
    return [{ field: "references", message: "Reference audio needs a reference image or video with it." }];
  }
  if (!counts.video && !(counts.audio && limits.audio.alone) && counts.image < limits.image.min) {
    return [{ field: "references", message: `Add at least ${limits.image.min} reference image.` }];
  }
  return [];
}

function videoInputProblems(form, capabilities) {
  const problems = [];
  const rules = capabilities.inputs.image;
  if (form.references.length) {
    if (form.first || form.last) {
      problems.push({ field: "references", message: "Reference media cannot be mixed with first/last frames." });
    }
    problems.push(...referenceCountProblems(form.references, inputMode(capabilities, "references")));
    form.references.forEach((reference, index) => {
      const problem = mediaReferenceProblem(reference, rules);
      if (problem) problems.push({ field: `references[${index}]`, message: problem });
    });
  }
  if (form.first) {
    const problem = inputImageProblem(form.first, rules);
    if (problem) problems.push({ field: "images[0]", message: problem });
  }
  if (form.last) {
    const problem = form.first ? inputImageProblem(form.last, rules) : "A last frame needs a first frame.";
    if (problem) problems.push({ field: "images[1]", message: problem });
  }
  if (!form.first && !form.references.length && !inputMode(capabilities, "text")) {
    problems.push({ field: "images", message: "This model needs a first frame or reference images." });
  }
  return problems;
}

/**
 * Problems with a video task form: `{model_id, prompt, first, last, references, values}`, `values` holding each
 * `params.*` field sent by request path.
 */
export function validateVideoForm(form, capabilities) {
  const problems = [];
  const { values } = form;
  if (!form.model_id) problems.push({ field: "model_id", message: "Choose a model." });
  const needsPrompt = !form.first && !form.references.length;
  problems.push(...promptProblems(form.prompt, { ...capabilities.prompt, required: needsPrompt },
    "Describe the video, or give a first frame."));
  problems.push(...videoInputProblems(form, capabilities));
  problems.push(...enumProblems(capabilities, values,
    ["params.resolution", "params.ratio", "params.service_tier", "params.output_format"]));
  const ratio = fieldSpec(capabilities, "params.ratio");
  if (values["params.ratio"] === "adaptive" && !form.first && !form.references.length && !ratio.adaptive_without_image) {
    problems.push({ field: "params.ratio", message: "“Adaptive” follows the first frame; add one or pick a ratio." });
  }
  const excluded = inputMode(capabilities, "references")?.resolutions_excluded || [];
  if (form.references.length && excluded.includes(values["params.resolution"])) {
    problems.push({ field: "params.resolution", message: `${values["params.resolution"]} is not available with reference media.` });
  }
  for (const [path, spec] of Object.entries(capabilities.fields)) {
    if (spec.type !== "integer" || values[path] === undefined || inIntegerRange(spec, values[path])) continue;
    const auto = spec.auto !== undefined && spec.auto !== null ? ` (or ${spec.auto} for auto)` : "";
    problems.push({ field: path, message: `A whole number from ${spec.min} to ${spec.max}${auto}.` });
  }
  problems.push(...tieProblems(capabilities, { ...values, references: form.references }));
  return problems;
}
