// Live task updates over the WebSocket: single-use ticket, keep-alive pings, reconnect with exponential
// backoff. Every (re)connection calls onConnected so the caller can refetch what it may have missed.
// Each start() begins a session of its own: whatever an earlier one left in flight (a ticket request, a socket
// opening, a retry) finds itself outdated after every await and closes what it opened, so a logout followed by
// a login never leaves the new user's tab holding the previous user's socket.

import { api, getConfig } from "./api.js";

const PING_INTERVAL_MS = 30_000;
const PONG_TIMEOUT_MS = 10_000;
const FIRST_RETRY_MS = 1_000;
const MAX_RETRY_MS = 30_000;

export class LiveUpdates {
  constructor({ onUpdate, onEvent, onConnected, onState }) {
    this.onUpdate = onUpdate;
    this.onEvent = onEvent;
    this.onConnected = onConnected;
    this.onState = onState;
    this.socket = null;
    this.failures = 0;
    this.stopped = true;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.session = 0;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.session += 1;
    this.connect(this.session);
  }

  stop() {
    this.stopped = true;
    this.session += 1;
    clearTimeout(this.retryTimer);
    this.clearKeepAlive();
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000, "logout");
      this.socket = null;
    }
    this.onState("off");
  }

  /** Whether work begun for `session` may go on: false once stopped or started again. */
  current(session) {
    return !this.stopped && session === this.session;
  }

  async connect(session) {
    if (!this.current(session)) return;
    this.onState("connecting");
    let ticket;
    try {
      ticket = await api("POST", "/api/ws/ticket");
    } catch (error) {
      if (error.status !== 401 && this.current(session)) this.scheduleRetry(session);
      return;
    }
    if (!this.current(session)) return;
    const url = ticket.url || `${getConfig().wsUrl}?ticket=${encodeURIComponent(ticket.ticket)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    const outdated = () => {
      if (this.current(session) && this.socket === socket) return false;
      socket.onclose = null;
      socket.close(1000, "session ended");
      return true;
    };
    socket.onopen = () => {
      if (outdated()) return;
      this.failures = 0;
      this.onState("live");
      this.startKeepAlive();
      this.onConnected();
    };
    socket.onmessage = (event) => {
      if (!outdated()) this.handleMessage(event.data);
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.clearKeepAlive();
      this.socket = null;
      if (this.current(session)) this.scheduleRetry(session);
    };
  }

  handleMessage(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return;
    }
    if (message.type === "pong") {
      clearTimeout(this.pongTimer);
    } else if (message.type === "task_update" && message.data && message.data.id) {
      this.onUpdate(message.data);
    } else if (typeof message.type === "string" && message.data) {
      this.onEvent(message); // for admins: `circuit` when a model's breaker moves
    }
  }

  startKeepAlive() {
    this.pingTimer = setInterval(() => {
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
      this.socket.send(JSON.stringify({ action: "ping" }));
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => this.socket && this.socket.close(4000, "no pong"), PONG_TIMEOUT_MS);
    }, PING_INTERVAL_MS);
  }

  clearKeepAlive() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }

  scheduleRetry(session) {
    if (!this.current(session)) return;
    const ceiling = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** this.failures);
    // Jitter spreads reconnects out when a server restart drops every browser at once.
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.failures += 1;
    this.onState("reconnecting", delay);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(session), delay);
  }
}
