// The live task list: filters, paging, WebSocket updates, elapsed time, cancel/delete, and results.

import { api } from "../api.js";
import { openDialog, confirmDialog } from "../dialog.js";
import { formatDateTime, formatDuration, h, newUuid, safeUrl, setUrl, toast } from "../dom.js";
import { describeError, select, toastError, withBusyButton } from "../forms.js";
import { dueTimer, refreshDueAt } from "../links.js";

const PAGE_SIZE = 20;
// Links are refetched no sooner than this after they arrived, and this long after a refetch failed.
const LINK_MIN_AGE_MS = 2_000;
const LINK_RETRY_MS = 15_000;
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "expired"]);
export const STATUS_LABELS = {
  queued: "Queued",
  running: "Running",
  succeeded: "Succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
  expired: "Expired",
};

function timestamp(iso) {
  const value = Date.parse(iso || "");
  return Number.isNaN(value) ? null : value;
}

/** "waiting 12s" / "running 1m 02s" / "took 45s", computed from the task's own timestamps. */
function elapsedText(task, now) {
  const created = timestamp(task.created_at);
  const since = timestamp(task.started_at) ?? created;
  const finished = timestamp(task.finished_at) ?? timestamp(task.updated_at);
  if (task.status === "queued") return created === null ? "" : `waiting ${formatDuration((now - created) / 1000)}`;
  if (task.status === "running") return since === null ? "" : `running ${formatDuration((now - since) / 1000)}`;
  return since === null || finished === null ? "" : `took ${formatDuration((finished - since) / 1000)}`;
}

function paramsSummary(task) {
  const params = task.params || {};
  const parts = [];
  if (task.type === "image") {
    if (params.size) parts.push(`size ${params.size}`);
    if (params.max_images > 1) parts.push(`${params.max_images} images`);
    if (params.output_format) parts.push(params.output_format.toUpperCase());
    if ((params.tools || []).length) parts.push("web search");
  } else {
    if (params.draft) parts.push("draft");
    if (task.render_of) parts.push("rendered from a draft");
    for (const key of ["resolution", "ratio"]) if (params[key]) parts.push(params[key]);
    if (params.duration === -1) parts.push("auto length");
    else if (params.duration) parts.push(`${params.duration} s`);
    if (params.seed !== undefined && params.seed !== -1) parts.push(`seed ${params.seed}`);
    if (params.camera_fixed) parts.push("fixed camera");
    if (params.generate_audio) parts.push("with audio");
  }
  const count = (items, noun) => (items.length ? `${items.length} ${noun}${items.length > 1 ? "s" : ""}` : null);
  parts.push(count(task.images || [], task.type === "video" ? "frame" : "reference"), count(task.references || [], "reference"));
  return parts.filter(Boolean).join(" · ");
}

/** A task's presigned links: what goes stale. */
/** What a finished task cost, as Ark's usage priced it (it arrives with the task's last update). */
function costInfo(task) {
  if (task.cost === null || task.cost === undefined) return null;
  const amount = Number(task.cost).toFixed(Number(task.cost) && Number(task.cost) < 0.01 ? 6 : 2);
  return h("span", { class: "task-cost" }, `Cost ${amount}${task.currency ? ` ${task.currency}` : ""}`);
}

function resultLinks(task) {
  return [...(task.result_urls || []), task.video_url, task.last_frame_url].filter(Boolean);
}

/**
 * Full-size view of a task's images, with previous/next and download. Returns {taskId, setUrls(urls)}: fresh
 * links replace the shown ones in place (the same picture keeps showing while its new URL loads).
 */
function openImageViewer(task, startUrls, startIndex, onClose) {
  let urls = startUrls;
  let index = startIndex;
  const image = h("img", { class: "viewer-image", alt: "" });
  const download = h("a", { class: "button primary", target: "_blank", rel: "noopener" }, "Download");
  const previous = h("button", { type: "button", class: "button", onclick: () => show(index - 1) }, "Previous");
  const next = h("button", { type: "button", class: "button", onclick: () => show(index + 1) }, "Next");
  const { dialog } = openDialog({
    title: "Image",
    className: "viewer",
    body: [image, h("div", { class: "dialog-actions" }, urls.length > 1 ? [previous, next] : null, download)],
    onClose,
  });
  const title = dialog.querySelector("h2");
  function show(position) {
    index = (position + urls.length) % urls.length;
    setUrl(image, "src", urls[index]);
    image.alt = `Result ${index + 1} of task ${task.id}`;
    setUrl(download, "href", urls[index]);
    download.download = `arkflow-${task.id}-${index + 1}`;
    title.textContent = urls.length > 1 ? `Image ${index + 1} of ${urls.length}` : "Image";
  }
  dialog.addEventListener("keydown", (event) => {
    if (urls.length > 1 && event.key === "ArrowRight") show(index + 1);
    if (urls.length > 1 && event.key === "ArrowLeft") show(index - 1);
  });
  show(index);
  return {
    taskId: task.id,
    setUrls(fresh) {
      if (fresh.length !== urls.length) return;
      urls = fresh;
      show(index);
    },
  };
}

function resultsView(task, onView) {
  if (task.status !== "succeeded") return null;
  if (task.type === "image" && (task.result_urls || []).length) {
    const urls = task.result_urls;
    return h(
      "div",
      { class: "gallery" },
      urls.map((url, index) =>
        h(
          "button",
          { type: "button", class: "thumb-button", "aria-label": `View image ${index + 1} of ${urls.length} full size`,
            onclick: () => onView(index) },
          h("img", { src: url, alt: "", loading: "lazy" }),
        ),
      ),
    );
  }
  if (task.type === "video" && task.video_url) {
    return h(
      "div",
      { class: "video-result" },
      h("video", { controls: true, preload: "metadata", playsinline: true, src: task.video_url, poster: task.last_frame_url,
        "aria-label": `Video of task ${task.id}` }),
      h(
        "div",
        { class: "result-links" },
        h("a", { href: task.video_url, download: `arkflow-${task.id}.mp4`, target: "_blank", rel: "noopener",
          dataset: { link: "video" } }, "Download video"),
        task.last_frame_url
          ? h("a", { href: task.last_frame_url, download: `arkflow-${task.id}-last-frame`, target: "_blank", rel: "noopener",
            dataset: { link: "last-frame" } }, "Last frame")
          : null,
      ),
    );
  }
  return null;
}

/** Give a shown video its fresh link without interrupting it: a playing one switches when paused, a fully loaded
 * one needs no link any more. */
function refreshVideoSource(video, value) {
  const url = safeUrl(value);
  if (!url || video.getAttribute("src") === url) return;
  video.dataset.freshSrc = url;
  const swap = () => {
    const fresh = video.dataset.freshSrc;
    delete video.dataset.freshSrc;
    if (!fresh) return;
    const loaded = video.buffered.length && video.buffered.end(video.buffered.length - 1) >= video.duration;
    if (loaded) return;
    const position = video.currentTime;
    setUrl(video, "src", fresh);
    if (position) video.currentTime = position;
  };
  if (video.paused) swap();
  else video.addEventListener("pause", swap, { once: true });
}

/** Put a task's fresh links into its card as it is: same elements, so nothing shown is rebuilt. */
function refreshLinks(element, task) {
  element.querySelectorAll(".gallery img").forEach((image, index) => setUrl(image, "src", (task.result_urls || [])[index]));
  const video = element.querySelector(".video-result video");
  if (video) {
    refreshVideoSource(video, task.video_url);
    setUrl(video, "poster", task.last_frame_url);
  }
  const videoLink = element.querySelector("[data-link=video]");
  if (videoLink) setUrl(videoLink, "href", task.video_url);
  const frameLink = element.querySelector("[data-link=last-frame]");
  if (frameLink) setUrl(frameLink, "href", task.last_frame_url);
}

/** Images of a group that Ark could not generate while the others succeeded. */
function partialFailures(task) {
  const failures = task.status === "succeeded" ? task.image_errors || [] : [];
  if (!failures.length) return null;
  return h(
    "div",
    { class: "task-warning" },
    h("p", {}, `${failures.length} image${failures.length > 1 ? "s" : ""} of the group could not be generated:`),
    h("ul", {}, failures.map((failure) => h("li", {}, `Image ${Number(failure.index) + 1}: ${failure.message || ""} `,
      failure.code ? h("code", {}, failure.code) : null))),
  );
}

/**
 * The task list panel. Returns {element, showTask(id), applyUpdate(update), refresh(), setModels(models),
 * dispose()}; updates come from the WebSocket through the studio.
 */
export function taskListPanel() {
  const tasks = new Map();
  const cards = new Map();
  // When each task's links were received, and the viewer open on one of them, if any.
  const linksReceivedAt = new Map();
  let viewer = null;
  let modelNames = new Map();
  let nextCursor = null;
  let generation = 0;
  let refetchTimer = null;
  let disposed = false;
  const linkTimer = dueTimer(refreshStaleLinks);

  const statusFilter = select([["", "All statuses"], ...Object.entries(STATUS_LABELS)], "");
  const typeFilter = select([["", "All types"], ["image", "Images"], ["video", "Videos"]], "");
  statusFilter.id = "filter-status";
  typeFilter.id = "filter-type";
  const list = h("ol", { class: "task-list", "aria-live": "off" });
  const emptyState = h("p", { class: "empty", hidden: true });
  const listError = h("div", { class: "form-errors", role: "alert", hidden: true });
  const loadMore = h("button", { type: "button", class: "button", hidden: true }, "Load more");

  const matches = (task) =>
    (!statusFilter.value || task.status === statusFilter.value) && (!typeFilter.value || task.type === typeFilter.value);

  function upsert(task) {
    const existing = tasks.get(task.id);
    if (existing && Number(task.version) < Number(existing.version)) return;
    tasks.set(task.id, task);
    linksReceivedAt.set(task.id, Date.now());
  }

  function openViewer(taskId, index) {
    const task = tasks.get(taskId);
    if (!task) return;
    viewer = openImageViewer(task, task.result_urls || [], index, () => { viewer = null; });
  }

  function linksDueAt(task) {
    const receivedAt = linksReceivedAt.get(task.id) ?? Date.now();
    const due = refreshDueAt(resultLinks(task), receivedAt);
    // Links that arrive already stale (a clock far off, a server handing out old ones) are not refetched in a loop.
    return due === null ? null : Math.max(due, receivedAt + LINK_MIN_AGE_MS);
  }

  /** Fetch the tasks whose links are about to expire; what arrives replaces the links in place (render). */
  async function refreshStaleLinks() {
    const soon = Date.now() + 1000;
    const stale = [...tasks.values()].filter((task) => (linksDueAt(task) ?? Infinity) <= soon);
    await Promise.all(stale.map((task) => fetchTask(task.id)));
    // Links a failed fetch left stale are tried again a little later, not in a loop.
    if (!disposed) scheduleLinkRefresh(Date.now() + LINK_RETRY_MS);
  }

  function scheduleLinkRefresh(notBefore = 0) {
    const due = [...tasks.values()].map(linksDueAt).filter((value) => value !== null);
    linkTimer.schedule(due.length ? Math.max(notBefore, Math.min(...due)) : null);
  }

  function actionButtons(task) {
    const buttons = [];
    if (task.cancellable === true && !TERMINAL.has(task.status)) {
      buttons.push(h("button", { type: "button", class: "button small", dataset: { action: "cancel" },
        onclick: () => cancelTask(task) }, "Cancel task"));
    }
    if (task.status === "succeeded" && task.params?.draft === true) {
      buttons.push(h("button", { type: "button", class: "button small", dataset: { action: "render" },
        onclick: (event) => renderDraft(task, event.currentTarget) }, "Render in full"));
    }
    if (TERMINAL.has(task.status)) {
      buttons.push(h("button", { type: "button", class: "button ghost small", dataset: { action: "delete" },
        onclick: () => deleteTask(task) }, "Delete"));
    }
    return buttons.length ? h("div", { class: "task-actions" }, buttons) : null;
  }

  function buildCard(task) {
    const queueInfo = task.status === "queued" && Number.isInteger(task.queue_position)
      ? h("span", { class: "queue-position" }, `#${task.queue_position} in queue`)
      : null;
    const error = task.error && (task.error.message || task.error.code);
    return h(
      "li",
      { class: `task-card status-${task.status}`, tabindex: "-1", dataset: { taskId: task.id, status: task.status } },
      h(
        "div",
        { class: "task-head" },
        h("span", { class: `badge ${task.type}` }, task.type === "video" ? "Video" : "Image"),
        h("span", { class: "task-model" }, modelNames.get(task.model_id) || task.model_id),
        h("span", { class: `status-pill ${task.status}` }, STATUS_LABELS[task.status] || task.status),
      ),
      h(
        "p",
        { class: "task-meta" },
        h("time", { datetime: task.created_at }, formatDateTime(task.created_at)),
        h("span", { class: "elapsed", dataset: { elapsed: "" } }, elapsedText(task, Date.now())),
        queueInfo,
        costInfo(task),
      ),
      task.prompt ? h("p", { class: "task-prompt" }, task.prompt) : null,
      h("p", { class: "task-params" }, paramsSummary(task)),
      error
        ? h("p", { class: "task-error" }, `${task.status === "failed" ? "Failed" : STATUS_LABELS[task.status] || "Error"}: `,
          task.error.message || "", task.error.code ? h("code", {}, task.error.code) : null)
        : null,
      resultsView(task, (index) => openViewer(task.id, index)),
      partialFailures(task),
      actionButtons(task),
    );
  }

  // Rebuilding a card replaces its <video>, so only do it when something shown has changed.
  function needsRebuild(shown, task) {
    return !shown || Number(shown.version) !== Number(task.version) || shown.status !== task.status ||
      shown.cancellable !== task.cancellable || shown.queue_position !== task.queue_position ||
      shown.cost !== task.cost;
  }

  function render() {
    const visible = [...tasks.values()].filter(matches)
      .sort((a, b) => (timestamp(b.created_at) ?? 0) - (timestamp(a.created_at) ?? 0));
    const visibleIds = new Set(visible.map((task) => task.id));
    for (const [id, card] of cards) {
      if (!visibleIds.has(id)) {
        card.element.remove();
        cards.delete(id);
      }
    }
    visible.forEach((task, index) => {
      let card = cards.get(task.id);
      if (card && !needsRebuild(card.task, task)) {
        if (resultLinks(card.task).join(" ") !== resultLinks(task).join(" ")) refreshLinks(card.element, task);
        card.task = task;
      } else {
        const element = buildCard(task);
        if (card) {
          const focusedAction = card.element.contains(document.activeElement) ? document.activeElement.dataset.action : null;
          card.element.replaceWith(element);
          if (focusedAction !== null) (element.querySelector(`[data-action="${focusedAction}"]`) || element).focus();
        }
        card = { element, task };
        cards.set(task.id, card);
      }
      if (list.children[index] !== card.element) list.insertBefore(card.element, list.children[index] || null);
    });
    if (viewer && tasks.has(viewer.taskId)) viewer.setUrls(tasks.get(viewer.taskId).result_urls || []);
    scheduleLinkRefresh();
    emptyState.hidden = visible.length > 0;
    emptyState.textContent = statusFilter.value || typeFilter.value
      ? "No tasks match these filters."
      : "No tasks yet. What you create shows up here, live.";
    loadMore.hidden = !nextCursor;
  }

  function showListError(error, retry) {
    const { title, message } = describeError(error);
    listError.replaceChildren(h("p", { class: "form-errors-title" }, title), h("p", {}, message),
      h("button", { type: "button", class: "button small", onclick: retry }, "Try again"));
    listError.hidden = false;
  }

  async function fetchPage(cursor) {
    return api("GET", "/api/tasks", {
      query: { status: statusFilter.value, type: typeFilter.value, limit: PAGE_SIZE, cursor },
    });
  }

  /** Start over (first load, or the filters changed). */
  async function reload() {
    generation += 1;
    const current = generation;
    tasks.clear();
    nextCursor = null;
    listError.hidden = true;
    list.setAttribute("aria-busy", "true");
    try {
      const page = await fetchPage(null);
      if (current !== generation) return;
      page.tasks.forEach(upsert);
      nextCursor = page.next_cursor;
    } catch (error) {
      if (current === generation && error.status !== 401) showListError(error, reload);
    } finally {
      list.removeAttribute("aria-busy");
    }
    if (current === generation) render();
  }

  /** Merge the newest page into what is shown, keeping older pages already loaded (after a reconnect). */
  async function refresh() {
    const current = generation;
    try {
      const page = await fetchPage(null);
      if (current !== generation) return;
      const firstLoad = tasks.size === 0;
      page.tasks.forEach(upsert);
      if (firstLoad) nextCursor = page.next_cursor;
      listError.hidden = true;
      render();
    } catch (error) {
      if (error.status !== 401) showListError(error, reload);
    }
  }

  function scheduleRefresh() {
    clearTimeout(refetchTimer);
    refetchTimer = setTimeout(refresh, 250);
  }

  async function fetchTask(id) {
    const current = generation;
    try {
      const task = await api("GET", `/api/tasks/${encodeURIComponent(id)}`);
      if (disposed || current !== generation) return;
      upsert(task);
    } catch (error) {
      if (disposed || current !== generation) return;
      if (error.status === 404) tasks.delete(id);
      else return;
    }
    render();
  }

  function applyUpdate(update) {
    const existing = tasks.get(update.id);
    if (!existing) {
      // A task this view cannot show anyway needs no refetch.
      if (!statusFilter.value || statusFilter.value === update.status) scheduleRefresh();
      return;
    }
    if (Number(update.version) < Number(existing.version)) return;
    // Too large for one WebSocket message, an update comes cut down to its status: the task says the rest.
    const { truncated, ...changed } = update;
    const merged = { ...existing, ...changed };
    if (TERMINAL.has(merged.status) && !("cancellable" in update)) merged.cancellable = false;
    tasks.set(update.id, merged);
    if (resultLinks(changed).length) linksReceivedAt.set(update.id, Date.now());
    render();
    // An update carries what changed; the full task adds what it implies (cancellable, started_at,
    // finished_at, image_errors), so fetch it once per status change.
    if (truncated || update.status !== existing.status) fetchTask(update.id);
  }

  async function cancelTask(task) {
    try {
      const result = await api("POST", `/api/tasks/${encodeURIComponent(task.id)}/cancel`);
      if (result && result.id) upsert(result);
      toast("Task cancelled.");
    } catch (error) {
      toastError(error);
    }
    await fetchTask(task.id);
  }

  /** A succeeded draft rendered in full: a new task, shown in the list as soon as it is accepted. */
  async function renderDraft(task, button) {
    await withBusyButton(button, "Sending…", async () => {
      try {
        const created = await api("POST", `/api/tasks/${encodeURIComponent(task.id)}/render`,
          { headers: { "Idempotency-Key": newUuid() } });
        toast("Render queued as a new task.");
        await fetchTask(created.id);
      } catch (error) {
        toastError(error);
      }
    });
  }

  async function deleteTask(task) {
    const confirmed = await confirmDialog({
      title: "Delete this task?",
      message: "The task and its results disappear from your list. This cannot be undone.",
      confirmLabel: "Delete task",
      danger: true,
    });
    if (!confirmed) return;
    try {
      await api("DELETE", `/api/tasks/${encodeURIComponent(task.id)}`);
      tasks.delete(task.id);
      render();
      toast("Task deleted.");
    } catch (error) {
      toastError(error);
    }
  }

  loadMore.addEventListener("click", async () => {
    const current = generation;
    loadMore.disabled = true;
    try {
      const page = await fetchPage(nextCursor);
      if (current !== generation) return;
      page.tasks.forEach(upsert);
      nextCursor = page.next_cursor;
      render();
    } catch (error) {
      toastError(error);
    } finally {
      loadMore.disabled = false;
    }
  });
  statusFilter.addEventListener("change", reload);
  typeFilter.addEventListener("change", reload);

  const ticker = setInterval(() => {
    const now = Date.now();
    for (const [, card] of cards) {
      if (TERMINAL.has(card.task.status)) continue;
      card.element.querySelector("[data-elapsed]").textContent = elapsedText(card.task, now);
    }
  }, 1000);

  const element = h(
    "section",
    { class: "panel tasks", "aria-labelledby": "tasks-heading" },
    h(
      "div",
      { class: "panel-head" },
      h("h2", { id: "tasks-heading" }, "Your tasks"),
      h(
        "div",
        { class: "filters" },
        h("label", { for: statusFilter.id }, "Status"), statusFilter,
        h("label", { for: typeFilter.id }, "Type"), typeFilter,
      ),
    ),
    listError,
    list,
    emptyState,
    loadMore,
  );
  reload();

  return {
    element,
    applyUpdate,
    refresh,
    showTask: fetchTask,
    setModels(models) {
      modelNames = new Map(models.map((model) => [model.model_id, model.display_name || model.model_id]));
      for (const card of cards.values()) card.task = null; // rebuild with the new names
      render();
    },
    dispose() {
      disposed = true;
      generation += 1;
      clearInterval(ticker);
      clearTimeout(refetchTimer);
      linkTimer.cancel();
    },
  };
}
