"""Speech on a stream, for the hub: its caption transcriber and its ``en`` track, fed the publisher's
audio and driven one recognition request at a time.

The hub (:mod:`stream.hub`) owns windows, jobs and what viewers get; this module owns the recognisers'
side. Audio goes into the stream's ``Transcriber``; its recognition requests go to the ``submit_asr``
callback (whose result callback must run on the hub's thread), and what comes back goes to the hub:
caption drafts as the open window's newer text (:meth:`HubSide.open_window_text`), closed windows to
be numbered and committed (:meth:`HubSide.commit`). For non-English speech, while a watched track needs
it (``stream.speech_tracks.route``), the stream's ``en`` track is a second transcriber on whisper's
``translate`` task (``SpeechTranslation``), fed the same audio and handed each caption window as it
closes; its windows are the ``en`` finals of those caption windows and the sources of the tracks that
pivot through English, its drafts ``en`` drafts of the oldest window still waiting for its English.
For ``source_lang`` ``auto`` the language whisper identified is announced to every connection once
(``language``). A publisher that comes back while its previous connection's audio is still being
finished has its audio held, then transcribed afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from typing import Protocol

from engine.asr import AsrRequest
from engine.caption_windows import CaptionDraft
from engine.speech_translation import SpeechTranslation
from engine.transcriber import Transcriber
from engine.types import CanvasKey, Final, Window, Word
from stream.draft_display import DraftDisplay
from stream.speech_tracks import ENGLISH, Route, needs_english
from stream.stream_state import OpenText, StreamState, WindowState
from stream.wire.messages import LanguageMsg

AsrSubmit = Callable[[AsrRequest, Callable[[list[Word] | Exception], None]], None]


class HubSide(Protocol):
    """What speech hands to the hub (:class:`stream.hub.StreamHub`)."""

    @property
    def streams(self) -> dict[str, StreamState]: ...

    @property
    def display(self) -> DraftDisplay: ...

    def commit(
        self,
        stream: StreamState,
        windows: Iterable[Window],
        spoken_ns: list[int] | None = None,
        *,
        speech: bool = False,
    ) -> None: ...

    def open_window_text(
        self, stream: StreamState, text: str, t0_ms: int, t1_ms: int, since_ns: int
    ) -> None: ...

    def route(self, stream: StreamState, track: str, *, speech: bool) -> Route | None: ...

    def translate_open(
        self, stream: StreamState, tracks: Iterable[str], text: OpenText, lang: str
    ) -> None: ...

    @property
    def cancel(self) -> Callable[[Collection[CanvasKey]], None] | None: ...

    def send_draft(
        self, stream: StreamState, track: str, index: int, text: str, t0_ms: int, t1_ms: int, since_ns: int
    ) -> None: ...

    def submit_job(
        self,
        stream: StreamState,
        track: str,
        index: int,
        source: str,
        source_lang: str,
        *,
        provisional: bool = False,
    ) -> None: ...

    def settle(self, stream: StreamState, window: WindowState, final: Final) -> None: ...

    def announce(self, stream: StreamState, language: LanguageMsg) -> None: ...

    def check_drained(self, stream: StreamState) -> None: ...


class SpeechInput:
    """See the module docstring."""

    def __init__(
        self,
        hub: HubSide,
        submit_asr: AsrSubmit,
        make_transcriber: Callable[[str], Transcriber],
        make_translation: Callable[[str], SpeechTranslation] | None,
        clock_ns: Callable[[], int],
    ) -> None:
        self.hub = hub
        self._submit_asr = submit_asr
        self._make_transcriber = make_transcriber
        self._make_translation = make_translation
        self._clock_ns = clock_ns

    def publish(self, stream: StreamState, pcm16le: bytes) -> None:
        """Feed a publisher's audio (PCM16LE, 16 kHz mono) into the stream's transcriber."""
        if stream.transcriber is not None and stream.transcriber.ending and not stream.transcriber.finished:
            # a publisher that came back (resume) while its previous connection's audio is still being
            # finalised: its audio waits, then starts a new transcription (see _pump)
            stream.held_audio += pcm16le
            return
        if stream.transcriber is None or stream.transcriber.finished:
            # a stream whose language was identified keeps it (a resuming publisher)
            stream.transcriber = self._make_transcriber(stream.spoken_lang)
            stream.audio_started_ns = self._clock_ns()
            stream.speech.restart()
        self._ensure_english(stream)
        stream.transcriber.insert_audio(pcm16le)
        stream.speech.audio_bytes += len(pcm16le)
        translation = stream.speech.following(stream.transcriber)
        if translation is not None:
            translation.insert_audio(pcm16le)
        self._pump(stream)
        if translation is not None:
            self._pump_english(stream, translation)

    def end(self, stream: StreamState) -> None:
        """The stream's audio is over: its transcribers finish what they heard."""
        if stream.transcriber is not None and not stream.transcriber.finished:
            translation = stream.speech.following(stream.transcriber)
            stream.transcriber.end()
            if translation is not None:
                translation.end()
            self._pump(stream)
            if translation is not None:
                self._pump_english(stream, translation)

    def _pump(self, stream: StreamState) -> None:
        transcriber = stream.transcriber
        assert transcriber is not None
        transcriber.set_caption_only(not stream.target_tracks())
        request, events = transcriber.step()
        self._on_caption_events(stream, events)
        self._after_captions(stream, transcriber)
        if request is None:
            if transcriber.finished and stream.held_audio:
                held, stream.held_audio = bytes(stream.held_audio), bytearray()
                self.publish(stream, held)
                return
            self.hub.check_drained(stream)
            return

        def done(result: list[Word] | Exception) -> None:
            if isinstance(result, Exception):
                self._on_caption_events(stream, transcriber.on_error(request))
            else:
                self._on_caption_events(stream, transcriber.on_result(request, result))
            self._after_captions(stream, transcriber)
            if stream.transcriber is transcriber:
                self._pump(stream)

        self._submit_asr(request, done)

    def _on_caption_events(self, stream: StreamState, events: list[CaptionDraft | Window]) -> None:
        """In order: a draft that follows a closed window belongs to the window after it."""
        if events:
            self._ensure_english(stream)  # before a window closes: it is handed over
        for event in events:
            if isinstance(event, Window):
                index = stream.next_window
                # measured from when the window's last word was spoken
                self.hub.commit(stream, [event], spoken_ns=[stream.spoken_ns(event.t1_ms)], speech=True)
                translation = stream.speech.taking_windows(stream.transcriber)
                if translation is not None:
                    closed = translation.caption_closed(replace(event, index=index))
                    self._on_english_events(stream, translation, closed)
                continue
            spoken_ns = stream.spoken_ns(event.t1_ms)
            self.hub.open_window_text(stream, event.text, event.t0_ms, event.t1_ms, spoken_ns)

    # -- the en track (stream/speech_tracks.py) ---------------------------------------------------
    def _after_captions(self, stream: StreamState, transcriber: Transcriber) -> None:
        """After the caption transcriber moved: announce an identified language; once it has finished,
        tell its ``en`` track no more caption windows come."""
        announced = stream.speech.identified(transcriber, stream.name, stream.epoch)
        if announced is not None and stream.transcriber is transcriber:
            self.hub.announce(stream, announced)
            self._ensure_english(stream)
        translation = stream.speech.taking_windows(transcriber)
        if translation is not None and transcriber.finished:
            stream.speech.captions_finished = True
            self._on_english_events(stream, translation, translation.captions_finished())

    def _ensure_english(self, stream: StreamState) -> None:
        """Start the stream's ``en`` track when a watched track needs it, end it once none does."""
        if self._make_translation is None or stream.transcriber is None:
            return
        needed = needs_english(self.hub.route(stream, t, speech=True) for t in stream.target_tracks())
        started = stream.speech.ensure(self._make_translation, stream.transcriber, stream.spoken_lang, needed)
        if started is not None:
            self._pump_english(stream, started)

    def _pump_english(self, stream: StreamState, translation: SpeechTranslation) -> None:
        """Drive an ``en`` track like the caption transcriber (one request in flight)."""
        assert self._submit_asr is not None
        request, events = translation.step()
        self._on_english_events(stream, translation, events)
        if request is None:
            return

        def done(result: list[Word] | Exception) -> None:
            if isinstance(result, Exception):
                events = translation.on_error(request)
            else:
                events = translation.on_result(request, result)
            self._on_english_events(stream, translation, events)
            if self.hub.streams.get(stream.name) is stream:
                self._pump_english(stream, translation)

        self._submit_asr(request, done)

    def _on_english_events(
        self, stream: StreamState, translation: SpeechTranslation, events: list[CaptionDraft | Window]
    ) -> None:
        for event in events:
            if isinstance(event, Window):
                self._english_final(stream, event)
            else:
                self._english_draft(stream, translation, event)

    def _english_draft(
        self, stream: StreamState, translation: SpeechTranslation, draft: CaptionDraft
    ) -> None:
        """The English not yet final: a draft of the oldest window still waiting for its English (the
        open window when none is), which may run into the next windows' words (the final has just its
        own); its pivot tracks translate it provisionally, the open window's as a closed one's."""
        index = translation.waiting_index
        since_ns = stream.spoken_ns(draft.t1_ms)
        if index is None:  # the open window
            if translation.captions_over:
                return  # the caption has finished: no window is open for it
            pivots = []
            for track in sorted(stream.target_tracks()):
                via = self.hub.route(stream, track, speech=True)
                if via is Route.WHISPER:
                    self.hub.send_draft(
                        stream, track, stream.next_window, draft.text, draft.t0_ms, draft.t1_ms, since_ns
                    )
                elif via is Route.PIVOT:
                    pivots.append(track)
            opened = OpenText(draft.text, draft.t0_ms, draft.t1_ms, since_ns)
            self.hub.translate_open(stream, pivots, opened, ENGLISH)
            return
        window = stream.windows.get(index)
        if window is None:
            return  # every track of it is out
        for track in sorted(window.open_tracks):
            if index in stream.tracks[track].held:
                continue
            if window.routes.get(track) is Route.WHISPER:
                t0_ms, t1_ms = window.window.t0_ms, window.window.t1_ms
                self.hub.send_draft(stream, track, index, draft.text, t0_ms, t1_ms, since_ns)
            elif window.routes.get(track) is Route.PIVOT and self.hub.display.translates(draft.text):
                self.hub.submit_job(stream, track, index, draft.text, ENGLISH, provisional=True)

    def _english_final(self, stream: StreamState, english: Window) -> None:
        """The ``en`` final of caption window ``english.index``: the final of its whisper tracks, and
        the source of its pivot tracks' jobs (an empty one: their final is empty too)."""
        window = stream.windows.get(english.index)
        if window is None:
            return
        for track in sorted(window.open_tracks):
            key = CanvasKey(stream.name, track, english.index)
            if english.index in stream.tracks[track].held:
                continue
            via = window.routes.get(track)
            if via is Route.PIVOT and not english.source and self.hub.cancel is not None:
                self.hub.cancel([key])  # a canvas of its English drafts, parked in the engine: withdrawn
            if via is Route.WHISPER or (via is Route.PIVOT and not english.source):
                self.hub.settle(stream, window, Final(key=key, rev=0, text=english.source, steps=0, tokens=0))
            elif via is Route.PIVOT:
                window.sources[track] = english.source
                self.hub.submit_job(stream, track, english.index, english.source, ENGLISH)
