// The publish page: speak into the browser, watch the captions and translations come back live.
// /publish?stream=talk&tracks=caption,pt&source_lang=en&token=... fills the form (docs/overlay.md).
//
// The microphone is captured with getUserMedia; an AudioWorklet (mic-worklet.js) turns it into
// 16 kHz mono PCM16 in 100 ms chunks, sent as protocol v1 `audio` frames (JSON, `pcm_b64`) on a
// publisher connection. Drafts and finals of every track come back on the same connection and are
// shown as viewers see them (CaptionBoard), with each track's lag. Stop sends `end` after the last
// samples and waits for every final and `bye`. If the connection drops, audio is kept (up to
// BUFFER_S seconds) while the page reconnects and resumes (`resume` with the last seq and session),
// then sent in order. A refused hello (token, language) stops the microphone with the server's reason.
import { CaptionBoard, PROTOCOL, queryOptions } from "./captions.js";

const TRACK_RE = /^[A-Za-z0-9_-]{1,32}$/;
const STREAM_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const DEFAULT_TRACKS = { en: "caption,pt", pt: "caption,en" };
const BUFFER_S = 120; // audio kept while reconnecting; beyond it the oldest is dropped, and said so
const CHUNK_MS = 100;
const END_TIMEOUT_MS = 120000;
const $ = (id) => document.getElementById(id);

let session = null; // the running publication, or null

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function setState(state, detail = "") {
  document.body.dataset.state = state;
  $("status").dataset.state = state;
  $("status").textContent = detail ? `${state} (${detail})` : state;
  const button = $("mic");
  const running = ["starting", "connecting", "live", "reconnecting"].includes(state);
  button.textContent = running ? "Stop" : state === "ending" ? "Finishing…" : "Start microphone";
  button.setAttribute("aria-pressed", String(running));
  button.disabled = state === "ending" || state === "starting";
  for (const input of document.querySelectorAll("#publish-form input, #publish-form select")) {
    input.disabled = running || state === "ending";
  }
}

function notice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text ?? "";
}

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function micProblem(error) {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    return "The microphone needs a secure page: open this page over https:// or on http://localhost.";
  }
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was refused. Allow it in the browser's site settings, then start again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Connect one, then start again.";
    case "NotReadableError":
      return "The microphone is in use by another program or could not be opened.";
    default:
      return `The microphone could not be started: ${error?.message ?? error}`;
  }
}

// -- capture ---------------------------------------------------------------------------------------
class Microphone {
  async start(onChunk) {
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) throw new Error("insecure");
    this.media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule("/static/mic-worklet.js");
    const source = this.context.createMediaStreamSource(this.media);
    this.tap = new AudioWorkletNode(this.context, "livecanvas-mic-tap", {
      numberOfOutputs: 1,
      processorOptions: { chunkMs: CHUNK_MS },
    });
    this.stopped = new Promise((resolve) => {
      this.tap.port.onmessage = (event) => {
        if (event.data === "stopped") resolve();
        else onChunk(event.data);
      };
    });
    const mute = this.context.createGain();
    mute.gain.value = 0; // the graph must reach the destination to run; nothing is heard
    source.connect(this.tap).connect(mute).connect(this.context.destination);
    await this.context.resume();
  }

  // Stops capturing; resolves once the last samples have been handed over.
  async stop() {
    if (!this.tap) return;
    this.tap.port.postMessage("stop");
    await Promise.race([this.stopped, new Promise((resolve) => setTimeout(resolve, 1000))]);
    for (const track of this.media.getTracks()) track.stop();
    await this.context.close();
    this.tap = null;
  }
}

// -- one publication -------------------------------------------------------------------------------
class Publication {
  constructor({ stream, tracks, sourceLang, token }) {
    Object.assign(this, { stream, tracks, sourceLang, token });
    this.board = new CaptionBoard({ tracks, rows: 5000, drafts: true, expireMs: 0, draftExpireMs: 0 });
    this.stats = new Map(tracks.map((t) => [t, { draftLag: null, finalLag: null, drafts: 0, finals: 0 }]));
    this.queue = []; // PCM16 chunks not yet sent
    this.dropped = 0;
    this.lastSeq = 0;
    this.sessionId = null;
    this.ready = false;
    this.ending = false;
    this.closed = false;
    this.attempt = 0;
    this.mic = new Microphone();
  }

  async start() {
    setState("starting", "microphone");
    try {
      await this.mic.start((chunk) => this.audio(chunk));
    } catch (error) {
      await this.mic.stop().catch(() => {});
      this.finish("failed", micProblem(error));
      return;
    }
    this.connect();
  }

  audio(chunk) {
    const samples = new Int16Array(chunk);
    let peak = 0;
    for (const s of samples) peak = Math.max(peak, Math.abs(s));
    $("level").style.width = `${Math.min(100, (100 * peak) / 0x7fff)}%`;
    this.queue.push(chunk);
    const limit = (BUFFER_S * 1000) / CHUNK_MS;
    if (this.queue.length > limit) {
      this.dropped += this.queue.length - limit;
      this.queue.splice(0, this.queue.length - limit);
      notice(`The server has been away for over ${BUFFER_S} s: the oldest audio was dropped.`);
    }
    this.pump();
  }

  pump() {
    if (!this.ready || this.socket?.readyState !== WebSocket.OPEN) return;
    while (this.queue.length) this.socket.send(JSON.stringify({ type: "audio", pcm_b64: base64(this.queue.shift()) }));
  }

  connect() {
    setState(this.attempt ? "reconnecting" : "connecting", this.attempt ? `attempt ${this.attempt + 1}` : "");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/`);
    this.socket = socket;
    this.ready = false;
    socket.onopen = () => {
      const hello = { type: "hello", protocol: PROTOCOL, stream: this.stream, role: "publish", tracks: this.tracks, source_lang: this.sourceLang };
      if (this.token) hello.token = this.token;
      socket.send(JSON.stringify(hello));
      if (this.sessionId) socket.send(JSON.stringify({ type: "resume", last_seq: this.lastSeq, session: this.sessionId }));
    };
    socket.onmessage = (event) => this.receive(socket, event.data);
    socket.onclose = (event) => {
      if (this.socket !== socket || this.closed) return;
      this.ready = false;
      if (event.code === 1008 || event.code === 1013) {
        this.finish("failed", `The server closed the connection: ${event.reason || event.code}`);
        return;
      }
      const delay = Math.min(10000, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
      this.attempt += 1;
      setState("reconnecting", `in ${Math.round(delay / 100) / 10} s; audio is kept`);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  receive(socket, data) {
    if (typeof data !== "string" || this.socket !== socket) return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (Number.isInteger(message.seq)) this.lastSeq = Math.max(this.lastSeq, message.seq);
    switch (message.type) {
      case "ready":
        this.ready = true;
        this.attempt = 0;
        this.sessionId = message.session;
        this.tracks = message.tracks;
        notice(this.dropped ? $("notice").textContent : "");
        setState(this.ending ? "ending" : "live", this.ending ? "waiting for the last finals" : "speak now");
        this.pump();
        if (this.ending) socket.send(JSON.stringify({ type: "end" }));
        break;
      case "draft":
      case "final":
        if (this.board.apply(message)) {
          this.record(message);
          render(this);
        }
        break;
      case "error":
        if (message.ref === "hello") {
          const hint = ["unauthorized", "forbidden"].includes(message.code) ? " Check the publish token." : "";
          this.finish("refused", `${message.code}: ${message.message}.${hint}`);
        } else if (message.code !== "resume_unknown") {
          notice(`${message.code}: ${message.message}`);
        }
        break;
      case "bye":
        this.finish(this.ending ? "ended" : "closed", this.summary());
        break;
      default:
        break;
    }
  }

  record(message) {
    const s = this.stats.get(message.track);
    if (!s) return;
    if (message.type === "draft") {
      s.drafts += 1;
      s.draftLag = message.latency_ms;
    } else {
      s.finals += 1;
      s.finalLag = message.latency_ms;
    }
  }

  summary() {
    return this.tracks.map((t) => `${t}: ${this.stats.get(t)?.finals ?? 0} finals`).join(", ");
  }

  async stop() {
    if (this.ending || this.closed) return;
    this.ending = true;
    setState("ending", "waiting for the last finals");
    await this.mic.stop();
    this.endTimer = setTimeout(() => this.finish("failed", "No bye from the server: finals may be missing."), END_TIMEOUT_MS);
    if (this.ready && this.socket.readyState === WebSocket.OPEN) {
      this.pump();
      this.socket.send(JSON.stringify({ type: "end" }));
    } // else: sent once the reconnect is ready (see `ready`)
  }

  finish(state, message) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.endTimer);
    this.mic.stop().catch(() => {});
    this.socket?.close(1000, "done");
    $("level").style.width = "0";
    if (state === "ended" || state === "closed") {
      if (!this.dropped) notice("");
      setState(state, message);
    } else {
      notice(message);
      setState(state);
    }
    if (session === this) session = null;
  }
}

// -- rendering -------------------------------------------------------------------------------------
function render(publication) {
  const board = $("board");
  for (const track of publication.tracks) {
    let column = board.querySelector(`.track[data-track="${track}"]`);
    if (!column) {
      column = element("section", { className: "track", dataset: { track } }, element("h2", {}, track));
      board.append(column);
    }
    const stick = column.scrollHeight - column.scrollTop - column.clientHeight < 40;
    const lines = publication.board.visible(track).map((line) =>
      element("p", { className: `line ${line.final ? "final" : "draft"}`, dataset: { track, window: String(line.window) } }, line.text),
    );
    const shown = new Map([...column.querySelectorAll(".line")].map((node) => [node.dataset.window, node]));
    for (const line of lines) {
      const node = shown.get(line.dataset.window);
      if (node) {
        if (node.textContent !== line.textContent) node.textContent = line.textContent;
        if (node.className !== line.className) node.className = line.className;
      } else {
        column.append(line);
      }
    }
    if (stick) column.scrollTop = column.scrollHeight;
  }
  $("latency").tBodies[0].replaceChildren(
    ...publication.tracks.map((track) => {
      const s = publication.stats.get(track) ?? { draftLag: null, finalLag: null, drafts: 0, finals: 0 };
      const ms = (value) => (value === null ? "–" : `${value} ms`);
      return element(
        "tr",
        { dataset: { track } },
        element("th", { scope: "row" }, track),
        element("td", { className: "num draft-lag" }, ms(s.draftLag)),
        element("td", { className: "num final-lag" }, ms(s.finalLag)),
        element("td", { className: "num drafts" }, String(s.drafts)),
        element("td", { className: "num finals" }, String(s.finals)),
      );
    }),
  );
}

function showLinks(stream, tracks) {
  const viewer = `${location.origin}/?stream=${encodeURIComponent(stream)}&tracks=${tracks.join(",")}`;
  const overlay = `${location.origin}/overlay?stream=${encodeURIComponent(stream)}&tracks=${tracks.join(",")}`;
  $("links").replaceChildren(
    "Viewers: ",
    element("a", { href: viewer, target: "_blank" }, "viewer page"),
    " · OBS: ",
    element("a", { href: overlay, target: "_blank" }, "overlay"),
    " (add &token= with a subscribe token where the server needs one)",
  );
}

// -- the form --------------------------------------------------------------------------------------
const q = queryOptions();
$("stream").value = q.text("stream", "");
$("source-lang").value = ["en", "pt"].includes(q.text("source_lang", "en")) ? q.text("source_lang", "en") : "en";
$("tracks").value = q.list("tracks", DEFAULT_TRACKS[$("source-lang").value].split(",")).join(",");
$("token").value = q.text("token", "");
if (new URLSearchParams(location.search).has("token")) {
  const visible = new URLSearchParams(location.search);
  visible.delete("token"); // the token stays in the form, not in the address bar or history
  history.replaceState(null, "", `${location.pathname}${visible.size ? `?${visible}` : ""}`);
}
$("source-lang").addEventListener("change", () => {
  const others = Object.values(DEFAULT_TRACKS);
  if (!$("tracks").value.trim() || others.includes($("tracks").value.trim())) {
    $("tracks").value = DEFAULT_TRACKS[$("source-lang").value];
  }
});

$("publish-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (session) {
    await session.stop();
    return;
  }
  const stream = $("stream").value.trim();
  const tracks = [...new Set($("tracks").value.split(",").map((t) => t.trim()).filter(Boolean))];
  if (!STREAM_RE.test(stream)) return notice("A stream name is 1-128 letters, digits or _ . : -");
  if (!tracks.length || tracks.length > 16 || !tracks.every((t) => TRACK_RE.test(t))) {
    return notice("Tracks are 1-16 names of letters, digits, _ or -, comma-separated (e.g. caption,pt).");
  }
  notice("");
  $("board").replaceChildren();
  showLinks(stream, tracks);
  session = new Publication({ stream, tracks, sourceLang: $("source-lang").value, token: $("token").value.trim() });
  render(session);
  await session.start();
});

setState("idle", window.isSecureContext ? "" : "the microphone needs https:// or localhost");
