// Presigned links expire (an hour on arkflow's API): when, and when to fetch fresh ones.

// A link is refreshed this long before it expires, or after three quarters of its life when that is shorter.
const REFRESH_LEAD_MS = 5 * 60_000;
// setTimeout's longest delay.
const MAX_TIMER_MS = 2 ** 31 - 1;

/** When a presigned URL stops working (ms since the epoch): SigV4's X-Amz-Date + X-Amz-Expires, or SigV2's
 * Expires. Null for a URL that says nothing (a public link, an inline image). */
export function urlExpiresAt(value) {
  let url;
  try {
    url = new URL(value);
  } catch {
    return null;
  }
  const params = url.searchParams;
  const signedAt = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(params.get("X-Amz-Date") || "");
  const lifetime = Number(params.get("X-Amz-Expires"));
  if (signedAt && Number.isFinite(lifetime)) {
    const [, year, month, day, hours, minutes, seconds] = signedAt.map(Number);
    return Date.UTC(year, month - 1, day, hours, minutes, seconds) + lifetime * 1000;
  }
  const expires = params.get("Expires");
  return expires && /^\d+$/.test(expires) ? Number(expires) * 1000 : null;
}

/** When links received at `receivedAt` should be replaced: before the first of them expires; null if never. */
export function refreshDueAt(urls, receivedAt) {
  const expiries = urls.map(urlExpiresAt).filter((value) => value !== null);
  if (!expiries.length) return null;
  const expiresAt = Math.min(...expiries);
  return expiresAt - Math.min(REFRESH_LEAD_MS, Math.max(0, expiresAt - receivedAt) / 4);
}

/** One timer for the earliest of many due times (ms since the epoch); `run` gets called at or after it. */
export function dueTimer(run) {
  let timer = null;
  return {
    schedule(dueAt) {
      clearTimeout(timer);
      timer = null;
      if (dueAt === null) return;
      timer = setTimeout(run, Math.min(MAX_TIMER_MS, Math.max(0, dueAt - Date.now())));
    },
    cancel() {
      clearTimeout(timer);
    },
  };
}
