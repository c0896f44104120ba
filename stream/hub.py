"""Streams and their tracks: where published text becomes windows, jobs and fanned-out results.

A *stream* has at most one publisher and any number of viewers; each connection subscribes to some
tracks. For every window the hub:

* sends the ``caption`` track's final at once (for text input the source is the caption);
* submits one engine job per target language that anyone on the stream subscribes to, so a
  translation is computed once per stream and language, never once per viewer; the job carries the
  track's previous committed windows as context;
* relays engine drafts to that track's viewers, and releases finals in window order per track (a
  final that overtakes an earlier window waits for it), exactly once each.

The open window is translated too (``open_window_text``, one path for speech's caption drafts and a
text publisher's pending text plus ``partial`` line; ``translate_open`` for pivot tracks, from the
English drafts of speech): each newer text is its caption draft and a *provisional* job per watched
track, whose drafts are that track's drafts of the open window; the window's final job then edits
the same canvas. Translated drafts pass the display rule
(:mod:`stream.draft_display`) and are numbered per window and track (the final's ``rev`` one more);
provisional canvases of tracks that lost their viewers before the window closed are cancelled.

Audio goes through the stream's transcribers (:mod:`stream.speech_input`); the hub treats their
closed windows exactly like text windows and numbers every stream's windows itself (one gapless
sequence). A track is made one of three ways (``stream.speech_tracks.route``): by a loaded translator
(a job per window, as above); for non-English speech, ``en`` by whisper's ``translate`` task; or by
*pivot*, a translator's job per window whose source is that window's ``en`` final. A window no route
reaches gets an error final on that track.

Every final goes out through the hub's ``FinalLog`` (``finals``, stream/final_log.py), which stamps it
with the stream's epoch and resume number and keeps it. A stream's epoch (drafts carry it too) begins
when the hub starts the stream and ends when the hub forgets it (nobody left, every final out).

A track that nobody subscribes to any more (its last viewer left, resumable sessions included) stops
costing model steps: after ``orphan_grace_ms`` (a reconnect's worth of time; ``tick`` checks it) its
windows still in the engine are cancelled (the ``cancel`` callback) and each gets an error final, so a
client that resumes later still finds exactly one final per window. Jobs are only ever made for the
tracks of connected viewers, so the MQTT bridge (an observer) never keeps a track alive.

When the publisher's input is over (``end``; or it left and none came back within that grace) and the
stream is drained, its other connections get one ``ended`` after its last final (a viewer joining
while it holds gets it at once; a new publisher clears it). The hub runs on the event loop's thread but
does no I/O: viewers have a ``deliver`` method and jobs leave through ``submit``, so it is tested
without a loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace

from engine.language_id import AUTO
from engine.prompts import ContextEntry
from engine.speech_translation import SpeechTranslation
from engine.transcriber import Transcriber
from engine.types import CAPTION_TRACK, CanvasKey, Draft, Final, Segment, Window, WindowJob
from engine.windows import TextWindower
from stream.draft_display import DraftDisplay
from stream.errors import ProtocolError
from stream.final_log import FinalLog
from stream.speech_input import AsrSubmit, SpeechInput
from stream.speech_tracks import Route, Serves, base_language, refuse_unidentified_text, route
from stream.stream_state import Delivery, OpenText, StreamState, TrackState, Viewer, WindowState
from stream.wire.messages import DraftMsg, Ended, FinalMsg, LanguageMsg

ORPHAN_GRACE_MS = 5000
ORPHANED = "cancelled: nobody is subscribed to this track any more"
ENDED_BY_END = "end"  # ``ended.reason``: the publisher sent ``end``
ENDED_BY_DISCONNECT = "disconnected"  # its connection went away and no publisher came back in time

Observer = Callable[[Delivery], None]  # every broadcast, ``ended`` and ``language`` included


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
        make_transcriber: Callable[[str], Transcriber] | None = None,
        finals: FinalLog | None = None,
        cancel: Callable[[Collection[CanvasKey]], None] | None = None,
        orphan_grace_ms: int = ORPHAN_GRACE_MS,
        display: DraftDisplay | None = None,
        serves: Serves | None = None,
        make_translation: Callable[[str], SpeechTranslation] | None = None,
    ) -> None:
        """``serves(source, target)``: whether a loaded translator serves a pair (None: every pair);
        ``make_translation(language)``: a stream's ``en`` track from speech (None: no such track)."""
        self.finals = finals if finals is not None else FinalLog()
        self.display = display if display is not None else DraftDisplay()
        self._submit = submit
        self.cancel = cancel  # withdraws windows' canvases from the engine
        self._orphan_grace_ns = orphan_grace_ms * 1_000_000
        self._serves = serves
        self._max_window_words = max_window_words
        self._idle_ms = idle_ms
        self._clock_ns = clock_ns
        self._observers: list[Observer] = []
        self.streams: dict[str, StreamState] = {}
        self._speech: SpeechInput | None = None
        if submit_asr is not None and make_transcriber is not None:
            self._speech = SpeechInput(self, submit_asr, make_transcriber, make_translation, clock_ns)

    def add_observer(self, observer: Observer) -> None:
        """Also hand ``observer`` everything sent on any stream and track, watched or not, in send order,
        on the hub's thread. The MQTT bridge uses this; it must not raise."""
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
                epoch=self.finals.begin(name),
            )
            self.streams[name] = stream
        if publisher:
            if stream.publisher is not None:
                raise ProtocolError("invalid_state", f"stream {name!r} already has a publisher")
            stream.publisher = viewer
            stream.source_lang = source_lang
            stream.input_over, stream.ended = None, None  # the stream goes on
            if base_language(source_lang) != AUTO:
                stream.speech.language = None  # it says which language it speaks
        if stream.speech.language is not None:
            viewer.deliver(stream.speech.language)
        if not publisher and stream.ended is not None:
            viewer.deliver(stream.ended)
        stream.viewers.add(viewer)
        for track in viewer.tracks:
            stream.unwatched_since_ns.pop(track, None)
        return stream

    def leave(self, name: str, viewer: Viewer) -> None:
        stream = self.streams.get(name)
        if stream is None:
            return
        stream.viewers.discard(viewer)
        if stream.publisher is viewer:
            stream.publisher = None
            if stream.input_over is None:
                stream.input_over, stream.input_over_ns = ENDED_BY_DISCONNECT, self._clock_ns()
            self.commit(stream, stream.windower.flush(self._now_ms(stream)))  # nothing published is lost
            self._end_audio(stream)
        watched = stream.target_tracks()
        for track in viewer.tracks - watched - {CAPTION_TRACK}:
            stream.unwatched_since_ns.setdefault(track, self._clock_ns())
        self._forget_if_unused(stream)

    # -- input -------------------------------------------------------------------------------------
    def publish_text(self, name: str, text: str, t_ms: int | None) -> None:
        stream = self.streams[name]
        refuse_unidentified_text(stream.spoken_lang)
        stream.partial = ""  # settled text replaces the provisional line
        self.commit(stream, stream.windower.push(Segment(text=text, t_ms=t_ms), self._now_ms(stream)))

    def publish_partial(self, name: str, text: str, t_ms: int | None) -> None:
        """The publisher's provisional line (``partial``): it replaces the previous one and is shown as
        the open window's caption draft and translated into drafts, never committed."""
        stream = self.streams[name]
        refuse_unidentified_text(stream.spoken_lang)
        stream.partial = text.strip()
        t_ms = self._now_ms(stream) if t_ms is None else t_ms
        open_text = " ".join(t for t in (stream.windower.pending_text, stream.partial) if t)
        if open_text:
            self.open_window_text(stream, open_text, t_ms, t_ms, self._clock_ns())

    def flush(self, name: str) -> None:
        stream = self.streams[name]
        self.commit(stream, stream.windower.flush(self._now_ms(stream)))

    @property
    def accepts_audio(self) -> bool:
        return self._speech is not None

    def publish_audio(self, name: str, pcm16le: bytes) -> None:
        """Feed a publisher's audio (PCM16LE, 16 kHz mono) into the stream's transcriber."""
        if self._speech is None:
            raise ProtocolError("unsupported", "this server has no speech recognition")
        self._speech.publish(self.streams[name], pcm16le)

    def end_input(self, name: str) -> None:
        """The publisher has no more input: close open text and finish transcribing audio."""
        stream = self.streams[name]
        stream.input_over, stream.input_over_ns = ENDED_BY_END, self._clock_ns()
        self.flush(name)
        self._end_audio(stream)

    def tick(self) -> None:
        """Close windows whose text has been idle too long, cancel orphaned tracks' windows, tell viewers
        a publisher is not coming back; call a few times a second."""
        for stream in list(self.streams.values()):
            self.commit(stream, stream.windower.poll(self._now_ms(stream)))
            self._cancel_orphans(stream)
            if self.streams.get(stream.name) is stream:
                self._announce_end(stream)
                self._forget_if_unused(stream)

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
                    self.settle(stream, window, Final.failed(CanvasKey(stream.name, name, index), reason))
                    sent += 1
        return sent

    def _cancel_orphans(self, stream: StreamState) -> None:
        now = self._clock_ns()
        due = [t for t, since in stream.unwatched_since_ns.items() if now - since >= self._orphan_grace_ns]
        if due:
            self._close_open_window(stream, keep=set(stream.open_texts) - set(due))
        for name in sorted(due):
            del stream.unwatched_since_ns[name]
            track = stream.tracks.get(name)
            if track is None:
                continue
            keys = [
                CanvasKey(stream.name, name, index)
                for index in track.order
                if index not in track.held and name in stream.windows[index].open_tracks
            ]
            if not keys:
                continue
            if self.cancel is not None:
                self.cancel(keys)
            for key in keys:
                self.settle(stream, stream.windows[key.window], Final.failed(key, ORPHANED))
            if stream.name not in self.streams:
                return  # the last final let the hub forget the stream

    # -- engine output -----------------------------------------------------------------------------
    def on_engine_events(self, events: Iterable[Draft | Final]) -> None:
        for event in events:
            stream = self.streams.get(event.key.stream)
            if stream is None:
                continue
            key = event.key
            window = stream.windows.get(key.window)
            if window is None and isinstance(event, Draft) and key.window == stream.next_window:
                if (opened := stream.open_texts.get(key.track)) is not None:
                    self._draft(stream, key.track, key.window, event.text, opened)
                continue
            if window is None or key.track not in window.open_tracks:
                continue  # its final is already out
            if key.window in stream.tracks[key.track].held:
                continue  # its final is already in, held for an earlier window: first final wins
            if isinstance(event, Draft):
                self._draft(stream, key.track, key.window, event.text, window)
            else:
                self.settle(stream, window, event)

    # -- speech (stream/speech_input.py) -------------------------------------------------------------
    def _end_audio(self, stream: StreamState) -> None:
        if self._speech is not None:
            self._speech.end(stream)

    def route(self, stream: StreamState, track: str, *, speech: bool) -> Route | None:
        serves = self._serves or (lambda source, target: True)
        return route(serves, stream.spoken_lang, track, speech=speech)

    def open_window_text(self, stream: StreamState, text: str, t0_ms: int, t1_ms: int, since_ns: int) -> None:
        """A newer text of the open window: its caption draft (``latency_ms`` from ``since_ns``, when
        its last word was spoken or typed), and a provisional job per watched track (module docstring)."""
        now_ns = self._clock_ns()
        draft = DraftMsg(
            stream=stream.name, track=CAPTION_TRACK, window=stream.next_window, rev=stream.caption_draft_rev,
            text=text, t0_ms=t0_ms, t1_ms=t1_ms, latency_ms=max(0, (now_ns - since_ns) // 1_000_000),
            epoch=stream.epoch,
        )  # fmt: skip
        stream.caption_draft_rev += 1
        self._broadcast(stream, CAPTION_TRACK, draft)
        targets = [t for t in stream.target_tracks() if self.route(stream, t, speech=False) is Route.NATIVE]
        self.translate_open(stream, targets, OpenText(text, t0_ms, t1_ms, since_ns), stream.spoken_lang)

    def translate_open(self, stream: StreamState, tracks: Iterable[str], text: OpenText, lang: str) -> None:
        """Provisional jobs of the open window's newer ``text`` (in language ``lang``) for ``tracks``."""
        if not self.display.translates(text.text):
            return
        for track in sorted(tracks):
            stream.open_texts[track] = text
            stream.tracks.setdefault(track, TrackState())
            self.submit_job(stream, track, stream.next_window, text.text, lang, provisional=True)

    # -- internals ---------------------------------------------------------------------------------
    def _now_ms(self, stream: StreamState) -> int:
        return (self._clock_ns() - stream.started_ns) // 1_000_000

    def commit(
        self,
        stream: StreamState,
        windows: Iterable[Window],
        spoken_ns: list[int] | None = None,
        *,
        speech: bool = False,
    ) -> None:
        """Number and send closed windows' captions and make their tracks (``speech``: the windows were
        spoken, so whisper's ``en`` track and its pivots may make tracks: the caller hands them over)."""
        now_ns = self._clock_ns()
        english = speech and stream.speech.taking_windows(stream.transcriber) is not None
        for position, produced in enumerate(windows):
            window = replace(produced, index=stream.next_window)
            targets = stream.target_tracks()
            self._close_open_window(stream, keep=targets)
            stream.next_window += 1
            stream.caption_draft_rev = 0
            committed_ns = min(now_ns, spoken_ns[position]) if spoken_ns else now_ns
            routes = {t: self.route(stream, t, speech=speech) for t in targets}
            served = {t: r for t, r in routes.items() if r is Route.NATIVE or (r is not None and english)}
            state = WindowState(
                window=window, committed_ns=committed_ns, open_tracks=set(targets), routes=served
            )
            stream.windows[window.index] = state
            for name, track_state in stream.tracks.items():
                if name not in targets:  # an en draft of it, from a track that since lost its viewers
                    track_state.forget_drafts(window.index)
            caption = FinalMsg(
                stream=stream.name, track=CAPTION_TRACK, window=window.index, rev=0, text=window.source,
                t0_ms=window.t0_ms, t1_ms=window.t1_ms, latency_ms=(now_ns - committed_ns) // 1_000_000,
            )  # fmt: skip
            self._broadcast(stream, CAPTION_TRACK, caption)
            for track in sorted(targets):
                stream.tracks.setdefault(track, TrackState()).order.append(window.index)
                if served.get(track) is Route.NATIVE:
                    self.submit_job(stream, track, window.index, window.source, stream.spoken_lang)
            for track in sorted(set(targets) - set(served)):
                kind = "speech" if speech else "text"
                error = f"unsupported: nothing on this server makes {track} from {stream.spoken_lang} {kind}"
                key = CanvasKey(stream.name, track, window.index)
                self.settle(stream, state, Final.failed(key, error))
            if not targets:
                del stream.windows[window.index]
        self.check_drained(stream)

    def submit_job(
        self,
        stream: StreamState,
        track: str,
        index: int,
        source: str,
        source_lang: str,
        *,
        provisional: bool = False,
    ) -> None:
        """A translator's job for window ``index`` of ``track``, with the track's context."""
        self._submit(
            WindowJob(
                key=CanvasKey(stream.name, track, index),
                source=source,
                context=tuple(stream.tracks[track].context),
                source_lang=source_lang,
                target_lang=track,
                submitted_ns=self._clock_ns(),
                provisional=provisional,
            )
        )

    def _close_open_window(self, stream: StreamState, *, keep: Collection[str]) -> None:
        """The open window is closing (committed, or its stream is going): the provisional canvases of
        tracks that will not get its final job (``keep``: those that will) are cancelled."""
        dropped = sorted(set(stream.open_texts) - set(keep))
        if dropped and self.cancel is not None:
            self.cancel([CanvasKey(stream.name, track, stream.next_window) for track in dropped])
        for track in dropped:
            if track in stream.tracks:
                stream.tracks[track].forget_drafts(stream.next_window)
        stream.open_texts = {}

    def _draft(
        self, stream: StreamState, track: str, index: int, text: str, window: WindowState | OpenText
    ) -> None:
        """An engine draft of a translation track, through the display rule; numbered per window."""
        closed = not isinstance(window, OpenText)
        text_shown = stream.tracks[track].to_show(self.display, index, text, closed=closed)
        if text_shown is None:
            return
        if isinstance(window, OpenText):
            t0_ms, t1_ms, since_ns = window.t0_ms, window.t1_ms, window.made_ns
        else:
            t0_ms, t1_ms, since_ns = window.window.t0_ms, window.window.t1_ms, window.committed_ns
        self.send_draft(stream, track, index, text_shown, t0_ms, t1_ms, since_ns)

    def send_draft(
        self, stream: StreamState, track: str, index: int, text: str, t0_ms: int, t1_ms: int, since_ns: int
    ) -> None:
        """A draft of a translation track, numbered per window (``latency_ms`` from ``since_ns``)."""
        rev = stream.tracks.setdefault(track, TrackState()).next_rev(index)
        draft = DraftMsg(
            stream=stream.name, track=track, window=index, rev=rev, text=text, t0_ms=t0_ms,
            t1_ms=t1_ms, latency_ms=max(0, (self._clock_ns() - since_ns) // 1_000_000), epoch=stream.epoch,
        )  # fmt: skip
        self._broadcast(stream, track, draft)

    def settle(self, stream: StreamState, window: WindowState, final: Final) -> None:
        track = stream.tracks[final.key.track]
        final = replace(final, rev=track.forget_drafts(final.key.window))
        message = self._message(stream, window, final)
        track.held[final.key.window] = message
        while track.order and track.order[0] in track.held:
            index = track.order.popleft()
            message = track.held.pop(index)
            released = stream.windows[index]
            released.open_tracks.discard(message.track)
            if message.error is None:
                source = released.sources.get(message.track, released.window.source)
                track.context.append(ContextEntry(source=source, target=message.text))
            self._broadcast(stream, message.track, message)
            if not released.open_tracks:
                del stream.windows[index]
        self.check_drained(stream)

    def _message(self, stream: StreamState, window: WindowState, event: Final) -> FinalMsg:
        latency_ms = (self._clock_ns() - window.committed_ns) // 1_000_000
        t0_ms, t1_ms = window.window.t0_ms, window.window.t1_ms
        key = event.key
        return FinalMsg(
            stream=stream.name, track=key.track, window=key.window, rev=event.rev, text=event.text,
            t0_ms=t0_ms, t1_ms=t1_ms, latency_ms=latency_ms, error=event.error,
        )  # fmt: skip

    def announce(self, stream: StreamState, language: LanguageMsg) -> None:
        """The language identified in the stream's speech: to observers and every connection."""
        self._send(stream, language, lambda viewer: True)

    def _broadcast(self, stream: StreamState, track: str, message: DraftMsg | FinalMsg) -> None:
        if isinstance(message, FinalMsg):
            message = self.finals.append(message)  # stamped with its epoch and resume number
        self._send(stream, message, lambda viewer: track in viewer.tracks)

    def _send(self, stream: StreamState, message: Delivery, to: Callable[[Viewer], bool]) -> None:
        """``message`` to every observer and to the stream's connections ``to`` picks."""
        for observer in self._observers:
            observer(message)
        for viewer in list(stream.viewers):
            if to(viewer):
                viewer.deliver(message)

    def check_drained(self, stream: StreamState) -> None:
        if not stream.drained:
            return
        waiters, stream.drain_waiters = stream.drain_waiters, []
        for callback in waiters:
            callback()
        self._announce_end(stream)
        self._forget_if_unused(stream)

    def _may_resume(self, stream: StreamState) -> bool:
        """Its publisher's connection went away less than the grace ago: it may still resume."""
        recent = self._clock_ns() - stream.input_over_ns < self._orphan_grace_ns
        return stream.input_over == ENDED_BY_DISCONNECT and recent

    def _announce_end(self, stream: StreamState) -> None:
        """``ended`` to all but the publisher once its input is over (a disconnect: past the grace)."""
        reason = stream.input_over
        if reason is None or stream.ended is not None or not stream.drained:
            return
        if self._may_resume(stream):
            return  # it may come back (resume); tick() looks again
        ended = Ended(stream=stream.name, reason=reason, windows=stream.next_window, epoch=stream.epoch)
        stream.ended = ended
        self._send(stream, ended, lambda viewer: viewer is not stream.publisher)

    def _forget_if_unused(self, stream: StreamState) -> None:
        """Forget a stream nobody watches once its windows are out, but not while its publisher may
        still resume (a dropped connection, within the grace): it goes on where it stopped, windows
        numbered on, not as a new stream from window 0."""
        unused = not stream.viewers and stream.drained and not stream.windower.pending_text
        if unused and self._may_resume(stream):
            return
        if unused and self.streams.pop(stream.name, None) is not None:
            self._close_open_window(stream, keep=())
            self.finals.end(stream.name)
