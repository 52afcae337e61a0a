// Admin: the fleet at a glance. Per model: queue depth and running against concurrency over the window, wait and
// run times, outcomes, what Ark refuses, cost and the circuit breaker (closable by hand); then cost per day over
// two weeks and per user. Polls every 30 s, and at once when a breaker moves (the admin's WebSocket) or the
// connection comes back.

import { api } from "../api.js";
import { lineChart } from "../charts.js";
import { confirmDialog } from "../dialog.js";
import { formatDateTime, formatDuration, h, toast } from "../dom.js";
import { showPageError, toastError, withBusyButton } from "../forms.js";

const POLL_MS = 30_000;
const USAGE_DAYS = 14;
const USAGE_PAGE = 1000; // the API's largest page: two weeks of a busy fleet may still take several
const USAGE_MAX_PAGES = 100; // a bound on a cursor that never ends (100,000 rows are past what a chart can show)
const WINDOWS = [["24h", "Last 24 hours", 24], ["1h", "Last hour", 1]];
const CIRCUIT_LOOKS = {
  closed: ["succeeded", "Circuit closed"],
  half_open: ["queued", "Circuit half-open"],
  open: ["failed", "Circuit open"],
};

function seconds(value) {
  if (value === null || value === undefined) return "–";
  // Whole seconds would show a sub-second figure (a fast image's run) as "0s".
  return value < 10 ? `${Number(value.toFixed(1))}s` : formatDuration(value);
}

function money(amount, currency) {
  if (amount === null || amount === undefined) return "–";
  return `${Number(amount).toFixed(2)}${currency ? ` ${currency}` : ""}`;
}

function epochOf(iso) {
  return Date.parse(iso) / 1000;
}

function dayOf(epochSeconds) {
  return new Date(epochSeconds * 1000).toISOString().slice(0, 10);
}

/** The last `count` days (YYYY-MM-DD) as the API counts them, in its quota time zone, today last. */
function lastDays(timezone, count) {
  let today;
  try {
    today = new Intl.DateTimeFormat("en-CA", { timeZone: timezone, year: "numeric", month: "2-digit", day: "2-digit" })
      .format(new Date());
  } catch {
    today = new Date().toISOString().slice(0, 10);
  }
  const end = Date.parse(`${today}T00:00:00Z`);
  return Array.from({ length: count }, (_, index) => dayOf((end - (count - 1 - index) * 86_400_000) / 1000));
}

function stat(label, value, key) {
  return [h("dt", {}, label), h("dd", { dataset: { stat: key } }, value)];
}

/** One model's card; `update(model, windowLabel, windowHours)` shows a new reading in place (focus and scroll stay). */
function modelCard(onClose) {
  const heading = h("h2", { tabindex: "-1" });
  const pill = h("span", { class: "status-pill" });
  const circuitNote = h("p", { class: "cell-sub circuit-note" });
  const closeButton = h("button", { type: "button", class: "button small" }, "Close circuit");
  const stats = h("dl", { class: "stats" });
  const outcomes = h("ul", { class: "outcomes", "aria-label": "Outcomes" });
  const figure = h("figure", { dataset: { chart: "queue" } });
  const card = h(
    "article",
    { class: "panel model-card" },
    h("div", { class: "panel-head" }, heading, h("div", { class: "toolbar" }, pill, closeButton)),
    circuitNote,
    stats,
    h("h3", {}, "Outcomes"),
    outcomes,
    figure,
  );
  let chart = null;
  let current = null;
  closeButton.addEventListener("click", () => onClose(current, closeButton));

  function update(model, windowLabel, windowHours) {
    current = model;
    card.dataset.modelId = model.model_id;
    heading.textContent = model.model_id;
    card.setAttribute("aria-label", model.model_id);
    const circuit = model.circuit || { state: "closed" };
    const [look, text] = CIRCUIT_LOOKS[circuit.state] || ["", `Circuit ${circuit.state}`];
    pill.className = `status-pill ${look}`;
    pill.dataset.circuit = circuit.state;
    pill.textContent = text;
    closeButton.hidden = circuit.state === "closed";
    closeButton.setAttribute("aria-label", `Close circuit of ${model.model_id}`);
    circuitNote.hidden = circuit.state === "closed";
    circuitNote.replaceChildren(
      circuit.since ? h("span", {}, "Since ", h("time", { datetime: circuit.since }, formatDateTime(circuit.since))) : null,
      circuit.since && circuit.reason ? " · " : null,
      circuit.reason ? h("span", {}, circuit.reason) : null,
    );
    const ark429 = model.ark_429 ?? 0;
    const ratePerHour = windowHours ? ark429 / windowHours : 0;
    stats.replaceChildren(
      ...stat("Queued", String(model.queued), "queued"),
      ...stat("Running", `${model.running} / ${model.concurrency}`, "running"),
      ...stat("Wait p95", seconds(model.wait_s?.p95), "wait-p95"),
      ...stat("Run p95", seconds(model.run_s?.p95), "run-p95"),
      ...stat("Ark 429", `${ark429} (${Number(ratePerHour.toFixed(2))}/h)`, "ark-429"),
      ...stat("Ark 5xx", String(model.ark_5xx ?? 0), "ark-5xx"),
      ...stat("Cost", money(model.cost, model.currency), "cost"),
    );
    const counted = Object.entries(model.outcomes || {}).sort((a, b) => b[1] - a[1]);
    outcomes.replaceChildren(...(counted.length
      ? counted.map(([outcome, count]) => h("li", { dataset: { outcome } }, h("span", {}, outcome), h("strong", {}, String(count))))
      : [h("li", { class: "cell-sub" }, "None in this window")]));
    const series = model.series || { at: [], queued: [], running: [] };
    const spec = {
      caption: `Queue and running, ${windowLabel.toLowerCase()}`,
      times: series.at.map(epochOf),
      timeLabel: (time) => formatDateTime(new Date(time * 1000).toISOString()),
      series: [
        { label: "Queued", values: series.queued },
        { label: "Running", values: series.running },
        { label: "Concurrency", values: series.at.map(() => model.concurrency), dash: [6, 4] },
      ],
    };
    if (chart) chart.update(spec);
    else chart = lineChart(figure, spec); // the card is in the page by now: the chart takes its width
  }

  return { card, heading, update, destroy: () => chart && chart.destroy() };
}

function usageSection() {
  const figures = h("div", { class: "cost-charts" });
  const userRows = h("tbody");
  const empty = h("p", { class: "empty", hidden: true }, "No tasks in the last 14 days.");
  const charts = new Map();
  const section = h(
    "section",
    { class: "panel usage", "aria-labelledby": "usage-heading" },
    h("h2", { id: "usage-heading" }, `Cost per day, last ${USAGE_DAYS} days`),
    figures,
    empty,
    h("h3", {}, "By user"),
    h("div", { class: "table-wrap" }, h("table", { class: "usage-users" },
      h("caption", { class: "visually-hidden" }, `Usage by user, last ${USAGE_DAYS} days`),
      h("thead", {}, h("tr", {}, ["User", "Requests", "Succeeded", "Failed", "Cost"].map((label) => h("th", { scope: "col" }, label)))),
      userRows)),
  );

  function update(usage) {
    const days = lastDays(usage.timezone, USAGE_DAYS);
    const rows = usage.rows.filter((row) => days.includes(row.day));
    // One chart per currency: amounts in different currencies are never added up.
    const byCurrency = new Map();
    for (const row of rows) {
      const currency = row.currency || "";
      if (!byCurrency.has(currency)) byCurrency.set(currency, new Map());
      const models = byCurrency.get(currency);
      if (!models.has(row.model_id)) models.set(row.model_id, days.map(() => 0));
      if (typeof row.cost === "number") models.get(row.model_id)[days.indexOf(row.day)] += row.cost;
    }
    for (const [currency, chart] of charts) {
      if (!byCurrency.has(currency)) {
        chart.destroy();
        charts.delete(currency);
        figures.querySelector(`[data-currency="${CSS.escape(currency)}"]`)?.remove();
      }
    }
    for (const [currency, models] of byCurrency) {
      const spec = {
        caption: currency ? `Cost per day (${currency})` : "Cost per day (no price set)",
        timeHeading: "Day",
        times: days.map((day) => Date.parse(`${day}T00:00:00Z`) / 1000),
        timeLabel: dayOf,
        utc: true,
        valueFormat: (value) => Number(value.toFixed(2)).toString(),
        series: [...models].sort(([a], [b]) => a.localeCompare(b)).map(([modelId, values]) => ({
          label: modelId, values: values.map((value) => Math.round(value * 100) / 100) })),
      };
      if (charts.has(currency)) {
        charts.get(currency).update(spec);
      } else {
        const figure = h("figure", { dataset: { chart: "cost", currency } });
        figures.append(figure);
        charts.set(currency, lineChart(figure, spec));
      }
    }
    empty.hidden = rows.length > 0;

    const users = new Map();
    for (const row of rows) {
      const total = users.get(row.username) || { requests: 0, succeeded: 0, failed: 0, cost: new Map() };
      total.requests += row.requests;
      total.succeeded += row.succeeded;
      total.failed += row.failed;
      if (typeof row.cost === "number") total.cost.set(row.currency, (total.cost.get(row.currency) || 0) + row.cost);
      users.set(row.username, total);
    }
    userRows.replaceChildren(...[...users].sort(([a], [b]) => a.localeCompare(b)).map(([username, total]) => h(
      "tr",
      { dataset: { username } },
      h("th", { scope: "row" }, username),
      h("td", { dataset: { label: "Requests" } }, String(total.requests)),
      h("td", { dataset: { label: "Succeeded" } }, String(total.succeeded)),
      h("td", { dataset: { label: "Failed" } }, String(total.failed)),
      h("td", { dataset: { label: "Cost" } }, [...total.cost].map(([currency, amount]) => money(amount, currency)).join(", ") || "–"),
    )));
  }

  return { section, update, destroy: () => charts.forEach((chart) => chart.destroy()) };
}

export function renderAdminDashboard(container, { subscribeLive }) {
  const windowSelect = h("select", { id: "dashboard-window" },
    WINDOWS.map(([value, label]) => h("option", { value }, label)));
  const refreshButton = h("button", { type: "button", class: "button" }, "Refresh");
  const updated = h("p", { class: "cell-sub updated" });
  const pageError = h("div", { class: "form-errors", role: "alert", hidden: true });
  const grid = h("div", { class: "model-grid" });
  const usage = usageSection();
  const cards = new Map();
  let stopped = false;
  let inFlight = null;
  let again = false;

  container.append(h(
    "div",
    { class: "dashboard" },
    h("section", { class: "panel" },
      h("div", { class: "panel-head" }, h("h1", {}, "Dashboard"),
        h("div", { class: "toolbar" }, h("label", { for: windowSelect.id }, "Window"), windowSelect, refreshButton)),
      updated,
      pageError),
    grid,
    usage.section,
  ));

  function showMetrics(metrics) {
    const [, windowLabel, windowHours] = WINDOWS.find(([value]) => value === metrics.window) || WINDOWS[0];
    const seen = new Set();
    for (const model of metrics.models) {
      seen.add(model.model_id);
      let entry = cards.get(model.model_id);
      if (!entry) {
        entry = modelCard(closeCircuit);
        cards.set(model.model_id, entry);
      }
      grid.append(entry.card); // keeps the API's order; moving a node keeps its focus and chart
      entry.update(model, windowLabel, windowHours);
    }
    for (const [modelId, entry] of cards) {
      if (!seen.has(modelId)) {
        entry.destroy();
        entry.card.remove();
        cards.delete(modelId);
      }
    }
    if (!metrics.models.length) grid.replaceChildren(h("p", { class: "panel empty" }, "No models yet."));
  }

  /** Every page of the usage: a chart drawn from the first page alone would show too little cost. */
  async function readUsage() {
    const rows = [];
    let cursor;
    let timezone;
    let pages = 0;
    do {
      const page = await api("GET", "/api/admin/usage", { query: { days: USAGE_DAYS, limit: USAGE_PAGE, cursor } });
      rows.push(...page.rows);
      timezone = page.timezone;
      cursor = page.next_cursor;
      pages += 1;
    } while (cursor && !stopped && pages < USAGE_MAX_PAGES);
    return { timezone, rows };
  }

  /** Both readings, each shown on its own: a failing one leaves the other's figures standing. */
  async function load() {
    const [metrics, usageAnswer] = await Promise.allSettled([
      api("GET", "/api/admin/metrics", { query: { window: windowSelect.value } }),
      readUsage(),
    ]);
    if (stopped) return;
    if (metrics.status === "fulfilled") showMetrics(metrics.value);
    if (usageAnswer.status === "fulfilled") usage.update(usageAnswer.value);
    const failure = [metrics, usageAnswer].find((answer) => answer.status === "rejected");
    if (failure) {
      if (failure.reason.status !== 401) showPageError(pageError, failure.reason);
      return;
    }
    const now = new Date().toISOString();
    updated.replaceChildren("Updated ", h("time", { datetime: now }, formatDateTime(now)), " · refreshes every 30 s");
    pageError.hidden = true;
  }

  /** One reading at a time; a request made meanwhile reads again once the current one is done. */
  async function refresh() {
    if (inFlight) {
      again = true;
      return inFlight;
    }
    inFlight = load();
    await inFlight;
    inFlight = null;
    if (again && !stopped) {
      again = false;
      await refresh();
    }
  }

  async function closeCircuit(model, button) {
    const confirmed = await confirmDialog({
      title: `Close the circuit of ${model.model_id}?`,
      message: "Its lane starts sending calls to Ark again at once, without waiting for a probe.",
      confirmLabel: "Close circuit",
    });
    if (!confirmed) return;
    await withBusyButton(button, "Closing…", async () => {
      try {
        await api("POST", `/api/admin/models/${encodeURIComponent(model.model_id)}/circuit/close`);
        toast(`Circuit of ${model.model_id} closed.`);
      } catch (error) {
        toastError(error);
      }
    });
    await refresh();
    // The button hides once the circuit is closed: focus stays on its card rather than falling to the page.
    if (button.hidden && (document.activeElement === document.body || document.activeElement === button)) {
      cards.get(model.model_id)?.heading.focus();
    }
  }

  windowSelect.addEventListener("change", refresh);
  refreshButton.addEventListener("click", () => withBusyButton(refreshButton, "Refreshing…", refresh));
  const timer = setInterval(() => {
    if (!document.hidden) refresh();
  }, POLL_MS);
  const onVisible = () => {
    if (!document.hidden) refresh();
  };
  document.addEventListener("visibilitychange", onVisible);
  const unsubscribe = subscribeLive({
    onEvent: (event) => {
      if (event.type === "circuit") refresh();
    },
    onConnected: refresh,
  });
  refresh();

  return () => {
    stopped = true;
    clearInterval(timer);
    document.removeEventListener("visibilitychange", onVisible);
    unsubscribe();
    for (const entry of cards.values()) entry.destroy();
    usage.destroy();
  };
}
