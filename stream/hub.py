"""Streams and their tracks: where published text becomes windows, jobs and fanned-out results.

A *stream* has at most one publisher and any number of viewers; each connection subscribes to some
tracks. For every window the hub:

* sends the ``caption`` track's final at once (for text input the source is the caption);
* submits one engine job per target language that anyone on the stream subscribes to, so a
  translation is computed once per stream and language, never once per viewer; the job carries the
  track's previous committed windows as context;
* relays engine drafts to that track's viewers, and releases finals in window order per track (a
  final that overtakes an earlier window waits for it), exactly once each.

The hub runs on the event loop's thread but does no I/O itself: viewers are objects with a
``deliver`` method and jobs leave through the ``submit`` callback, so it is tested without a loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from engine.prompts import ContextEntry
from engine.runtime import WindowJob
from engine.types import CAPTION_TRACK, CanvasKey, Draft, Final, Segment, Window
from engine.windows import TextWindower
from stream.errors import ProtocolError
from stream.messages import DraftMsg, FinalMsg

CONTEXT_WINDOWS = 3


class Viewer(Protocol):
    """A connection as the hub sees it."""

    @property
    def tracks(self) -> frozenset[str]: ...

    def deliver(self, message: DraftMsg | FinalMsg) -> None: ...


@dataclass(eq=False)
class _WindowState:
    window: Window
    committed_ns: int
    open_tracks: set[str]


@dataclass(eq=False)
class _TrackState:
    context: deque[ContextEntry] = field(default_factory=lambda: deque(maxlen=CONTEXT_WINDOWS))
    order: deque[int] = field(default_factory=deque)  # windows submitted, in window order
    held: dict[int, FinalMsg] = field(default_factory=dict)  # finals waiting for earlier windows


@dataclass(eq=False)
class StreamState:
    name: str
    source_lang: str
    windower: TextWindower
    started_ns: int
    publisher: Viewer | None = None
    viewers: set[Viewer] = field(default_factory=set)
    windows: dict[int, _WindowState] = field(default_factory=dict)
    tracks: dict[str, _TrackState] = field(default_factory=dict)
    drain_waiters: list[Callable[[], None]] = field(default_factory=list)

    @property
    def pending_windows(self) -> int:
        return len(self.windows)

    def target_tracks(self) -> set[str]:
        return {t for viewer in self.viewers for t in viewer.tracks} - {CAPTION_TRACK}


class StreamHub:
    """See the module docstring."""

    def __init__(
        self,
        submit: Callable[[WindowJob], None],
        *,
        max_window_words: int = 32,
        idle_ms: int = 1500,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._submit = submit
        self._max_window_words = max_window_words
        self._idle_ms = idle_ms
        self._clock_ns = clock_ns
        self.streams: dict[str, StreamState] = {}

    # -- membership --------------------------------------------------------------------------------
    def join(self, name: str, viewer: Viewer, *, publisher: bool, source_lang: str) -> StreamState:
        stream = self.streams.get(name)
        if stream is None:
            stream = StreamState(
                name=name,
                source_lang=source_lang,
                windower=TextWindower(max_tokens=self._max_window_words, idle_ms=self._idle_ms),
                started_ns=self._clock_ns(),
            )
            self.streams[name] = stream
        if publisher:
            if stream.publisher is not None:
                raise ProtocolError("invalid_state", f"stream {name!r} already has a publisher")
            stream.publisher = viewer
            stream.source_lang = source_lang
        stream.viewers.add(viewer)
        return stream

    def leave(self, name: str, viewer: Viewer) -> None:
        stream = self.streams.get(name)
        if stream is None:
            return
        stream.viewers.discard(viewer)
        if stream.publisher is viewer:
            stream.publisher = None
            self._commit(stream, stream.windower.flush(self._now_ms(stream)))  # nothing published is lost
        self._forget_if_unused(stream)

    # -- input -------------------------------------------------------------------------------------
    def publish_text(self, name: str, text: str, t_ms: int | None) -> None:
        stream = self.streams[name]
        self._commit(stream, stream.windower.push(Segment(text=text, t_ms=t_ms), self._now_ms(stream)))

    def flush(self, name: str) -> None:
        stream = self.streams[name]
        self._commit(stream, stream.windower.flush(self._now_ms(stream)))

    def tick(self) -> None:
        """Close windows whose text has been idle too long; call a few times a second."""
        for stream in list(self.streams.values()):
            self._commit(stream, stream.windower.poll(self._now_ms(stream)))

    def when_drained(self, name: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every committed window of the stream has all its finals out."""
        stream = self.streams.get(name)
        if stream is None or not stream.windows:
            callback()
        else:
            stream.drain_waiters.append(callback)

    # -- engine output -----------------------------------------------------------------------------
    def on_engine_events(self, events: Iterable[Draft | Final]) -> None:
        for event in events:
            stream = self.streams.get(event.key.stream)
            if stream is None:
                continue
            window = stream.windows.get(event.key.window)
            if window is None or event.key.track not in window.open_tracks:
                continue  # its final is already out
            if event.key.window in stream.tracks[event.key.track].held:
                continue  # its final is already in, held for an earlier window: first final wins
            if isinstance(event, Draft):
                self._broadcast(stream, event.key.track, self._message(stream, window, event))
            else:
                self._on_final(stream, window, event)

    # -- internals ---------------------------------------------------------------------------------
    def _now_ms(self, stream: StreamState) -> int:
        return (self._clock_ns() - stream.started_ns) // 1_000_000

    def _commit(self, stream: StreamState, windows: Iterable[Window]) -> None:
        now_ns = self._clock_ns()
        for window in windows:
            targets = stream.target_tracks()
            state = _WindowState(window=window, committed_ns=now_ns, open_tracks=set(targets))
            stream.windows[window.index] = state
            caption = FinalMsg(
                stream=stream.name,
                track=CAPTION_TRACK,
                window=window.index,
                rev=0,
                text=window.source,
                t0_ms=window.t0_ms,
                t1_ms=window.t1_ms,
                latency_ms=0,
            )
            self._broadcast(stream, CAPTION_TRACK, caption)
            for track in sorted(targets):
                track_state = stream.tracks.setdefault(track, _TrackState())
                track_state.order.append(window.index)
                self._submit(
                    WindowJob(
                        key=CanvasKey(stream.name, track, window.index),
                        source=window.source,
                        context=tuple(track_state.context),
                        source_lang=stream.source_lang,
                        target_lang=track,
                        submitted_ns=now_ns,
                    )
                )
            if not targets:
                del stream.windows[window.index]
        self._check_drained(stream)

    def _on_final(self, stream: StreamState, window: _WindowState, final: Final) -> None:
        track = stream.tracks[final.key.track]
        message = self._message(stream, window, final)
        assert isinstance(message, FinalMsg)
        track.held[final.key.window] = message
        while track.order and track.order[0] in track.held:
            index = track.order.popleft()
            message = track.held.pop(index)
            released = stream.windows[index]
            released.open_tracks.discard(message.track)
            if message.error is None:
                track.context.append(ContextEntry(source=released.window.source, target=message.text))
            self._broadcast(stream, message.track, message)
            if not released.open_tracks:
                del stream.windows[index]
        self._check_drained(stream)

    def _message(
        self, stream: StreamState, window: _WindowState, event: Draft | Final
    ) -> DraftMsg | FinalMsg:
        latency_ms = (self._clock_ns() - window.committed_ns) // 1_000_000
        t0_ms, t1_ms = window.window.t0_ms, window.window.t1_ms
        key = event.key
        if isinstance(event, Draft):
            return DraftMsg(
                stream=stream.name, track=key.track, window=key.window, rev=event.rev, text=event.text,
                t0_ms=t0_ms, t1_ms=t1_ms, latency_ms=latency_ms,
            )  # fmt: skip
        return FinalMsg(
            stream=stream.name, track=key.track, window=key.window, rev=event.rev, text=event.text,
            t0_ms=t0_ms, t1_ms=t1_ms, latency_ms=latency_ms, error=event.error,
        )  # fmt: skip

    def _broadcast(self, stream: StreamState, track: str, message: DraftMsg | FinalMsg) -> None:
        for viewer in list(stream.viewers):
            if track in viewer.tracks:
                viewer.deliver(message)

    def _check_drained(self, stream: StreamState) -> None:
        if stream.windows:
            return
        waiters, stream.drain_waiters = stream.drain_waiters, []
        for callback in waiters:
            callback()
        self._forget_if_unused(stream)

    def _forget_if_unused(self, stream: StreamState) -> None:
        if not stream.viewers and not stream.windows and not stream.windower.pending_text:
            self.streams.pop(stream.name, None)
