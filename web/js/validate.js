// Checks run in the browser before a task is sent. Each returns [{field, message}] using the API's field
// paths, so client-side and server-side problems are displayed the same way.

import { formatBytes } from "./dom.js";
import * as L from "./limits.js";

const EXTENSION_FORMATS = { jpg: "jpeg", jpeg: "jpeg", png: "png", webp: "webp", bmp: "bmp", tif: "tiff", tiff: "tiff", gif: "gif" };

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

function isHttpsUrl(value) {
  try {
    return new URL(value).protocol === "https:";
  } catch {
    return false;
  }
}

// Output sizes and reference images share Seedream's aspect range.
function imageAspectProblem(width, height) {
  const aspect = width / height;
  return aspect < L.IMAGE_MIN_ASPECT || aspect > L.IMAGE_MAX_ASPECT ? "Width ÷ height must be between 1/16 and 16." : null;
}

function pixelSizeProblem(width, height) {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    return "Width and height must be positive whole numbers.";
  }
  const pixels = width * height;
  if (pixels < L.IMAGE_MIN_PIXELS || pixels > L.IMAGE_MAX_PIXELS) {
    return `Total pixels must be between ${L.IMAGE_MIN_PIXELS.toLocaleString("en")} (2560×1440) and ` +
      `${L.IMAGE_MAX_PIXELS.toLocaleString("en")} (4096×4096); ${width}×${height} is ${pixels.toLocaleString("en")}.`;
  }
  return imageAspectProblem(width, height);
}

function referenceProblem(reference, { maxBytes, checkDimensions }) {
  if (reference.kind === "url") {
    return isHttpsUrl(reference.url) ? null : "Image links must start with https://.";
  }
  const format = fileFormat(reference.file);
  if (!L.IMAGE_INPUT_FORMATS.includes(format)) {
    return `${reference.file.name}: ${format || "this"} files are not accepted; use ${L.IMAGE_INPUT_FORMATS.join(", ")}.`;
  }
  if (reference.file.size > maxBytes) {
    return `${reference.file.name} is ${formatBytes(reference.file.size)}; the limit is ${formatBytes(maxBytes)}.`;
  }
  if (reference.width && reference.height) return checkDimensions(reference.width, reference.height);
  return null;
}

function imageReferenceDimensions(width, height) {
  if (width <= L.IMAGE_INPUT_MIN_SIDE_EXCLUSIVE || height <= L.IMAGE_INPUT_MIN_SIDE_EXCLUSIVE) {
    return `Each side must be larger than ${L.IMAGE_INPUT_MIN_SIDE_EXCLUSIVE} px (this one is ${width}×${height}).`;
  }
  if (width * height > L.IMAGE_INPUT_MAX_PIXELS) return `At most 6000×6000 pixels (this one is ${width}×${height}).`;
  return imageAspectProblem(width, height);
}

function videoFrameDimensions(width, height) {
  const low = L.VIDEO_INPUT_MIN_SIDE_EXCLUSIVE;
  const high = L.VIDEO_INPUT_MAX_SIDE_EXCLUSIVE;
  if (Math.min(width, height) <= low || Math.max(width, height) >= high) {
    return `Each side must be between ${low} and ${high} px (this one is ${width}×${height}).`;
  }
  const aspect = width / height;
  const lowAspect = L.VIDEO_INPUT_MIN_ASPECT_EXCLUSIVE;
  const highAspect = L.VIDEO_INPUT_MAX_ASPECT_EXCLUSIVE;
  if (aspect <= lowAspect || aspect >= highAspect) {
    return `Width ÷ height must be between ${lowAspect} and ${highAspect} (this one is ${width}×${height}).`;
  }
  return null;
}

function promptProblems(prompt, required) {
  if (required && !prompt.trim()) return [{ field: "prompt", message: "Describe the image you want." }];
  if (prompt.length > L.PROMPT_MAX_CHARS) {
    return [{ field: "prompt", message: `At most ${L.PROMPT_MAX_CHARS} characters (now ${prompt.length}).` }];
  }
  return [];
}

/** Why a reference image (file or link) cannot be used, or null. */
export function imageReferenceProblem(reference) {
  return referenceProblem(reference, { maxBytes: L.IMAGE_INPUT_MAX_BYTES, checkDimensions: imageReferenceDimensions });
}

/** Why a video first/last frame (file or link) cannot be used, or null. */
export function videoFrameProblem(reference) {
  return referenceProblem(reference, { maxBytes: L.VIDEO_INPUT_MAX_BYTES, checkDimensions: videoFrameDimensions });
}

/** Problems with an image task form: {model_id, prompt, size: {preset} | {width, height}, references, maxImages}. */
export function validateImageForm(form) {
  const problems = [];
  if (!form.model_id) problems.push({ field: "model_id", message: "Choose a model." });
  problems.push(...promptProblems(form.prompt, true));
  if (!form.size.preset) {
    const problem = pixelSizeProblem(form.size.width, form.size.height);
    if (problem) problems.push({ field: "size", message: problem });
  } else if (!L.IMAGE_SIZE_PRESETS.includes(form.size.preset)) {
    problems.push({ field: "size", message: `Choose ${L.IMAGE_SIZE_PRESETS.join(" or ")}, or a custom size.` });
  }
  if (form.references.length > L.IMAGE_MAX_REFERENCE_IMAGES) {
    problems.push({ field: "images", message: `At most ${L.IMAGE_MAX_REFERENCE_IMAGES} reference images.` });
  }
  form.references.forEach((reference, index) => {
    const problem = imageReferenceProblem(reference);
    if (problem) problems.push({ field: `images[${index}]`, message: problem });
  });
  const count = form.maxImages;
  if (!Number.isInteger(count) || count < 1 || count > L.IMAGE_MAX_IMAGES) {
    problems.push({ field: "max_images", message: `Choose between 1 and ${L.IMAGE_MAX_IMAGES} images.` });
  } else if (count + form.references.length > L.IMAGE_MAX_TOTAL_IMAGES) {
    problems.push({
      field: "max_images",
      message: `Reference images plus generated images can be at most ${L.IMAGE_MAX_TOTAL_IMAGES}; ` +
        `with ${form.references.length} references choose at most ${L.IMAGE_MAX_TOTAL_IMAGES - form.references.length}.`,
    });
  }
  return problems;
}

/** Problems with a video task form: {model_id, prompt, first, last, resolution, ratio, duration, seed}. */
export function validateVideoForm(form) {
  const problems = [];
  if (!form.model_id) problems.push({ field: "model_id", message: "Choose a model." });
  if (!form.prompt.trim() && !form.first) {
    problems.push({ field: "prompt", message: "Describe the video, or give a first frame." });
  }
  problems.push(...promptProblems(form.prompt, false));
  if (form.first) {
    const problem = videoFrameProblem(form.first);
    if (problem) problems.push({ field: "images[0]", message: problem });
  }
  if (form.last) {
    const problem = form.first ? videoFrameProblem(form.last) : "A last frame needs a first frame.";
    if (problem) problems.push({ field: "images[1]", message: problem });
  }
  if (!L.VIDEO_RESOLUTIONS.includes(form.resolution)) {
    problems.push({ field: "params.resolution", message: `Choose ${L.VIDEO_RESOLUTIONS.join(", ")}.` });
  }
  if (!L.VIDEO_RATIOS.includes(form.ratio)) {
    problems.push({ field: "params.ratio", message: "Choose an aspect ratio." });
  } else if (form.ratio === "adaptive" && !form.first) {
    problems.push({ field: "params.ratio", message: "“Adaptive” follows the first frame; add one or pick a ratio." });
  }
  const duration = form.duration;
  if (!Number.isInteger(duration) || duration < L.VIDEO_MIN_DURATION || duration > L.VIDEO_MAX_DURATION) {
    problems.push({
      field: "params.duration",
      message: `Duration is a whole number of seconds from ${L.VIDEO_MIN_DURATION} to ${L.VIDEO_MAX_DURATION}.`,
    });
  }
  const seed = form.seed;
  if (!Number.isInteger(seed) || seed < L.VIDEO_MIN_SEED || seed > L.VIDEO_MAX_SEED) {
    problems.push({ field: "params.seed", message: `Seed is a whole number from -1 (random) to ${L.VIDEO_MAX_SEED}.` });
  }
  return problems;
}
