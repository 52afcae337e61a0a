// Live task updates over the WebSocket: single-use ticket, keep-alive pings, reconnect with exponential
// backoff. Every (re)connection calls onConnected so the caller can refetch what it may have missed.

import { api, getConfig } from "./api.js";

const PING_INTERVAL_MS = 30_000;
const PONG_TIMEOUT_MS = 10_000;
const FIRST_RETRY_MS = 1_000;
const MAX_RETRY_MS = 30_000;

export class LiveUpdates {
  constructor({ onUpdate, onConnected, onState }) {
    this.onUpdate = onUpdate;
    this.onConnected = onConnected;
    this.onState = onState;
    this.socket = null;
    this.failures = 0;
    this.stopped = true;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.clearKeepAlive();
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000, "logout");
      this.socket = null;
    }
    this.onState("off");
  }

  async connect() {
    this.onState("connecting");
    let ticket;
    try {
      ticket = await api("POST", "/api/ws/ticket");
    } catch (error) {
      if (error.status !== 401) this.scheduleRetry();
      return;
    }
    if (this.stopped) return;
    const url = ticket.url || `${getConfig().wsUrl}?ticket=${encodeURIComponent(ticket.ticket)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      this.failures = 0;
      this.onState("live");
      this.startKeepAlive();
      this.onConnected();
    };
    socket.onmessage = (event) => this.handleMessage(event.data);
    socket.onclose = () => {
      this.clearKeepAlive();
      if (this.socket === socket) this.socket = null;
      if (!this.stopped) this.scheduleRetry();
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

  scheduleRetry() {
    if (this.stopped) return;
    const ceiling = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** this.failures);
    // Jitter spreads reconnects out when a server restart drops every browser at once.
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.failures += 1;
    this.onState("reconnecting", delay);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}
