// The studio: create panel on one side, the live task list on the other.

import { api } from "../api.js";
import { h } from "../dom.js";
import { describeError } from "../forms.js";
import { createPanel } from "./create.js";
import { taskListPanel } from "./tasks.js";

export function renderStudio(container, { subscribeLive }) {
  const tasks = taskListPanel();
  const createSlot = h("div", { class: "create-slot" }, h("section", { class: "panel" }, h("p", {}, "Loading models…")));
  container.append(h("h1", { class: "visually-hidden" }, "Studio"), h("div", { class: "studio" }, createSlot, tasks.element));

  let disposed = false;
  const loadModels = async () => {
    try {
      const { models } = await api("GET", "/api/models");
      if (disposed) return;
      createSlot.replaceChildren(createPanel(models, { onSubmitted: (id) => tasks.showTask(id) }));
      tasks.setModels(models);
    } catch (error) {
      if (disposed || error.status === 401) return;
      const { title, message } = describeError(error);
      createSlot.replaceChildren(h("section", { class: "panel" }, h("h2", {}, title), h("p", {}, message),
        h("button", { type: "button", class: "button", onclick: loadModels }, "Try again")));
    }
  };
  loadModels();

  const unsubscribe = subscribeLive({ onUpdate: tasks.applyUpdate, onConnected: tasks.refresh });
  return () => {
    disposed = true;
    unsubscribe();
    tasks.dispose();
  };
}
