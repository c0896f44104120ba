// livecanvas captions in the browser: the caption board (what is on screen) and the subscriber
// connection (JSON text frames of protocol v1, docs/protocol.md) with reconnects and resume.
//
// CaptionBoard keys lines by (track, window): a draft replaces the window's previous draft, the final
// replaces its draft in place and is never shown twice; finals of a track come in window order, so a
// final at or below the last one shown is a repeat (after a reconnect) and is dropped. Lines roll up
// (the newest `rows` per track stay) and expire. Windows count from 0 in each *epoch* of the stream
// (it ended and started again under its name): drafts, finals and the kept finals carry the epoch, and
// one from a new epoch starts the board afresh: a new programme, not lines to drop as repeats. CaptionClient speaks hello/ready/draft/final/error/
// stats/ended/bye, reconnects with exponential backoff, and on every ready fetches the finals the server kept
// (/captions/<stream>/<track>.json) so lines missed while away are filled in, not repeated. `ended` (the
// publisher is done, after the stream's last final) is a status, "ended", until a draft or final shows
// the stream going on.

export const PROTOCOL = 1;

export class CaptionBoard {
  constructor({ tracks, rows = 2, drafts = true, expireMs = 0, draftExpireMs = 30000 }) {
    this.tracks = tracks;
    this.rows = rows;
    this.drafts = drafts;
    this.expireMs = expireMs;
    this.draftExpireMs = draftExpireMs;
    this.epoch = null;
    this.reset();
  }

  reset() {
    this.lines = new Map(); // "track#window" -> line
    this.lastFinal = new Map(); // track -> highest window whose final was taken
  }

  // The stream's epoch of a message or of kept finals (null: not said). A different one than before
  // means a new programme: the board starts afresh. Returns true when it did.
  enter(epoch) {
    if (epoch === null || epoch === undefined) return false;
    const fresh = this.epoch !== null && epoch !== this.epoch;
    if (fresh) this.reset();
    this.epoch = epoch;
    return fresh;
  }

  // A draft or final message; returns true when the screen changes.
  apply(message, now = Date.now()) {
    const { type, track, window } = message;
    if (type !== "draft" && type !== "final") return false;
    if (!this.tracks.includes(track) || !Number.isInteger(window)) return false;
    const fresh = this.enter(message.epoch); // true: the screen was cleared
    if (window <= (this.lastFinal.get(track) ?? -1)) return fresh; // shown already: never twice
    const key = `${track}#${window}`;
    if (type === "draft") {
      const line = this.lines.get(key);
      if (!this.drafts || (line && line.rev > message.rev)) return fresh;
      this.lines.set(key, { track, window, rev: message.rev, text: message.text, final: false, at: now });
    } else {
      this.lastFinal.set(track, window);
      if (message.error || !message.text.trim()) {
        this.lines.delete(key);
      } else {
        this.lines.set(key, { track, window, rev: message.rev, text: message.text, final: true, at: now });
      }
    }
    this.rollUp(track);
    return true;
  }

  // The finals a server kept for one track (on connect): `show` false only records them as seen.
  absorb(track, epoch, finals, { show = true, now = Date.now() } = {}) {
    let changed = this.enter(epoch);
    for (const final of finals) {
      if (show) {
        changed = this.apply({ type: "final", track, ...final }, now) || changed;
      } else if (final.window > (this.lastFinal.get(track) ?? -1)) {
        this.lastFinal.set(track, final.window);
      }
    }
    return changed;
  }

  rollUp(track) {
    const mine = [...this.lines.values()].filter((l) => l.track === track).sort((a, b) => a.window - b.window);
    for (const line of mine.slice(0, Math.max(0, mine.length - this.rows))) {
      this.lines.delete(`${line.track}#${line.window}`);
    }
  }

  // Drops finals older than expireMs and drafts not updated for draftExpireMs; true if any went.
  expire(now = Date.now()) {
    let changed = false;
    for (const [key, line] of this.lines) {
      const limit = line.final ? this.expireMs : this.draftExpireMs;
      if (limit > 0 && now - line.at >= limit) {
        this.lines.delete(key);
        changed = true;
      }
    }
    return changed;
  }

  visible(track) {
    return [...this.lines.values()].filter((l) => l.track === track).sort((a, b) => a.window - b.window);
  }
}

function socketUrl(path = "/") {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

export function captionsUrl(stream, track, format) {
  return `/captions/${encodeURIComponent(stream)}/${encodeURIComponent(track)}.${format}`;
}

// A subscribe token for the server's data endpoints: as a header for fetch(), in the query for links.
export function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export function withToken(url, token) {
  if (!token) return url;
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
}

// One subscriber connection that keeps itself open. Callbacks:
//   onMessage(message)                 every server message, in order, once the backlog is in
//   onBacklog(track, epoch, finals, first)   kept finals, on every ready (first: the first ready)
//   onStatus(state, detail)            "connecting" | "live" | "ended" (detail: its reason) | "reconnecting" | "refused"
export class CaptionClient {
  constructor({ stream, tracks, token = "", onMessage, onBacklog, onStatus, minDelayMs = 500, maxDelayMs = 10000 }) {
    Object.assign(this, { stream, tracks, token, onMessage, onBacklog, onStatus, minDelayMs, maxDelayMs });
    this.attempt = 0;
    this.readyCount = 0;
    this.socket = null;
    this.timer = null;
    this.stopped = false;
    this.ended = false; // the stream's publisher is done (an `ended` is the latest news of it)
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "bye");
  }

  connect() {
    this.onStatus?.("connecting", this.attempt ? `attempt ${this.attempt + 1}` : "");
    const socket = new WebSocket(socketUrl());
    this.socket = socket;
    let pending = null; // messages held while the backlog loads
    let refused = false;
    socket.onopen = () => {
      const hello = { type: "hello", protocol: PROTOCOL, stream: this.stream, role: "subscribe", tracks: this.tracks };
      if (this.token) hello.token = this.token;
      socket.send(JSON.stringify(hello));
    };
    socket.onmessage = (event) => {
      if (typeof event.data !== "string") return; // we said hello in JSON: replies are JSON
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "ready") {
        this.attempt = 0;
        this.granted = message.tracks;
        const first = this.readyCount++ === 0;
        this.ended = false; // the server says `ended` again on this connection if the stream still is
        pending = [];
        this.loadBacklog(message.tracks, first).finally(() => {
          const held = pending;
          pending = null;
          this.onStatus?.("live", message.session);
          if (this.socket === socket) for (const m of held) this.deliver(m);
        });
        return;
      }
      if (message.type === "error" && message.ref === "hello") {
        refused = true; // e.g. a language this server does not translate: retrying soon will not help
        this.onStatus?.("refused", `${message.code}: ${message.message}`);
        socket.close(1000, "refused");
        return;
      }
      if (pending) pending.push(message);
      else this.deliver(message);
    };
    socket.onclose = () => {
      if (this.socket !== socket || this.stopped) return;
      this.socket = null;
      const delay = refused ? 30000 : this.backoff();
      if (!refused) this.onStatus?.("reconnecting", `in ${Math.round(delay / 100) / 10} s`);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  deliver(message) {
    if (message.type === "ended") {
      this.ended = true;
      this.onStatus?.("ended", message.reason);
    } else if (this.ended && (message.type === "draft" || message.type === "final")) {
      this.ended = false; // a publisher started again
      this.onStatus?.("live", "");
    }
    this.onMessage?.(message);
  }

  backoff() {
    const base = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this.attempt);
    this.attempt += 1;
    return base * (0.5 + Math.random() / 2);
  }

  async loadBacklog(tracks, first) {
    await Promise.all(
      tracks.map(async (track) => {
        try {
          const response = await fetch(captionsUrl(this.stream, track, "json"), {
            cache: "no-store",
            headers: authHeaders(this.token),
          });
          if (!response.ok) return;
          const data = await response.json();
          this.onBacklog?.(track, data.epoch ?? null, data.finals ?? [], first);
        } catch (error) {
          console.warn("livecanvas: no backlog for", track, error);
        }
      }),
    );
  }
}

// Query-string options: `read(name, fallback)` for strings, numbers and booleans.
export function queryOptions(search = location.search) {
  const params = new URLSearchParams(search);
  return {
    text(name, fallback) {
      const value = params.get(name);
      return value === null || value.trim() === "" ? fallback : value.trim();
    },
    number(name, fallback, min, max) {
      const value = Number(params.get(name));
      return params.get(name) === null || !Number.isFinite(value) ? fallback : Math.min(max, Math.max(min, value));
    },
    flag(name, fallback) {
      const value = params.get(name);
      if (value === null) return fallback;
      return !["0", "false", "no", "off"].includes(value.toLowerCase());
    },
    list(name, fallback) {
      const value = params.get(name);
      const items = (value ?? "").split(",").map((s) => s.trim()).filter(Boolean);
      return items.length ? [...new Set(items)] : fallback;
    },
  };
}

// A CSS colour from a query value ("ffcc00", "#fc0", "rgba(0,0,0,.5)", "gold"), or the fallback.
export function cssColour(value, fallback) {
  if (!value) return fallback;
  const candidate = /^[0-9a-f]{3,8}$/i.test(value) ? `#${value}` : value;
  return CSS.supports("color", candidate) ? candidate : fallback;
}
