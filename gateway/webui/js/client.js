// The back office's protocol client: one websocket session speaking the same JSON frames as the
// apps (docs/protocol.md). Requests are promises; events are dispatched as DOM events. It signs
// in with auth.login, refreshes the session token before it expires, and after a dropped
// connection reconnects with backoff, sends `auth` again and tells the page ("resumed") so views
// re-read what they show and the live feed is watched again.

export class ProtocolError extends Error {
  constructor(frame) {
    super(frame.message);
    this.code = frame.code;
    this.details = frame.details;
  }
}

const REFRESH_EARLY_MS = 60_000;
const MAX_BACKOFF_MS = 15_000;

export class Client extends EventTarget {
  constructor(url, locale) {
    super();
    this.url = url;
    this.locale = locale;
    this.ws = null;
    this.pending = new Map();
    this.nextId = 1;
    this.tokens = null; // held in memory only: a reload signs in again
    this.closedByUs = false;
    this.backoff = 500;
    this.refreshTimer = null;
    this.opened = null;
  }

  open() {
    if (this.opened) return this.opened;
    this.opened = new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, "dispatch.v1.json");
      ws.onopen = () => { this.ws = ws; this.backoff = 500; resolve(); };
      ws.onerror = () => reject(new Error("connection failed"));
      ws.onmessage = (message) => this.receive(JSON.parse(message.data));
      ws.onclose = (close) => this.closed(close, this.ws === ws);
    });
    return this.opened;
  }

  receive(frame) {
    if (frame.type === "result" || frame.type === "error") {
      const waiter = this.pending.get(frame.id);
      if (waiter) {
        this.pending.delete(frame.id);
        if (frame.type === "error") waiter.reject(new ProtocolError(frame));
        else waiter.resolve(frame);
        return;
      }
      if (frame.type === "error" && frame.code === "suspended") this.emit("suspended", frame);
      return;
    }
    this.emit(frame.type, frame);
    this.emit("event", frame);
  }

  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  closed(close, wasOpen) {
    this.ws = null;
    this.opened = null;
    for (const waiter of this.pending.values()) waiter.reject(new Error("connection closed"));
    this.pending.clear();
    this.emit("connection", { online: false });
    // A socket that never opened failed its open(): whoever awaited it (resume) tries again.
    if (!wasOpen || this.closedByUs || close.code === 4003 || !this.tokens) {
      if (close.code === 4003) this.emit("signedout", { reason: "suspended" });
      return;
    }
    setTimeout(() => this.resume(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
  }

  async resume() {
    if (this.closedByUs || !this.tokens) return;
    try {
      await this.open();
    } catch {
      setTimeout(() => this.resume(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
      return;
    }
    try {
      if (Date.parse(this.tokens.expires_at) - Date.now() < REFRESH_EARLY_MS) await this.refresh(false);
      else await this.authenticate();
      this.emit("connection", { online: true });
      this.emit("resumed", {});
    } catch (error) {
      if (error instanceof ProtocolError && ["unauthorized", "suspended"].includes(error.code)) {
        this.forget();
        this.emit("signedout", { reason: error.code });
      } // otherwise the socket closed meanwhile, and its close schedules the next try
    }
  }

  request(type, fields = {}, timeoutMs = 15_000) {
    if (!this.ws) return Promise.reject(new Error("not connected"));
    const id = `w${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${type}: no answer`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (frame) => { clearTimeout(timer); resolve(frame); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      });
      this.ws.send(JSON.stringify({ ...fields, type, id }));
    });
  }

  async signIn(email, password) {
    this.closedByUs = false;
    await this.open();
    this.tokens = await this.request("auth.login", { email, password });
    return this.authenticate();
  }

  async authenticate() {
    const session = await this.request("auth", { token: this.tokens.token, locale: this.locale });
    this.session = session;
    this.scheduleRefresh();
    return session;
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const due = Date.parse(this.tokens.expires_at) - Date.now() - REFRESH_EARLY_MS;
    this.refreshTimer = setTimeout(() => this.refresh(true).catch(() => {}), Math.max(due, 1_000));
  }

  async refresh(announce) {
    this.tokens = await this.request("auth.refresh", { refresh_token: this.tokens.refresh_token });
    await this.authenticate();
    if (announce) this.emit("refreshed", {});
  }

  forget() {
    clearTimeout(this.refreshTimer);
    this.tokens = null;
    this.session = null;
  }

  async signOut() {
    const tokens = this.tokens;
    this.closedByUs = true;
    try {
      if (tokens && this.ws) await this.request("auth.logout", { refresh_token: tokens.refresh_token });
    } finally {
      this.forget();
      if (this.ws) this.ws.close(1000);
    }
  }
}
