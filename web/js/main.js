// Application shell: configuration, session, routing between screens, and the header.

import { api, clearSession, getSession, loadConfig, onUnauthorized, saveSession } from "./api.js";
import { h } from "./dom.js";
import { LiveUpdates } from "./live.js";
import { renderAdminAudit } from "./views/admin-audit.js";
import { renderAdminDashboard } from "./views/admin-dashboard.js";
import { renderAdminDeadLetters } from "./views/admin-dlq.js";
import { renderAdminModels } from "./views/admin-models.js";
import { renderAdminTasks } from "./views/admin-tasks.js";
import { renderAdminUsers } from "./views/admin-users.js";
import { renderLogin } from "./views/login.js";
import { renderStudio } from "./views/studio.js";

const ROUTES = {
  "#/": { name: "studio", title: "Studio", render: renderStudio },
  "#/admin/dashboard": { name: "admin-dashboard", title: "Dashboard", render: renderAdminDashboard, admin: true },
  "#/admin/tasks": { name: "admin-tasks", title: "All tasks", render: renderAdminTasks, admin: true },
  "#/admin/dlq": { name: "admin-dlq", title: "Dead letters", render: renderAdminDeadLetters, admin: true },
  "#/admin/audit": { name: "admin-audit", title: "Audit log", render: renderAdminAudit, admin: true },
  "#/admin/models": { name: "admin-models", title: "Models", render: renderAdminModels, admin: true },
  "#/admin/users": { name: "admin-users", title: "Users", render: renderAdminUsers, admin: true },
};

const main = document.getElementById("main");
const topbar = document.querySelector(".topbar");
const liveStatus = document.querySelector(".live-status");

let cleanupScreen = () => {};
let signedIn = false;

// One connection for the whole session; screens subscribe to what it delivers (each handler is optional).
const liveListeners = new Set();
const live = new LiveUpdates({
  onUpdate: (update) => liveListeners.forEach((listener) => listener.onUpdate?.(update)),
  onEvent: (event) => liveListeners.forEach((listener) => listener.onEvent?.(event)),
  onConnected: () => liveListeners.forEach((listener) => listener.onConnected?.()),
  onState: showLiveState,
});

function showLiveState(state, retryInMs) {
  const labels = { live: "Live", connecting: "Connecting…", off: "Offline" };
  liveStatus.dataset.live = state;
  liveStatus.textContent =
    state === "reconnecting" ? `Reconnecting in ${Math.ceil(retryInMs / 1000)} s` : labels[state];
}

function mount(render, context) {
  cleanupScreen();
  main.replaceChildren();
  cleanupScreen = render(main, context) || (() => {});
}

function showLogin(message) {
  signedIn = false;
  live.stop();
  topbar.hidden = true;
  document.title = "Log in · arkflow";
  mount(renderLogin, { message, onLoggedIn: signIn });
}

function showSignedInHeader(session) {
  topbar.hidden = false;
  document.querySelector(".whoami").textContent = `${session.username} (${session.role})`;
  for (const link of document.querySelectorAll("[data-admin]")) link.hidden = session.role !== "admin";
}

function route() {
  if (!signedIn) return;
  const session = getSession();
  const target = ROUTES[window.location.hash] || ROUTES["#/"];
  for (const link of document.querySelectorAll(".topnav a")) {
    if (link.dataset.route === target.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${target.title} · arkflow`;
  if (target.admin && session.role !== "admin") {
    mount((container) => {
      container.append(h("section", { class: "panel" }, h("h1", {}, "Not allowed"),
        h("p", {}, "Only administrators can open this page."), h("a", { href: "#/" }, "Back to the studio")));
    });
    return;
  }
  mount(target.render, { session, subscribeLive });
}

function subscribeLive(listener) {
  liveListeners.add(listener);
  return () => liveListeners.delete(listener);
}

/** Called after a successful login or when a stored session proves valid. */
function signIn(session) {
  saveSession(session);
  signedIn = true;
  showSignedInHeader(session);
  route();
  main.focus({ preventScroll: true });
  live.start();
}

async function logOut() {
  const session = getSession();
  if (session) {
    // Best effort: the token is forgotten locally even if the server cannot be reached.
    api("POST", "/api/users/logout").catch(() => {});
  }
  clearSession();
  showLogin("You have logged out.");
}

async function resumeSession(session) {
  try {
    const me = await api("GET", "/api/users/me");
    signIn({ ...session, username: me.username, role: me.role });
  } catch (error) {
    if (error.status === 401) return; // onUnauthorized already showed the login screen
    mount((container) => {
      container.append(h("section", { class: "panel" }, h("h1", {}, "Cannot reach arkflow"),
        h("p", {}, error.message),
        h("button", { type: "button", class: "button", onclick: () => resumeSession(session) }, "Try again")));
    });
  }
}

async function boot() {
  try {
    await loadConfig();
  } catch (error) {
    main.replaceChildren(h("section", { class: "panel" }, h("h1", {}, "arkflow is not configured"),
      h("p", {}, `The configuration could not be loaded (${error.message}).`)));
    return;
  }
  onUnauthorized((message) => {
    clearSession();
    if (signedIn || !main.querySelector(".login")) showLogin(message);
  });
  document.querySelector("[data-action=logout]").addEventListener("click", logOut);
  window.addEventListener("hashchange", () => {
    route();
    main.focus({ preventScroll: true });
  });
  const session = getSession();
  if (session) await resumeSession(session);
  else showLogin();
}

boot();
