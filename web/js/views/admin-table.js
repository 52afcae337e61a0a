// The frames the admin screens share: a heading with its toolbar, an error box, and a table of what the API lists
// (all at once, or a page at a time).

import { h } from "../dom.js";
import { showPageError } from "../forms.js";

const EMPTY_PAGES_FOLLOWED = 5;

/**
 * Render an admin table into `container` and load it: `fetchRows()` resolves with the items, `row(item)` builds
 * one <tr>, `emptyText` (optional) shows when there are none. Returns `load`, which fetches the rows again.
 */
export function renderAdminTable(container, { title, toolbar, caption, columns, fetchRows, row, emptyText }) {
  const tableBody = h("tbody");
  const pageError = h("div", { class: "form-errors", role: "alert", hidden: true });
  const empty = emptyText ? h("p", { class: "empty", hidden: true }, emptyText) : null;

  async function load() {
    try {
      const items = await fetchRows();
      tableBody.replaceChildren(...items.map(row));
      if (empty) empty.hidden = items.length > 0;
      pageError.hidden = true;
    } catch (error) {
      if (error.status === 401) return;
      showPageError(pageError, error);
    }
  }

  container.append(tablePanel({ head: [h("h1", {}, title), h("div", { class: "toolbar" }, toolbar)], pageError,
    caption, columns, tableBody, after: [empty] }));
  load();
  return load;
}

/** The panel both kinds of admin table sit in: heading, what goes above the table, the table, what follows. */
function tablePanel({ head, above = [], pageError, caption, columns, tableBody, after }) {
  return h(
    "section",
    { class: "panel admin" },
    h("div", { class: "panel-head" }, head),
    above,
    pageError,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, caption),
        h("thead", {}, h("tr", {}, columns.map((label) => h("th", { scope: "col" }, label)))),
        tableBody,
      ),
    ),
    after,
  );
}

/**
 * A table the API lists a page at a time (everyone's tasks, the audit log): `filters` (a form, optional) sits
 * above it, `fetchPage(cursor)` resolves with {items, next_cursor}, and "Load more" follows the cursor until it is
 * null. Returns {reload, replaceRow(old, item)}: reload starts again from the first page (after a filter change).
 */
export function renderPagedTable(container, { title, filters, caption, columns, fetchPage, row, emptyText }) {
  const tableBody = h("tbody");
  const pageError = h("div", { class: "form-errors", role: "alert", hidden: true });
  const empty = h("p", { class: "empty", hidden: true }, emptyText);
  const more = h("button", { type: "button", class: "button load-more", hidden: true }, "Load more");
  let cursor = null;
  let generation = 0;

  async function fetchInto(replace) {
    const mine = replace ? ++generation : generation;
    tableBody.setAttribute("aria-busy", "true");
    try {
      // A filtered listing may hand out pages with fewer items than asked for, even none: follow a few of those
      // at once rather than show an empty page with "Load more" under it.
      let page = await fetchPage(replace ? null : cursor);
      for (let followed = 1; !page.items.length && page.next_cursor && followed < EMPTY_PAGES_FOLLOWED; followed += 1) {
        if (mine !== generation) return;
        page = await fetchPage(page.next_cursor);
      }
      if (mine !== generation) return; // a newer filter's answer wins
      const rows = page.items.map(row);
      if (replace) tableBody.replaceChildren(...rows);
      else tableBody.append(...rows);
      cursor = page.next_cursor;
      more.hidden = !cursor;
      empty.hidden = tableBody.children.length > 0 || Boolean(cursor);
      pageError.hidden = true;
    } catch (error) {
      if (error.status !== 401 && mine === generation) showPageError(pageError, error);
    } finally {
      if (mine === generation) tableBody.removeAttribute("aria-busy");
    }
  }

  more.addEventListener("click", async () => {
    more.disabled = true;
    await fetchInto(false);
    more.disabled = false;
  });

  container.append(tablePanel({ head: [h("h1", {}, title)], above: [filters], pageError, caption, columns, tableBody,
    after: [empty, more] }));
  fetchInto(true);
  return {
    reload: () => fetchInto(true),
    replaceRow: (old, item) => old.replaceWith(row(item)),
  };
}
