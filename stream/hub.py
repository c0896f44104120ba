"""Streams and their tracks: where published text becomes windows, jobs and fanned-out results.

A *stream* has at most one publisher and any number of viewers; each connection subscribes to some
tracks. For every window the hub:

* sends the ``caption`` track's final at once (for text input the source is the caption);
* submits one engine job per target language that anyone on the stream subscribes to, so a
  translation is computed once per stream and language, never once per viewer; the job carries the
  track's previous committed windows as context;
* relays engine drafts to that track's viewers, and releases finals in window order per track (a
  final that overtakes an earlier window waits for it), exactly once each.

Audio goes through a ``LiveTranscriber`` per stream: the hub hands its recognition requests to the
``submit_asr`` callback (whose result callback must run on the hub's thread), relays its caption
drafts, and treats its closed windows exactly like text windows. The hub numbers every stream's
windows itself, so text and audio windows share one gapless sequence.

The hub runs on the event loop's thread but does no I/O itself: viewers are objects with a
``deliver`` method and jobs leave through the ``submit`` callback, so it is tested without a loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from engine.asr import AsrRequest
from engine.prompts import ContextEntry
from engine.runtime import WindowJob
from engine.transcriber import CaptionDraft, LiveTranscriber
from engine.types import CAPTION_TRACK, CanvasKey, Draft, Final, Segment, Window, Word
from engine.windows import TextWindower
from stream.errors import ProtocolError
from stream.messages import DraftMsg, FinalMsg

CONTEXT_WINDOWS = 3

AsrSubmit = Callable[[AsrRequest, Callable[[list[Word] | Exception], None]], None]
Observer = Callable[[DraftMsg | FinalMsg], None]


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
    next_window: int = 0
    transcriber: LiveTranscriber | None = None
    audio_started_ns: int = 0  # wall clock of the stream's first audio sample
    caption_draft_rev: int = 0

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


class StreamHub:
    """See the module docstring."""

    def __init__(
        self,
        submit: Callable[[WindowJob], None],
        *,
        max_window_words: int = 32,
        idle_ms: int = 1500,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        submit_asr: AsrSubmit | None = None,
        make_transcriber: Callable[[str], LiveTranscriber] | None = None,
    ) -> None:
        self._submit = submit
        self._submit_asr = submit_asr
        self._make_transcriber = make_transcriber
        self._max_window_words = max_window_words
        self._idle_ms = idle_ms
        self._clock_ns = clock_ns
        self._observers: list[Observer] = []
        self.streams: dict[str, StreamState] = {}

    def add_observer(self, observer: Observer) -> None:
        """Also hand ``observer`` every draft and final sent on any stream and track (whether or not a
        viewer subscribes to it), in send order, on the hub's thread. The MQTT bridge uses this; it must
        not raise."""
        self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        self._observers.remove(observer)

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
            self._end_audio(stream)
        self._forget_if_unused(stream)

    # -- input -------------------------------------------------------------------------------------
    def publish_text(self, name: str, text: str, t_ms: int | None) -> None:
        stream = self.streams[name]
        self._commit(stream, stream.windower.push(Segment(text=text, t_ms=t_ms), self._now_ms(stream)))

    def flush(self, name: str) -> None:
        stream = self.streams[name]
        self._commit(stream, stream.windower.flush(self._now_ms(stream)))

    @property
    def accepts_audio(self) -> bool:
        return self._submit_asr is not None and self._make_transcriber is not None

    def publish_audio(self, name: str, pcm16le: bytes) -> None:
        """Feed a publisher's audio (PCM16LE, 16 kHz mono) into the stream's transcriber."""
        stream = self.streams[name]
        if stream.transcriber is None or stream.transcriber.finished:
            if self._make_transcriber is None:
                raise ProtocolError("unsupported", "this server has no speech recognition")
            stream.transcriber = self._make_transcriber(stream.source_lang)
            stream.audio_started_ns = self._clock_ns()
        stream.transcriber.insert_audio(pcm16le)
        self._pump_audio(stream)

    def end_input(self, name: str) -> None:
        """The publisher has no more input: close open text and finish transcribing audio."""
        stream = self.streams[name]
        self.flush(name)
        self._end_audio(stream)

    def tick(self) -> None:
        """Close windows whose text has been idle too long; call a few times a second."""
        for stream in list(self.streams.values()):
            self._commit(stream, stream.windower.poll(self._now_ms(stream)))

    def when_drained(self, name: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every committed window of the stream has all its finals out."""
        stream = self.streams.get(name)
        if stream is None or stream.drained:
            callback()
        else:
            stream.drain_waiters.append(callback)

    def abandon(self, reason: str) -> int:
        """Give every window still waiting for a translation an error final now (``reason``), in window
        order, so that every viewer still gets exactly one final per window (graceful shutdown past
        its deadline); engine results that come later are ignored. The number of finals sent."""
        sent = 0
        for stream in list(self.streams.values()):
            for name, track in sorted(stream.tracks.items()):
                for index in list(track.order):
                    window = stream.windows.get(index)
                    if window is None or name not in window.open_tracks or index in track.held:
                        continue
                    key = CanvasKey(stream.name, name, index)
                    self._on_final(
                        stream, window, Final(key=key, rev=0, text="", steps=0, tokens=0, error=reason)
                    )
                    sent += 1
        return sent

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

    # -- audio ---------------------------------------------------------------------------------------
    def _end_audio(self, stream: StreamState) -> None:
        if stream.transcriber is not None and not stream.transcriber.finished:
            stream.transcriber.end()
            self._pump_audio(stream)

    def _pump_audio(self, stream: StreamState) -> None:
        transcriber = stream.transcriber
        assert transcriber is not None
        assert self._submit_asr is not None
        request, events = transcriber.step()
        self._on_caption_events(stream, events)
        if request is None:
            self._check_drained(stream)
            return

        def done(result: list[Word] | Exception) -> None:
            if isinstance(result, Exception):
                self._on_caption_events(stream, transcriber.on_error(request))
            else:
                self._on_caption_events(stream, transcriber.on_result(request, result))
            if stream.transcriber is transcriber:
                self._pump_audio(stream)

        self._submit_asr(request, done)

    def _on_caption_events(self, stream: StreamState, events: list[CaptionDraft | Window]) -> None:
        """In order: a draft that follows a closed window belongs to the window after it."""
        for event in events:
            if isinstance(event, Window):
                # measured from when the window's last word was spoken
                self._commit(stream, [event], spoken_ns=[stream.spoken_ns(event.t1_ms)])
                continue
            spoken_ns = stream.spoken_ns(event.t1_ms)
            draft = DraftMsg(
                stream=stream.name, track=CAPTION_TRACK, window=stream.next_window,
                rev=stream.caption_draft_rev, text=event.text, t0_ms=event.t0_ms, t1_ms=event.t1_ms,
                latency_ms=max(0, (self._clock_ns() - spoken_ns) // 1_000_000),
            )  # fmt: skip
            stream.caption_draft_rev += 1
            self._broadcast(stream, CAPTION_TRACK, draft)

    # -- internals ---------------------------------------------------------------------------------
    def _now_ms(self, stream: StreamState) -> int:
        return (self._clock_ns() - stream.started_ns) // 1_000_000

    def _commit(
        self, stream: StreamState, windows: Iterable[Window], spoken_ns: list[int] | None = None
    ) -> None:
        now_ns = self._clock_ns()
        for position, produced in enumerate(windows):
            window = replace(produced, index=stream.next_window)
            stream.next_window += 1
            stream.caption_draft_rev = 0
            committed_ns = min(now_ns, spoken_ns[position]) if spoken_ns else now_ns
            targets = stream.target_tracks()
            state = _WindowState(window=window, committed_ns=committed_ns, open_tracks=set(targets))
            stream.windows[window.index] = state
            caption = FinalMsg(
                stream=stream.name,
                track=CAPTION_TRACK,
                window=window.index,
                rev=0,
                text=window.source,
                t0_ms=window.t0_ms,
                t1_ms=window.t1_ms,
                latency_ms=(now_ns - committed_ns) // 1_000_000,
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
        for observer in self._observers:
            observer(message)
        for viewer in list(stream.viewers):
            if track in viewer.tracks:
                viewer.deliver(message)

    def _check_drained(self, stream: StreamState) -> None:
        if not stream.drained:
            return
        waiters, stream.drain_waiters = stream.drain_waiters, []
        for callback in waiters:
            callback()
        self._forget_if_unused(stream)

    def _forget_if_unused(self, stream: StreamState) -> None:
        if not stream.viewers and stream.drained and not stream.windower.pending_text:
            self.streams.pop(stream.name, None)
