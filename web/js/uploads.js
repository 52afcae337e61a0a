// Turn the references a form holds into the strings the API takes in `images`.

import { api, ApiError } from "./api.js";
import { fileFormat } from "./validate.js";

// The web app's own choice, not an Ark limit: small files travel inline, larger ones through a presigned S3 upload.
export const INLINE_UPLOAD_MAX_BYTES = 256 * 1024;

function readAsDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// The format the checks judged, so an alias the browser reports (image/jpg) reaches the API as image/jpeg.
function contentType(file) {
  return `image/${fileFormat(file)}`;
}

async function inlineDataUri(file) {
  const dataUri = await readAsDataUri(file);
  // The API wants data:image/<fmt>;base64,…; a file without a MIME type reads as application/octet-stream.
  return dataUri.replace(/^data:[^;]*;/, `data:${contentType(file)};`);
}

async function uploadToStorage(file) {
  const upload = await api("POST", "/api/uploads", { body: { content_type: contentType(file), size: file.size } });
  const form = new FormData();
  for (const [name, value] of Object.entries(upload.fields || {})) form.append(name, value);
  form.append("file", file);
  let response;
  try {
    response = await fetch(upload.url, { method: "POST", body: form });
  } catch {
    throw new ApiError(0, "network_error", `Uploading ${file.name} failed: the storage service is unreachable.`);
  }
  if (!response.ok) {
    const status = response.status === 413 || response.status === 400 ? response.status : 502;
    throw new ApiError(status, "upload_failed", `Uploading ${file.name} failed (storage answered ${response.status}).`);
  }
  return `upload:${upload.upload_id}`;
}

/** Pixel dimensions of a file (null when the browser cannot decode it, e.g. TIFF). */
export async function imageDimensions(file) {
  try {
    const bitmap = await createImageBitmap(file);
    const size = { width: bitmap.width, height: bitmap.height };
    bitmap.close();
    return size;
  } catch {
    return null;
  }
}

/** The `images[]` entry for one reference: the URL itself, an inline data URI, or upload:<id>. */
export async function referenceToImageValue(reference) {
  if (reference.kind === "url") return reference.url;
  if (reference.file.size <= INLINE_UPLOAD_MAX_BYTES) return inlineDataUri(reference.file);
  return uploadToStorage(reference.file);
}
