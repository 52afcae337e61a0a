// Reading a model's `capabilities` (GET /api/models, docs/api.md "Capabilities"): the fields it takes, their
// values and ranges, its input modes and what each input image must be. The form and its checks are built from
// these alone, so the browser knows no limit of its own.

/** The spec of a field by its request path ("size", "params.duration"), or undefined when the model lacks it. */
export function fieldSpec(capabilities, path) {
  return capabilities.fields[path];
}

/** The input mode ("first_frame", "references", …) when the model offers it. */
export function inputMode(capabilities, mode) {
  return capabilities.input_modes.find((item) => item.mode === mode);
}

/** The value a field starts with: the deployment's model default when it fits, else Ark's. */
export function startValue(spec, modelDefault) {
  if (modelDefault === undefined || modelDefault === null) return spec.default;
  if (spec.type === "enum" && !spec.values.includes(modelDefault)) return spec.default;
  return modelDefault;
}

/** "2–12", "0–9", or "-1 to 9" when the range starts below zero. */
export function rangeText({ min, max }) {
  return min < 0 ? `${min} to ${max}` : `${min}–${max}`;
}

/** 16 → "16", 0.0625 → "1/16", 0.4 → "0.4": aspect bounds as people write them. */
export function ratioText(value) {
  return value < 1 && Number.isInteger(1 / value) ? `1/${1 / value}` : String(value);
}

/** "jpeg, png, webp, bmp, tiff or gif". */
export function namesText(values, conjunction = "or") {
  return values.length > 1 ? `${values.slice(0, -1).join(", ")} ${conjunction} ${values.at(-1)}` : values.join("");
}

/** The `accept` attribute of a file picker for input images. */
export function acceptedTypes(imageRules) {
  return imageRules.formats.map((format) => `image/${format}`).join(",");
}

/** Whether `value` lies within `spec`'s integer range (or is its `auto` value). */
export function inIntegerRange(spec, value) {
  if (!Number.isInteger(value)) return false;
  if (spec.auto !== undefined && spec.auto !== null && value === spec.auto) return true;
  return value >= spec.min && value <= spec.max;
}

/**
 * Problems with the ties between fields (`requires`, `not_with`) for the values a form will send: `values` maps
 * each request path to its value (absent, null or false for a field left out or off).
 */
export function tieProblems(capabilities, values) {
  const given = (path) => values[path] !== undefined && values[path] !== null && values[path] !== false &&
    !(Array.isArray(values[path]) && !values[path].length);
  const problems = [];
  for (const [path, spec] of Object.entries(capabilities.fields)) {
    if (!given(path)) continue;
    for (const [other, wanted] of Object.entries(spec.requires || {})) {
      if (given(other) && values[other] !== wanted) {
        problems.push({ field: path, message: `Needs ${labelOf(other)} ${wanted}.` });
      }
    }
    for (const rule of spec.not_with || []) {
      const [other, wanted] = rule.split("=");
      if (given(other) && (wanted === undefined || String(values[other]) === wanted)) {
        problems.push({ field: path, message: `Cannot be used with ${labelOf(other)}${wanted ? ` ${wanted}` : ""}.` });
      }
    }
  }
  return problems;
}

/** "params.return_last_frame" → "return last frame". */
export function labelOf(path) {
  return path.replace(/^params\./, "").replaceAll("_", " ");
}
