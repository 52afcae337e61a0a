// REST client: configuration, session storage and the one fetch wrapper every screen uses.

const SESSION_KEY = "arkflow.session";

export class ApiError extends Error {
  constructor(status, code, message, details = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

let config = null;
let unauthorizedHandler = () => {};

/** Read config.json (apiBaseUrl, wsUrl) that ships next to the static files. */
export async function loadConfig() {
  const response = await fetch("config.json", { cache: "no-store" });
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
  const loaded = await response.json();
  if (typeof loaded.apiBaseUrl !== "string") throw new Error("config.json has no apiBaseUrl");
  config = { ...loaded, apiBaseUrl: loaded.apiBaseUrl.replace(/\/+$/, "") };
  return config;
}

export function getConfig() {
  return config;
}

/** Called with a user-facing message whenever the API says the session is no longer valid. */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

export function getSession() {
  try {
    const session = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
    return session && typeof session.token === "string" ? session : null;
  } catch {
    return null;
  }
}

export function saveSession(session) {
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

export function clearSession() {
  localStorage.removeItem(SESSION_KEY);
}

function sessionExpired(session) {
  return Boolean(session.expires_at) && Date.parse(session.expires_at) <= Date.now();
}

const EXPIRED_MESSAGE = "Your session has expired. Please log in again.";

/**
 * Call the API. Resolves with the parsed JSON body (null when empty); rejects with ApiError carrying the
 * API's {code, message, details}. A 401 on an authenticated call ends the session.
 */
export async function api(method, path, { body, headers = {}, auth = true, query } = {}) {
  const url = new URL(config.apiBaseUrl + path);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const requestHeaders = { Accept: "application/json", ...headers };
  if (body !== undefined) requestHeaders["Content-Type"] = "application/json";
  let token = null;
  if (auth) {
    const session = getSession();
    if (!session || sessionExpired(session)) {
      unauthorizedHandler(EXPIRED_MESSAGE);
      throw new ApiError(401, "unauthorized", EXPIRED_MESSAGE);
    }
    token = session.token;
    requestHeaders.Authorization = `Bearer ${token}`;
  }
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: requestHeaders,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network_error", "Cannot reach the server. Check your connection and try again.");
  }
  const text = await response.text();
  let payload = null;
  if (text) {
    try {
      payload = JSON.parse(text);
    } catch {
      payload = null;
    }
  }
  if (response.ok) return payload;
  const error = payload && payload.error ? payload.error : {};
  const apiError = new ApiError(
    response.status,
    error.code || `http_${response.status}`,
    error.message || `The server answered ${response.status} ${response.statusText}.`.trim(),
    error.details ?? null,
  );
  apiError.retryAfter = response.headers.get("Retry-After");
  // A 401 ends the session it was sent with, not one begun since (a logout and a login while it was in flight).
  if (response.status === 401 && auth && getSession()?.token === token) unauthorizedHandler(EXPIRED_MESSAGE);
  throw apiError;
}
