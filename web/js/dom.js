// DOM helpers. Every piece of data reaches the page as a text node or a checked attribute, never as HTML.

const URL_SCHEMES = new Set(["https:", "http:", "blob:"]);

/** A URL that is safe to put in href/src: http(s), blob, or an inline image; otherwise null. */
export function safeUrl(value) {
  if (typeof value !== "string" || value === "") return null;
  if (/^data:image\/[a-z0-9.+-]+;base64,/i.test(value)) return value;
  try {
    const url = new URL(value, window.location.href);
    return URL_SCHEMES.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

/**
 * Point `name` (href, src, poster) at `value` if safeUrl allows it, else remove the attribute: the one way a URL
 * reaches the page. Returns the URL set (or null); an unchanged URL is left alone, so nothing reloads.
 */
export function setUrl(element, name, value) {
  const url = safeUrl(value);
  if (!url) element.removeAttribute(name);
  else if (element.getAttribute(name) !== url) element.setAttribute(name, url);
  return url;
}

/**
 * Build an element: h("button", {type: "button", class: "x", onclick: fn}, "text", childNode, [more]).
 * Properties starting with "on" become listeners, `dataset` and `style` objects are merged, booleans toggle
 * attributes, href/src/poster pass through setUrl.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (name === "class") {
      element.className = value;
    } else if (name === "href" || name === "src" || name === "poster") {
      setUrl(element, name, value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else if (name === "value" || name === "checked") {
      element[name] = value;
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

let idCounter = 0;
export function uniqueId(prefix) {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

export function formatDuration(totalSeconds) {
  const seconds = Math.max(0, Math.floor(totalSeconds));
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = String(seconds % 60).padStart(2, "0");
  if (hours) return `${hours}h ${String(minutes).padStart(2, "0")}m ${rest}s`;
  if (minutes) return `${minutes}m ${rest}s`;
  return `${seconds % 60}s`;
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${Number((bytes / (1024 * 1024)).toFixed(1))} MB`;
}

const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function formatDateTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : dateTimeFormat.format(date);
}

/** Short-lived notice at the bottom of the screen (also announced to screen readers). */
export function toast(message, kind = "info") {
  const container = document.querySelector(".toasts");
  const item = h("p", { class: `toast ${kind}` }, message);
  container.append(item);
  setTimeout(() => item.remove(), 6000);
}

/** A random UUID; crypto.randomUUID exists only in secure contexts, so build one when it is missing. */
export function newUuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
