"""The sans-I/O StreamHub under test: a recording viewer and a hub with a fake clock and job list."""

from __future__ import annotations

from engine.types import CanvasKey, Draft, Final, WindowJob
from stream.draft_display import DraftDisplay
from stream.hub import ORPHAN_GRACE_MS, StreamHub
from stream.stream_state import Delivery
from stream.wire.messages import DraftMsg, FinalMsg

MS = 1_000_000  # nanoseconds per millisecond
START_NS = 5_000 * MS  # the fake clock does not start at zero: stream times are relative to join
IDLE_MS = 1500
AS_SENT = DraftDisplay(translate_open=False, hold_back_words=0, agreement=False)
"""Closed windows translated only, engine drafts shown whole: what the hub tests before open windows
were translated assume."""


class RecordingViewer:
    """A connection as the hub sees it: fixed tracks, every delivered message recorded."""

    def __init__(self, *tracks: str) -> None:
        self.tracks = frozenset(tracks)
        self.messages: list[Delivery] = []

    def deliver(self, message: Delivery) -> None:
        self.messages.append(message)

    def finals(self, track: str | None = None) -> list[FinalMsg]:
        return [m for m in self.messages if isinstance(m, FinalMsg) and track in (None, m.track)]

    def drafts(self, track: str | None = None) -> list[DraftMsg]:
        return [m for m in self.messages if isinstance(m, DraftMsg) and track in (None, m.track)]


class Harness:
    """A hub with a recording ``submit`` and a fake clock (``now[0]`` nanoseconds)."""

    def __init__(
        self,
        *,
        max_window_words: int = 32,
        orphan_grace_ms: int = ORPHAN_GRACE_MS,
        display: DraftDisplay = AS_SENT,
    ) -> None:
        self.now = [START_NS]
        self.jobs: list[WindowJob] = []
        self.cancelled: list[CanvasKey] = []
        self.hub = StreamHub(
            self.jobs.append,
            max_window_words=max_window_words,
            idle_ms=IDLE_MS,
            clock_ns=lambda: self.now[0],
            orphan_grace_ms=orphan_grace_ms,
            cancel=self.cancelled.extend,
            display=display,
        )

    def advance(self, ms: int) -> None:
        self.now[0] += ms * MS

    def join(self, *tracks: str, publisher: bool = False, stream: str = "s") -> RecordingViewer:
        viewer = RecordingViewer(*tracks)
        self.hub.join(stream, viewer, publisher=publisher, source_lang="en")
        return viewer

    def jobs_for(self, track: str) -> list[WindowJob]:
        return [job for job in self.jobs if job.target_lang == track]

    def final(self, track: str, window: int, text: str, *, error: str | None = None, rev: int = 1) -> None:
        key = CanvasKey("s", track, window)
        self.hub.on_engine_events([Final(key=key, rev=rev, text=text, steps=10, tokens=4, error=error)])

    def draft(self, track: str, window: int, text: str, *, rev: int = 0) -> None:
        self.hub.on_engine_events([Draft(key=CanvasKey("s", track, window), rev=rev, text=text, steps=2)])
