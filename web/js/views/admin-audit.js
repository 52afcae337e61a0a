// Admin: the audit trail, newest first: who did what to which target, and what changed. Filters by actor and
// target; "Load more" follows the API's cursor.

import { api } from "../api.js";
import { formatDateTime, h } from "../dom.js";
import { field } from "../forms.js";
import { renderPagedTable } from "./admin-table.js";

const LONGEST_VALUE = 80;

function shown(value) {
  if (value === undefined) return "–";
  const text = JSON.stringify(value);
  return text.length > LONGEST_VALUE ? `${text.slice(0, LONGEST_VALUE - 1)}…` : text;
}

/** What an entry changed, field by field: "concurrency: 4 → 8"; a creation or a deletion says so. */
function changes(entry) {
  const { before, after } = entry;
  if (!before && !after) return [h("span", { class: "cell-sub" }, "–")];
  if (typeof before !== "object" || typeof after !== "object" || Array.isArray(before) || Array.isArray(after)) {
    return [h("span", {}, `${shown(before ?? undefined)} → ${shown(after ?? undefined)}`)];
  }
  if (!before || !after) {
    const label = before ? "removed" : "set";
    const value = before || after;
    return [h("span", { class: "cell-sub" }, label), h("ul", { class: "changes" },
      Object.entries(value).map(([key, item]) => h("li", {}, h("code", {}, key), `: ${shown(item)}`)))];
  }
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])]
    .filter((key) => JSON.stringify(before[key]) !== JSON.stringify(after[key]));
  if (!keys.length) return [h("span", { class: "cell-sub" }, "no change")];
  return [h("ul", { class: "changes" }, keys.map((key) => h("li", {}, h("code", {}, key),
    `: ${shown(before[key])} → ${shown(after[key])}`)))];
}

export function renderAdminAudit(container) {
  const actor = h("input", { autocomplete: "off", autocapitalize: "none", placeholder: "anyone" });
  const target = h("input", { autocomplete: "off", autocapitalize: "none", placeholder: "model:…, user:…, task:…, dlq:…" });
  const filters = h(
    "form",
    { class: "filters admin-filters", role: "search", "aria-label": "Filter the audit log" },
    field({ label: "Actor", name: "actor", control: actor }),
    field({ label: "Target", name: "target", control: target }),
    h("button", { type: "submit", class: "button" }, "Apply"),
  );

  const table = renderPagedTable(container, {
    title: "Audit log",
    filters,
    caption: "Admin actions and quota refunds, newest first",
    columns: ["When", "Actor", "Action", "Target", "Change"],
    emptyText: "No entries match.",
    fetchPage: async (cursor) => {
      const page = await api("GET", "/api/admin/audit", { query: {
        actor: actor.value.trim(), target: target.value.trim(), cursor } });
      return { items: page.entries, next_cursor: page.next_cursor };
    },
    row: (entry) => h(
      "tr",
      { dataset: { action: entry.action } },
      h("th", { scope: "row" }, h("time", { datetime: entry.at }, formatDateTime(entry.at))),
      h("td", { dataset: { label: "Actor" } }, entry.actor),
      h("td", { dataset: { label: "Action" } }, h("code", {}, entry.action)),
      h("td", { dataset: { label: "Target" } }, h("span", { class: "mono" }, entry.target)),
      h("td", { dataset: { label: "Change" } }, changes(entry)),
    ),
  });

  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    table.reload();
  });
}
