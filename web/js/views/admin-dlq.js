// Admin: what sits in each lane's dead-letter queue (and the webhook deliveries'), and replaying it. A replay is
// safe by the API's rules: a task that has finished meanwhile is dropped, never run twice; the answer says how
// many went back and how many were dropped, and why.

import { api } from "../api.js";
import { confirmDialog } from "../dialog.js";
import { formatDateTime, h, toast } from "../dom.js";
import { showPageError, toastError } from "../forms.js";
import { STATUS_LABELS } from "./tasks.js";

const REPLAYED_PER_CALL = 100; // the replay route's most per call

function resultText(lane, answer) {
  const reasons = Object.entries(answer.dropped_reasons || {}).map(([reason, count]) => `${reason}: ${count}`);
  return `${lane}: replayed ${answer.replayed}, dropped ${answer.dropped}${reasons.length ? ` (${reasons.join(", ")})` : ""}.`;
}

export function renderAdminDeadLetters(container) {
  const pageError = h("div", { class: "form-errors", role: "alert", hidden: true });
  const result = h("p", { class: "notice replay-result", role: "status", hidden: true });
  const queues = h("div", { class: "dlq-queues" });
  const refreshButton = h("button", { type: "button", class: "button", onclick: () => load() }, "Refresh");

  container.append(h(
    "div",
    { class: "dead-letters" },
    h("section", { class: "panel" },
      h("div", { class: "panel-head" }, h("h1", {}, "Dead letters"), h("div", { class: "toolbar" }, refreshButton)),
      h("p", { class: "hint" }, "Messages a lane gave up on. Replaying sends them back to their lane; a task that has finished since is dropped, not run again."),
      result,
      pageError),
    queues,
  ));

  async function replay(queue, messageIds) {
    const count = queue.approximate;
    let message = `It goes back to the ${queue.lane} queue.`;
    if (!messageIds && count > REPLAYED_PER_CALL) {
      message = `The first ${REPLAYED_PER_CALL} of about ${count} messages go back to the ${queue.lane} queue; replay again for the rest.`;
    } else if (!messageIds) {
      message = `About ${count} message${count === 1 ? "" : "s"} go back to the ${queue.lane} queue.`;
    }
    const confirmed = await confirmDialog({
      title: messageIds ? `Replay message ${messageIds[0]}?` : `Replay ${queue.lane}?`,
      message,
      confirmLabel: "Replay",
    });
    if (!confirmed) return;
    try {
      const answer = await api("POST", `/api/admin/dlq/${encodeURIComponent(queue.lane)}/replay`,
        messageIds ? { body: { message_ids: messageIds } } : {});
      result.textContent = resultText(queue.lane, answer);
      result.hidden = false;
      toast(`Replayed ${answer.replayed}, dropped ${answer.dropped}.`);
    } catch (error) {
      toastError(error);
    }
    await load();
  }

  function queueSection(queue) {
    const headingId = `dlq-${queue.lane.replace(/[^a-z0-9-]/gi, "-")}`;
    const rows = queue.messages.map((message) => h(
      "tr",
      { dataset: { messageId: message.message_id } },
      h("th", { scope: "row" }, h("span", { class: "mono" }, message.message_id)),
      h("td", { dataset: { label: "Task" } }, h("span", { class: "cell-title mono" }, message.task_id || "–"),
        message.task_status ? h("span", { class: `status-pill ${message.task_status}` }, STATUS_LABELS[message.task_status] || message.task_status) : null),
      h("td", { dataset: { label: "Reason" } }, message.reason || "–"),
      h("td", { dataset: { label: "Receives" } }, String(message.receive_count ?? "–")),
      h("td", { dataset: { label: "Sent" } }, message.sent_at ? h("time", { datetime: message.sent_at }, formatDateTime(message.sent_at)) : "–"),
      h("td", { class: "row-actions", dataset: { label: "Actions" } },
        h("button", { type: "button", class: "button small", "aria-label": `Replay ${message.message_id}`,
          onclick: () => replay(queue, [message.message_id]) }, "Replay")),
    ));
    const shown = queue.messages.length;
    return h(
      "section",
      { class: "panel admin dlq-queue", dataset: { lane: queue.lane }, "aria-labelledby": headingId },
      h("div", { class: "panel-head" },
        h("h2", { id: headingId }, queue.lane, h("span", { class: "cell-sub" },
          queue.approximate ? `about ${queue.approximate} message${queue.approximate === 1 ? "" : "s"}${shown < queue.approximate ? `, ${shown} shown` : ""}` : "empty")),
        h("div", { class: "toolbar" }, h("button", { type: "button", class: "button primary", disabled: !queue.approximate,
          "aria-label": `Replay all of ${queue.lane}`, onclick: () => replay(queue, null) }, "Replay all"))),
      shown
        ? h("div", { class: "table-wrap" }, h("table", {},
          h("caption", { class: "visually-hidden" }, `Dead letters of ${queue.lane}`),
          h("thead", {}, h("tr", {}, ["Message", "Task", "Reason", "Receives", "Sent", "Actions"].map((label) => h("th", { scope: "col" }, label)))),
          h("tbody", {}, rows)))
        : h("p", { class: "empty" }, "No dead letters."),
    );
  }

  async function load() {
    try {
      const answer = await api("GET", "/api/admin/dlq");
      queues.replaceChildren(...answer.queues.map(queueSection));
      pageError.hidden = true;
    } catch (error) {
      if (error.status !== 401) showPageError(pageError, error);
    }
  }

  load();
}
