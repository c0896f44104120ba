"""The state the hub keeps per stream, per window and per track (stream/hub.py owns what happens to it).

A stream's *windows* are the committed windows whose translations are not all out yet; each track
keeps the windows it was asked for in order, the finals that arrived ahead of an earlier window's,
the drafts it sent per window, and the last few committed windows as context for the next job. The
open window (the one being spoken or typed, not yet committed) has its newest text and the tracks
translating it. A stream also remembers why its
publisher's input is over, if it is, and the ``ended`` message its viewers were sent for that, and its
speech tracks (``stream.speech_tracks``: the ``en`` track from whisper, the language identified for
``auto``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from engine.language_id import AUTO
from engine.prompts import ContextEntry
from engine.transcriber import Transcriber
from engine.types import CAPTION_TRACK, Window
from engine.windows import TextWindower
from stream.draft_display import DraftDisplay, shown
from stream.speech_tracks import Route, SpeechState, base_language
from stream.wire.messages import DraftMsg, Ended, FinalMsg, LanguageMsg

CONTEXT_WINDOWS = 3

Delivery: TypeAlias = DraftMsg | FinalMsg | Ended | LanguageMsg


class Viewer(Protocol):
    """A connection as the hub sees it."""

    @property
    def tracks(self) -> frozenset[str]: ...

    def deliver(self, message: Delivery) -> None: ...


@dataclass(eq=False)
class WindowState:
    window: Window
    committed_ns: int
    open_tracks: set[str]
    routes: dict[str, Route] = field(default_factory=dict)  # how each track is made (none: refused)
    sources: dict[str, str] = field(default_factory=dict)  # a pivot track's source: the en final


@dataclass(eq=False)
class WindowDrafts:
    """A track's drafts of one window so far: how many were sent (the next ``rev``), the text last
    shown, and the engine's last draft (what its next one is compared with)."""

    sent: int = 0
    on_screen: str | None = None
    engine_text: str | None = None


@dataclass(eq=False)
class TrackState:
    context: deque[ContextEntry] = field(default_factory=lambda: deque(maxlen=CONTEXT_WINDOWS))
    order: deque[int] = field(default_factory=deque)  # windows submitted, in window order
    held: dict[int, FinalMsg] = field(default_factory=dict)  # finals waiting for earlier windows
    drafts: dict[int, WindowDrafts] = field(default_factory=dict)  # windows with drafts, until their final

    def to_show(self, display: DraftDisplay, window: int, text: str, *, closed: bool) -> str | None:
        """What to show of an engine draft of ``window`` under the display rule (None: nothing)."""
        drafts = self.drafts.setdefault(window, WindowDrafts())
        previous, drafts.engine_text = drafts.engine_text, text
        text_shown = shown(display, drafts.on_screen, text, previous, source_closed=closed)
        if text_shown is not None:
            drafts.on_screen = text_shown
        return text_shown

    def next_rev(self, window: int) -> int:
        """The ``rev`` of the window's next draft sent, counted."""
        drafts = self.drafts.setdefault(window, WindowDrafts())
        drafts.sent += 1
        return drafts.sent - 1

    def forget_drafts(self, window: int) -> int:
        """Forget the window's drafts (its final is here, or it will get none); how many were sent."""
        drafts = self.drafts.pop(window, None)
        return 0 if drafts is None else drafts.sent


@dataclass(frozen=True, slots=True)
class OpenText:
    """The newest text of the stream's open window (a caption draft, or a publisher's pending text
    and ``partial`` line), as translated into drafts; ``made_ns``: when it was made."""

    text: str
    t0_ms: int
    t1_ms: int
    made_ns: int


@dataclass(eq=False)
class StreamState:
    name: str
    source_lang: str
    windower: TextWindower
    started_ns: int
    epoch: str  # this life of the stream name (FinalLog.begin)
    publisher: Viewer | None = None
    viewers: set[Viewer] = field(default_factory=set)
    windows: dict[int, WindowState] = field(default_factory=dict)
    tracks: dict[str, TrackState] = field(default_factory=dict)
    drain_waiters: list[Callable[[], None]] = field(default_factory=list)
    next_window: int = 0
    transcriber: Transcriber | None = None
    audio_started_ns: int = 0  # wall clock of the stream's first audio sample
    held_audio: bytearray = field(default_factory=bytearray)  # a new publisher's, while the old audio ends
    caption_draft_rev: int = 0
    partial: str = ""  # the publisher's ``partial`` line, until its next ``text``
    # the tracks translating the open window, each with the newest text it translates (the caption's,
    # or for a pivot track the English)
    open_texts: dict[str, OpenText] = field(default_factory=dict)
    unwatched_since_ns: dict[str, int] = field(default_factory=dict)  # tracks that lost their last viewer
    # why the publisher's input is over ("end", "disconnected"; None while one publishes, or none ever
    # did), since when, and the ``ended`` sent for it (also to viewers who join while it holds)
    input_over: str | None = None
    input_over_ns: int = 0
    ended: Ended | None = None
    speech: SpeechState = field(default_factory=SpeechState)

    @property
    def spoken_lang(self) -> str:
        """The language the stream speaks: its ``source_lang``, or for ``auto`` the language whisper
        identified (``auto`` until then)."""
        language = self.speech.language
        if base_language(self.source_lang) == AUTO and language is not None:
            return language.language
        return self.source_lang

    @property
    def pending_windows(self) -> int:
        return len(self.windows)

    @property
    def drained(self) -> bool:
        transcribing = self.transcriber is not None and not self.transcriber.finished
        return not self.windows and not transcribing

    def spoken_ns(self, audio_ms: int) -> int:
        """Wall-clock time at which the stream's audio reached ``audio_ms`` (audio arrives in real time)."""
        return self.audio_started_ns + audio_ms * 1_000_000

    def target_tracks(self) -> set[str]:
        return {t for viewer in self.viewers for t in viewer.tracks} - {CAPTION_TRACK}
