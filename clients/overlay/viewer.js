// The viewer page: live streams and their tracks, a live transcript, latency, caption downloads.
// /?stream=talk&tracks=caption,pt opens a stream directly (docs/overlay.md); &token=... is the
// subscribe token of a server that needs one (it is kept in every link this page makes).
import { CaptionBoard, CaptionClient, authHeaders, captionsUrl, queryOptions, withToken } from "./captions.js";

const TRACK_RE = /^[A-Za-z0-9_-]{1,32}$/;
const KEEP = 200; // latency samples per track and kind
// the status line once the server says `ended` (docs/protocol.md, "End of a stream"), by its reason
const ENDED = { end: "the publisher finished; the transcript is complete", disconnected: "the publisher left" };
const $ = (id) => document.getElementById(id);
const statusEl = $("status");
const TOKEN = queryOptions().text("token", "");

let streams = [];
let current = null; // { stream, tracks, client, board, stats }

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

function setStatus(state, detail = "") {
  statusEl.dataset.state = state;
  statusEl.textContent = detail ? `${state} (${detail})` : state;
}

// -- stream list ---------------------------------------------------------------------------------
async function refreshStreams() {
  try {
    const response = await fetch("/streams", { cache: "no-store", headers: authHeaders(TOKEN) });
    if (!response.ok) return;
    streams = (await response.json()).streams;
  } catch {
    return; // the server is away; the connection's status already says so
  }
  const list = $("stream-list");
  list.replaceChildren(
    ...streams.map((s) => {
      const link = element(
        "a",
        { href: withToken(`/?stream=${encodeURIComponent(s.stream)}&tracks=${s.tracks.join(",")}`, TOKEN), dataset: { stream: s.stream } },
        s.stream,
        element("span", { className: s.publishing ? "badge" : "badge ended" }, s.publishing ? "live" : s.live ? "idle" : "ended"),
        element("span", { className: "meta" }, `${s.tracks.join(", ")} · ${s.viewers} viewer${s.viewers === 1 ? "" : "s"}`),
      );
      link.setAttribute("aria-current", String(current?.stream === s.stream));
      link.addEventListener("click", (event) => {
        event.preventDefault();
        open(s.stream, s.tracks);
      });
      return element("li", {}, link);
    }),
  );
  $("no-streams").hidden = streams.length > 0;
  if (current) renderTrackPicker();
}

// -- one stream ----------------------------------------------------------------------------------
function emptyStats() {
  return { draftLag: [], finalLag: [], lastDraft: null, lastFinal: null, drafts: 0, finals: 0, drafted: new Set() };
}

function open(stream, tracks) {
  current?.client.stop();
  tracks = [...new Set(tracks.filter((t) => TRACK_RE.test(t)))].slice(0, 16);
  if (!tracks.length) tracks = ["caption"];
  const url = withToken(`/?stream=${encodeURIComponent(stream)}&tracks=${tracks.join(",")}`, TOKEN);
  history.replaceState(null, "", url);
  const board = new CaptionBoard({ tracks, rows: 5000, drafts: true, expireMs: 0, draftExpireMs: 0 });
  const stats = new Map(tracks.map((t) => [t, emptyStats()]));
  current = { stream, tracks, board, stats, client: null };
  $("session").hidden = false;
  $("stream-title").textContent = stream;
  const overlay = withToken(`${location.origin}/overlay?stream=${encodeURIComponent(stream)}&tracks=${tracks.join(",")}`, TOKEN);
  $("overlay-link").replaceChildren("OBS browser source: ", element("a", { href: overlay, target: "_blank" }, overlay));
  const head = $("transcript").tHead.rows[0];
  head.replaceChildren(element("th", {}, "#"), ...tracks.map((t) => element("th", { scope: "col" }, t)));
  $("transcript").tBodies[0].replaceChildren();
  renderTrackPicker();
  renderLatency();
  const session = current;
  // the stream ended and started again under its name (a new epoch): windows count from 0, a new transcript
  const newTranscript = () => $("transcript").tBodies[0].replaceChildren();
  session.client = new CaptionClient({
    stream,
    tracks,
    token: TOKEN,
    onStatus: (state, detail) => setStatus(state, state === "ended" ? (ENDED[detail] ?? detail) : detail),
    onBacklog(track, epoch, finals) {
      if (board.enter(epoch)) newTranscript();
      const before = board.lastFinal.get(track) ?? -1;
      board.absorb(track, epoch, finals, { show: true });
      for (const final of finals) if (final.window > before) showCell(track, final.window);
    },
    onMessage(message) {
      if (current !== session) return;
      if (message.type === "draft" || message.type === "final") {
        if (board.enter(message.epoch)) newTranscript();
        const fresh = board.apply(message);
        if (fresh) {
          record(message);
          showCell(message.track, message.window);
        }
      } else if (message.type === "error") {
        setStatus("error", `${message.code}: ${message.message}`);
      }
    },
  });
  session.client.start();
  for (const link of document.querySelectorAll("#stream-list a")) {
    link.setAttribute("aria-current", String(link.dataset.stream === stream));
  }
}

function renderTrackPicker() {
  const listed = streams.find((s) => s.stream === current.stream)?.tracks ?? [];
  const all = [...new Set([...current.tracks, ...listed])];
  const picker = $("track-picker");
  picker.replaceChildren(
    element("legend", {}, "Tracks"),
    ...all.map((track) => {
      const box = element("input", { type: "checkbox", name: "track", value: track, checked: current.tracks.includes(track) });
      box.addEventListener("change", () => {
        const chosen = [...picker.querySelectorAll("input:checked")].map((input) => input.value);
        if (chosen.length) open(current.stream, chosen);
        else box.checked = true;
      });
      return element("label", {}, box, ` ${track}`);
    }),
  );
}

function record(message) {
  const s = current.stats.get(message.track);
  if (!s) return;
  if (message.type === "draft") {
    s.drafts += 1;
    s.lastDraft = message.latency_ms;
    if (!s.drafted.has(message.window)) {
      s.drafted.add(message.window);
      s.draftLag.push(message.latency_ms);
      if (s.draftLag.length > KEEP) s.draftLag.shift();
    }
  } else {
    s.finals += 1;
    s.lastFinal = message.latency_ms;
    s.finalLag.push(message.latency_ms);
    if (s.finalLag.length > KEEP) s.finalLag.shift();
  }
  renderLatency();
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function lag(last, values) {
  if (last === null) return "–";
  return `${last} ms (median ${Math.round(median(values))} ms)`;
}

function renderLatency() {
  const body = $("latency").tBodies[0];
  body.replaceChildren(
    ...current.tracks.map((track) => {
      const s = current.stats.get(track);
      const downloads = element(
        "td",
        {},
        element("a", { href: withToken(`${captionsUrl(current.stream, track, "vtt")}?download=1`, TOKEN), download: `${current.stream}-${track}.vtt` }, "WebVTT"),
        " · ",
        element("a", { href: withToken(`${captionsUrl(current.stream, track, "srt")}?download=1`, TOKEN), download: `${current.stream}-${track}.srt` }, "SRT"),
      );
      return element(
        "tr",
        { dataset: { track } },
        element("th", { scope: "row" }, track),
        element("td", { className: "num draft-lag" }, lag(s.lastDraft, s.draftLag)),
        element("td", { className: "num final-lag" }, lag(s.lastFinal, s.finalLag)),
        element("td", { className: "num drafts" }, String(s.drafts)),
        element("td", { className: "num finals" }, String(s.finals)),
        downloads,
      );
    }),
  );
}

function showCell(track, window) {
  const box = $("transcript-box");
  const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const body = $("transcript").tBodies[0];
  let row = body.querySelector(`tr[data-window="${window}"]`);
  if (!row) {
    row = element("tr", { dataset: { window: String(window) } }, element("td", { className: "window" }, String(window)));
    for (const t of current.tracks) row.append(element("td", { dataset: { track: t } }));
    const after = [...body.rows].find((r) => Number(r.dataset.window) > window) ?? null;
    body.insertBefore(row, after);
  }
  const cell = row.querySelector(`td[data-track="${track}"]`);
  const line = current.board.lines.get(`${track}#${window}`);
  if (line) {
    cell.textContent = line.text;
    cell.className = line.final ? "final" : "draft";
  } else {
    cell.textContent = "(no text)";
    cell.className = "failed";
  }
  if (stick) box.scrollTop = box.scrollHeight;
}

$("track-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("add-track");
  const track = input.value.trim();
  if (current && TRACK_RE.test(track)) open(current.stream, [...current.tracks, track]);
  input.value = "";
});

const q = queryOptions();
const wanted = q.text("stream", null);
await refreshStreams();
if (wanted) {
  const listed = streams.find((s) => s.stream === wanted)?.tracks ?? ["caption"];
  open(wanted, q.list("tracks", listed));
} else {
  setStatus("idle", "choose a stream");
}
setInterval(refreshStreams, 3000);
