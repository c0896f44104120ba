"""The sans-I/O HTTP side: routing, headers (types, caching, CSP), the stream list, caption downloads
from a real hub's finals, and stream epochs; no event loop, no socket."""

from __future__ import annotations

import json

import pytest
import srt
import webvtt

from engine.types import CAPTION_TRACK, CanvasKey, Draft, Final, WindowJob
from stream.final_log import FinalLog
from stream.hub import ORPHAN_GRACE_MS, StreamHub
from stream.web import HttpReply, HttpSite, load_assets, to_response
from stream.wire.messages import DraftMsg, FinalMsg

MS = 1_000_000


class Viewer:
    def __init__(self, *tracks: str) -> None:
        self.tracks = frozenset(tracks)
        self.messages: list[DraftMsg | FinalMsg] = []

    def deliver(self, message: DraftMsg | FinalMsg) -> None:
        self.messages.append(message)


class Site:
    """A real hub (fake clock, jobs collected), its final log and the HTTP routes over them."""

    def __init__(self, **log_options: int) -> None:
        self.now = [1_000 * MS]
        self.jobs: list[WindowJob] = []
        self.log = FinalLog(clock=lambda: self.now[0] / 1e9, **log_options)
        self.hub = StreamHub(self.jobs.append, idle_ms=1500, clock_ns=lambda: self.now[0], finals=self.log)
        self.site = HttpSite(self.hub)

    def get(self, target: str, **headers: str) -> HttpReply:
        reply = self.site.route(target, {k.replace("_", "-"): v for k, v in headers.items()})
        assert reply is not None
        return reply

    def engine(self, stream: str, track: str, window: int, text: str, *, draft: bool = False) -> None:
        key = CanvasKey(stream, track, window)
        event = (
            Draft(key=key, rev=0, text=text, steps=2)
            if draft
            else Final(key=key, rev=1, text=text, steps=8, tokens=3)
        )
        self.hub.on_engine_events([event])


@pytest.fixture
def s() -> Site:
    return Site()


def test_pages_are_html_with_a_restrictive_policy_and_revalidated(s: Site) -> None:
    viewer = s.get("/")
    assert viewer.status == 200
    assert viewer.content_type == "text/html; charset=utf-8"
    assert b'<script type="module" src="/static/viewer.js">' in viewer.body
    csp = viewer.header("Content-Security-Policy") or ""
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'self'",
    ):
        assert directive in csp
    assert "unsafe" not in csp
    assert viewer.header("Cache-Control") == "no-cache"
    overlay = s.get("/overlay?stream=talk&tracks=caption,pt")
    assert b"/static/overlay.js" in overlay.body
    assert "frame-ancestors" not in (overlay.header("Content-Security-Policy") or "")  # OBS docks frame it
    etag = overlay.header("ETag")
    assert etag
    again = s.get("/overlay", if_none_match=f'"other", {etag}')
    assert (again.status, again.body) == (304, b"")
    response = to_response(again)
    assert "Content-Length" not in response.headers
    assert response.headers["ETag"] == etag


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("overlay.js", "text/javascript"),
        ("captions.js", "text/javascript"),
        ("viewer.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ],
)
def test_static_assets_have_their_types(s: Site, name: str, content_type: str) -> None:
    reply = s.get(f"/static/{name}")
    assert reply.status == 200
    assert reply.content_type.startswith(content_type)
    assert reply.body == load_assets()[name].body
    headers = to_response(reply).headers
    assert headers["Content-Length"] == str(len(reply.body))
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "target",
    [
        "/static/../stream/web.py",
        "/static/%2e%2e/pyproject.toml",
        "/static/missing.js",
        "/static/viewer.html",  # pages have their own paths (and policies)
        "/static/",
        "/nope",
        "/captions/talk/caption.exe",
        "/captions/../x/caption.vtt",
    ],
)
def test_anything_else_is_not_found(s: Site, target: str) -> None:
    reply = s.get(target)
    assert reply.status == 404
    assert reply.content_type == "text/plain; charset=utf-8"


def test_websocket_upgrades_pass_through_on_any_path(s: Site) -> None:
    assert s.site.route("/", {"upgrade": "websocket", "connection": "Upgrade"}) is None
    assert s.site.route("/overlay", {"upgrade": "WebSocket"}) is None


def test_stream_list_shows_live_streams_tracks_and_counts(s: Site) -> None:
    assert json.loads(s.get("/streams").body) == {"streams": []}
    s.hub.join("talk", Viewer(), publisher=True, source_lang="en")
    s.hub.join("talk", Viewer("caption", "pt"), publisher=False, source_lang="en")
    s.hub.join("talk", Viewer("es"), publisher=False, source_lang="en")
    s.hub.publish_text("talk", "Hello there.", None)
    reply = s.get("/streams")
    assert reply.header("Cache-Control") == "no-store"
    [row] = json.loads(reply.body)["streams"]
    assert row["stream"] == "talk"
    assert row["tracks"] == ["caption", "es", "pt"]
    assert (row["live"], row["publishing"], row["viewers"]) == (True, True, 2)
    assert row["finals"] == {"caption": 1}
    assert row["epoch"] == s.log.epoch_of("talk")


def test_captions_download_as_vtt_srt_and_json(s: Site) -> None:
    publisher, viewer = Viewer(), Viewer("caption", "pt")
    s.hub.join("talk", publisher, publisher=True, source_lang="en")
    s.hub.join("talk", viewer, publisher=False, source_lang="en")
    s.hub.publish_text("talk", "Good evening.", 0)
    s.now[0] += 2_000 * MS
    s.hub.publish_text("talk", "Welcome to the show & <more>.", 2_000)
    s.engine("talk", "pt", 0, "Boa", draft=True)
    s.engine("talk", "pt", 0, "Boa noite.")
    s.engine("talk", "pt", 1, "Bem-vindos.")
    vtt = s.get("/captions/talk/caption.vtt")
    assert vtt.content_type == "text/vtt; charset=utf-8"
    assert vtt.header("Content-Disposition") == 'inline; filename="talk-caption.vtt"'
    cues = webvtt.from_string(vtt.body.decode())
    assert [c.text for c in cues] == ["Good evening.", "Welcome to the show &amp; &lt;more&gt;."]
    assert cues[0].start == "00:00:00.000"
    assert cues[1].start == "00:00:02.000"
    download = s.get("/captions/talk/pt.srt?download=1")
    assert download.header("Content-Disposition") == 'attachment; filename="talk-pt.srt"'
    assert [sub.content for sub in srt.parse(download.body.decode())] == ["Boa noite.", "Bem-vindos."]
    document = json.loads(s.get("/captions/talk/pt.json").body)
    assert document["epoch"] == s.log.epoch_of("talk")
    assert [(f["window"], f["text"]) for f in document["finals"]] == [(0, "Boa noite."), (1, "Bem-vindos.")]
    assert json.loads(s.get("/streams").body)["streams"][0]["finals"] == {"caption": 2, "pt": 2}
    empty = json.loads(s.get("/captions/talk/es.json").body)
    assert empty["finals"] == []
    assert s.get("/captions/elsewhere/caption.vtt").status == 404


def test_a_restarted_stream_gets_a_new_epoch_and_a_new_transcript(s: Site) -> None:
    publisher = Viewer()
    s.hub.join("talk", publisher, publisher=True, source_lang="en")
    s.hub.publish_text("talk", "First life.", None)
    first = s.log.epoch_of("talk")
    s.hub.leave("talk", publisher)
    s.now[0] += ORPHAN_GRACE_MS * MS  # the publisher did not resume in time
    s.hub.tick()
    assert "talk" not in s.hub.streams  # forgotten by the hub ...
    row = json.loads(s.get("/streams").body)["streams"][0]
    assert (row["stream"], row["live"], row["epoch"]) == ("talk", False, first)  # ... still downloadable
    assert "First life." in s.get("/captions/talk/caption.srt").body.decode()
    s.now[0] += 5 * MS
    s.hub.join("talk", Viewer(), publisher=True, source_lang="en")
    second = s.log.epoch_of("talk")
    assert second != first
    assert json.loads(s.get("/captions/talk/caption.json").body) == {
        "stream": "talk", "track": CAPTION_TRACK, "epoch": second, "finals": [],
    }  # fmt: skip
    s.hub.publish_text("talk", "Second life.", None)
    finals = json.loads(s.get("/captions/talk/caption.json").body)["finals"]
    assert [(f["window"], f["text"]) for f in finals] == [(0, "Second life.")]


def test_the_log_keeps_bounded_captions_and_forgets_old_streams_first() -> None:
    s = Site(max_captions=2, max_streams=2)
    for name in ("a", "b", "c"):
        publisher = Viewer()
        s.hub.join(name, publisher, publisher=True, source_lang="en")
        s.hub.publish_text(name, "One. Two. Three.", None)
        if name != "c":
            s.hub.leave(name, publisher)
            s.now[0] += ORPHAN_GRACE_MS * MS  # its publisher did not resume in time
            s.hub.tick()
    rows = json.loads(s.get("/streams").body)["streams"]
    assert [(r["stream"], r["live"]) for r in rows] == [("c", True), ("b", False)]
    finals = json.loads(s.get("/captions/c/caption.json").body)["finals"]
    assert [f["text"] for f in finals] == ["Two.", "Three."]
    assert rows[0]["finals"] == {"caption": 3}  # counted, though only the newest two are kept
    assert s.get("/captions/a/caption.vtt").status == 404
