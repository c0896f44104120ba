"""The pages' caption model (clients/overlay/captions.js) run in Chromium: keyed lines, drafts replaced
by finals, no final twice (a repeat after a reconnect, kept finals overlapping live ones), a restarted
stream's new epoch (in kept finals and in live messages), roll-up and expiry, the "ended" status, and the
query-string options."""

from __future__ import annotations

from typing import Any

from stream.server import LivecanvasServer
from tests.e2e.conftest import OpenPage, http_url

SCENARIO = """async () => {
  const { CaptionBoard, CaptionClient, queryOptions, cssColour } = await import("/static/captions.js");
  const d = (track, window, rev, text) => ({ type: "draft", track, window, rev, text });
  const f = (track, window, text, error = null) => ({ type: "final", track, window, rev: 9, text, error });
  const show = (board, track) =>
    board.visible(track).map((l) => `${l.window}:${l.final ? "F" : "d"}:${l.text}`);
  const out = {};

  const board = new CaptionBoard({ tracks: ["caption", "pt"], rows: 2, expireMs: 1000 });
  out.applied = [
    board.apply(d("pt", 0, 0, "Bo"), 0),
    board.apply(d("pt", 0, 2, "Bom dia"), 0),
    board.apply(d("pt", 0, 1, "Bom"), 0),          // older revision: ignored
    board.apply(f("pt", 0, "Bom dia."), 10),
    board.apply(f("pt", 0, "Bom dia."), 20),       // the same final again: ignored
    board.apply(d("pt", 0, 3, "late"), 30),        // a draft after its final: ignored
    board.apply(d("es", 0, 0, "Hola"), 30),        // a track not shown: ignored
  ];
  out.afterFinal = show(board, "pt");
  board.apply(d("pt", 1, 0, "Como"), 40);
  board.apply(f("pt", 1, "Como vai?"), 50);
  board.apply(d("pt", 2, 0, "Tudo"), 60);
  out.rolledUp = show(board, "pt");
  out.expired = [board.expire(1049), board.expire(1050), show(board, "pt")];
  board.apply(f("caption", 0, "", "engine failed"), 70);
  out.failed = show(board, "caption");

  const resumed = new CaptionBoard({ tracks: ["caption"], rows: 5 });
  const kept = (...texts) => texts.map(([window, text]) => ({ window, text }));
  resumed.absorb("caption", "e1", kept([0, "Zero."], [1, "One."]), { show: false });
  out.firstConnect = show(resumed, "caption");
  resumed.apply(f("caption", 2, "Two."));
  resumed.absorb("caption", "e1", kept([1, "One."], [2, "Two."], [3, "Three."]));
  resumed.apply(f("caption", 3, "Three."));        // live copy of a kept final: ignored
  out.reconnect = show(resumed, "caption");
  resumed.absorb("caption", "e2", kept([0, "New zero."]));
  out.newEpoch = [resumed.epoch, show(resumed, "caption")];

  const live = new CaptionBoard({ tracks: ["caption"], rows: 5 });
  const e = (epoch, window, text) => ({ ...f("caption", window, text), epoch });
  out.liveEpochs = [
    live.apply(e("e1", 0, "Zero."), 0),
    live.apply(e("e1", 1, "One."), 0),
    live.apply(e("e1", 1, "One again."), 0),      // a repeat: ignored
    live.apply(e("e2", 0, "New zero."), 0),       // a new epoch: a new programme, not a repeat
    live.apply(d("caption", 0, 0, "late"), 0),    // no epoch said: the current one
  ];
  out.afterLiveEpoch = [live.epoch, show(live, "caption")];
  out.endedOnBoard = live.apply({ type: "ended", stream: "s", reason: "end", windows: 1, epoch: "e2" }, 0);

  const statuses = [];
  const seen = [];
  const client = new CaptionClient({
    stream: "s", tracks: ["caption"], onStatus: (state, detail) => statuses.push(`${state}:${detail}`),
    onMessage: (message) => seen.push(message.type),
  });
  for (const message of [f("caption", 0, "Zero."), { type: "ended", reason: "end" }, { type: "stats" },
                         f("caption", 1, "Again."), f("caption", 2, "More.")]) client.deliver(message);
  out.endedStatus = [statuses, seen];

  const q = queryOptions("?rows=99&size=abc&drafts=0&tracks=caption,pt,caption,&font=%20Serif%20");
  out.options = [q.number("rows", 2, 1, 20), q.number("size", 40, 8, 200), q.flag("drafts", true),
                 q.flag("debug", false), q.list("tracks", []), q.text("font", "x"), q.text("stream", "demo")];
  out.colours = ["ffcc00", "gold", "url(x)", ""].map((value) => cssColour(value, "w"));
  return out;
}"""


async def test_caption_board_rules(text_server: LivecanvasServer, open_page: OpenPage) -> None:
    page = await open_page(http_url(text_server, "/overlay?stream=js-unit"))
    out: dict[str, Any] = await page.evaluate(SCENARIO)
    assert out["applied"] == [True, True, False, True, False, False, False]
    assert out["afterFinal"] == ["0:F:Bom dia."]
    assert out["rolledUp"] == ["1:F:Como vai?", "2:d:Tudo"]
    assert out["expired"] == [False, True, ["2:d:Tudo"]]  # finals go after expireMs, drafts wait longer
    assert out["failed"] == []
    assert out["firstConnect"] == []  # history is only remembered on the first connect
    assert out["reconnect"] == ["2:F:Two.", "3:F:Three."]
    assert out["newEpoch"] == ["e2", ["0:F:New zero."]]
    assert out["liveEpochs"] == [True, True, False, True, False]
    assert out["afterLiveEpoch"] == ["e2", ["0:F:New zero."]]
    assert out["endedOnBoard"] is False  # not a line: nothing on screen changes
    assert out["endedStatus"] == [["ended:end", "live:"], ["final", "ended", "stats", "final", "final"]]
    assert out["options"] == [20, 40, False, False, ["caption", "pt"], "Serif", "demo"]
    assert out["colours"] == ["#ffcc00", "gold", "w", "w"]
