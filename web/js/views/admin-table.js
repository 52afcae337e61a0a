// The frame both admin screens share: a heading with its toolbar, an error box, and a table of what the API lists.

import { h } from "../dom.js";
import { showPageError } from "../forms.js";

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

  container.append(
    h(
      "section",
      { class: "panel admin" },
      h("div", { class: "panel-head" }, h("h1", {}, title), h("div", { class: "toolbar" }, toolbar)),
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
      empty,
    ),
  );
  load();
  return load;
}
