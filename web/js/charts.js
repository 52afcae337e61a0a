// Time-series charts for the admin dashboard, drawn by uPlot (vendored: vendor/uplot, see the README). Each chart is
// a <figure>: the canvas for the eye, and under it ("Values") a table of the very values handed to uPlot, for
// screen readers and for anyone who wants the numbers.

import { h } from "./dom.js";

let uPlotModule = null;

/** uPlot, loaded the first time a chart is drawn (only admins' dashboards need it). */
function loadUPlot() {
  uPlotModule ||= import("../vendor/uplot/uPlot.esm.js").then((module) => module.default);
  return uPlotModule;
}

// Distinguishable on light and dark backgrounds alike.
const PALETTE = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#1098ad", "#7048e8", "#a15c07"];
const HEIGHT = 220;

function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function formatValue(value, format) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return format ? format(value) : String(value);
}

/**
 * A line chart in `figure` (which must be in the page, for its width). `spec`:
 * {caption, times: [epoch seconds], series: [{label, values, dash?}], timeLabel(epoch) -> text,
 *  valueFormat?(n) -> text, utc?: bool (days: label them as the dates they are, whatever the browser's zone)}.
 * Returns {update(spec), destroy()}.
 */
export function lineChart(figure, spec) {
  const canvasSlot = h("div", { class: "chart-canvas", "aria-hidden": "true" });
  const table = h("table", { class: "chart-values" });
  const details = h("details", { class: "chart-details" }, h("summary", {}, "Values"), h("div", { class: "table-wrap" }, table));
  figure.classList.add("chart");
  figure.replaceChildren(h("figcaption", {}, spec.caption), canvasSlot, details);

  let plot = null;
  let shown = null;
  let destroyed = false;
  const resize = new ResizeObserver(() => {
    if (plot && canvasSlot.clientWidth) plot.setSize({ width: canvasSlot.clientWidth, height: HEIGHT });
  });
  resize.observe(canvasSlot);

  function fillTable(current) {
    table.replaceChildren(
      h("caption", { class: "visually-hidden" }, current.caption),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, current.timeHeading || "Time"),
        current.series.map((line) => h("th", { scope: "col" }, line.label)))),
      h("tbody", {}, current.times.map((time, index) => h("tr", {},
        h("th", { scope: "row" }, current.timeLabel(time)),
        current.series.map((line) => h("td", {}, formatValue(line.values[index], current.valueFormat)))))),
    );
  }

  async function draw(current) {
    const uPlot = await loadUPlot();
    if (destroyed || current !== shown) return;
    const data = [current.times, ...current.series.map((line) => line.values)];
    const sameShape = plot && plot.series.length === data.length
      && current.series.every((line, index) => plot.series[index + 1].label === line.label);
    if (sameShape) {
      plot.setData(data);
      return;
    }
    if (plot) plot.destroy();
    const muted = cssColor("--muted");
    const grid = cssColor("--border");
    const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    plot = new uPlot({
      width: canvasSlot.clientWidth || 600,
      height: HEIGHT,
      ...(current.utc ? { tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC") } : {}),
      scales: { x: { time: true }, y: { range: (self, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [axis, { ...axis, values: (self, ticks) => ticks.map((tick) => formatValue(tick, current.valueFormat)) }],
      series: [
        { label: current.timeHeading || "Time", value: (self, seconds) => (seconds === null ? "–" : current.timeLabel(seconds)) },
        ...current.series.map((line, index) => ({
          label: line.label,
          stroke: PALETTE[index % PALETTE.length],
          width: 2,
          ...(line.dash ? { dash: line.dash } : {}),
          points: { show: current.times.length <= 31 },
          value: (self, value) => formatValue(value, current.valueFormat),
        })),
      ],
    }, data, canvasSlot);
  }

  // The table is built only while it is open: a day's series is hundreds of rows per chart.
  details.addEventListener("toggle", () => {
    if (details.open) fillTable(shown);
    else table.replaceChildren();
  });

  function update(next) {
    shown = next;
    figure.querySelector("figcaption").textContent = next.caption;
    if (details.open) fillTable(next);
    return draw(next);
  }

  update(spec);
  return {
    update,
    destroy() {
      destroyed = true;
      resize.disconnect();
      if (plot) plot.destroy();
    },
  };
}
