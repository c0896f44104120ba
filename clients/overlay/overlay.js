// The OBS overlay: /overlay?stream=talk&tracks=caption,pt ... (every option: docs/overlay.md).
import { CaptionBoard, CaptionClient, cssColour, queryOptions } from "./captions.js";

const q = queryOptions();
const options = {
  stream: q.text("stream", "demo"),
  tracks: q.list("tracks", ["caption"]).slice(0, 16),
  token: q.text("token", ""),
  rows: q.number("rows", 2, 1, 20),
  drafts: q.flag("drafts", true),
  expireMs: q.number("expire", 10, 0, 3600) * 1000,
  position: ["top", "middle", "bottom"].includes(q.text("position", "")) ? q.text("position") : "bottom",
  align: ["left", "center", "right"].includes(q.text("align", "")) ? q.text("align") : "center",
  debug: q.flag("debug", false),
};

const root = document.documentElement.style;
root.setProperty("--font", q.text("font", getComputedStyle(document.documentElement).getPropertyValue("--font")));
root.setProperty("--size", `${q.number("size", 40, 8, 200)}px`);
root.setProperty("--align", options.align);
for (const [param, variable, fallback] of [
  ["color", "--color", "#ffffff"],
  ["color2", "--color2", "#ffe27a"],
  ["draft_color", "--draft-color", "#d8d8d8"],
  ["outline", "--outline", "#000000"],
  ["box", "--box", "transparent"],
]) {
  root.setProperty(variable, cssColour(q.text(param, ""), fallback));
}

const main = document.getElementById("captions");
const status = document.getElementById("status");
main.classList.add(options.position);
const sections = new Map();
for (const track of options.tracks) {
  const section = document.createElement("section");
  section.className = "track";
  section.dataset.track = track;
  section.lang = track === "caption" ? "" : track;
  main.append(section);
  sections.set(track, section);
}

const board = new CaptionBoard({
  tracks: options.tracks,
  rows: options.rows,
  drafts: options.drafts,
  expireMs: options.expireMs,
});

function render() {
  for (const [track, section] of sections) {
    const wanted = board.visible(track);
    const keep = new Set(wanted.map((line) => String(line.window)));
    for (const element of [...section.children]) {
      if (!keep.has(element.dataset.window)) element.remove();
    }
    let previous = null;
    for (const line of wanted) {
      let element = section.querySelector(`:scope > [data-window="${line.window}"]`);
      if (!element) {
        element = document.createElement("p");
        element.dataset.track = track;
        element.dataset.window = String(line.window);
      }
      element.className = line.final ? "line final" : "line draft";
      if (element.textContent !== line.text) element.textContent = line.text;
      const anchor = previous ? previous.nextSibling : section.firstChild;
      if (anchor !== element) section.insertBefore(element, anchor);
      previous = element;
    }
  }
}

function showStatus(state, detail) {
  document.body.dataset.state = state;
  const problem = state === "refused" || (state === "reconnecting" && client.attempt > 2);
  status.hidden = !(problem || options.debug);
  status.textContent = detail ? `${state}: ${detail}` : state;
}

const client = new CaptionClient({
  stream: options.stream,
  tracks: options.tracks,
  token: options.token,
  onStatus: showStatus,
  onBacklog(track, epoch, finals, first) {
    // on the first connect the kept finals are history: only remember them; after a reconnect they
    // are what was missed (and anything already on screen is not repeated)
    if (board.absorb(track, epoch, finals, { show: !first })) render();
  },
  onMessage(message) {
    if (board.apply(message)) render();
  },
});

setInterval(() => {
  if (board.expire()) render();
}, 250);
client.start();
