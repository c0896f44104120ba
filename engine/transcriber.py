"""Live transcription of one audio stream, sans I/O: audio in, recognition requests out, results in,
caption drafts and final windows out.

* **Passes.** The recogniser runs over a rolling buffer. Every *final* pass (e.g. whisper base, with
  the stream's recent text as context) feeds a LocalAgreement-2 policy: a word is final once two
  consecutive final passes agree on it and the later one heard enough audio after it. Optionally
  (``use_draft_pass``) a *draft* pass follows every final pass, only to show the newest words
  earlier: it hears just the unconfirmed audio (from ``draft_lead_ms`` before the last confirmed
  word), so with a short encoder input it costs a fraction of a final pass, and it runs as soon as
  ``draft_interval_ms`` of new audio arrived, while final passes wait for ``interval_ms`` of audio
  new to them.
* **Windows and drafts** follow ``engine.caption_windows`` (sentence, clause, word budget, time span),
  and a window also closes after a pause and at the end of the stream.
* **Bounded latency.**
  * At most one request is in flight per stream. When it returns, the next one covers all audio that
    arrived meanwhile, so work never piles up behind a slow recogniser.
  * The buffer is trimmed at every closed window and hard-bounded in length.
  * Audio without speech, by voice activity detection, is never sent to the recogniser, and words a
    pass places outside the detected speech are dropped, so silence cannot produce hallucinated text.

All times are ms of the stream's audio, from its first sample; the caller supplies no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from engine.asr import TRANSCRIBE, AsrRequest
from engine.audio import SAMPLE_RATE, AudioBuffer, SpeechDetector
from engine.caption_windows import CaptionDraft, CaptionWindows, WindowRules
from engine.commit import LocalAgreement, normalise
from engine.types import Window, Word

DRAFT_PASS, FINAL_PASS = "draft", "final"
MAX_FAILURES = 3
ECHO_MIN_WORDS = 3

__all__ = ["CaptionDraft", "LiveTranscriber", "Transcriber", "TranscriberSettings"]


class Transcriber(Protocol):
    """The contract of a live transcriber, whatever its recogniser (this module's ``LiveTranscriber``
    for whisper, ``engine.segment_transcriber.SegmentTranscriber`` for Moonshine): one per stream,
    sans I/O, driven by the hub."""

    finished: bool

    @property
    def ending(self) -> bool: ...

    def insert_audio(self, pcm16le: bytes) -> None: ...

    def end(self) -> None: ...

    def step(self) -> tuple[AsrRequest | None, list[CaptionDraft | Window]]: ...

    def on_result(self, request: AsrRequest, words: list[Word]) -> list[CaptionDraft | Window]: ...

    def on_error(self, request: AsrRequest) -> list[CaptionDraft | Window]: ...

    def set_caption_only(self, caption_only: bool) -> None:
        """Whether no translation track of the stream is watched now (``engine.caption_windows``)."""
        ...


@dataclass(frozen=True, slots=True)
class TranscriberSettings:
    language: str | None = "en"
    use_draft_pass: bool = False  # a draft pass after every final pass (docs/engine.md)
    interval_ms: int = 500  # audio a final pass has not heard, needed before the next final pass
    draft_interval_ms: int = 200  # audio no pass has heard, needed before a draft pass
    draft_lead_ms: int = 1_000  # a draft pass hears this much before the last confirmed word
    max_buffer_ms: int = 20_000  # hard bound of the rolling buffer
    trim_keep_ms: int = 5_000  # when the bound is near, keep this much unconfirmed audio
    pause_ms: int = 800  # silence after the last final word that closes the window
    right_context_ms: int = 800  # a word is only confirmed by a final pass that heard this much after it
    max_window_words: int = 16
    max_window_ms: int = 2_500  # a window whose final words span this long closes (docs/engine.md)
    clause_window_words: int = 6  # a window this long also closes at a clause boundary (, ; :)
    context_words: int = 40

    @property
    def window_rules(self) -> WindowRules:
        return WindowRules(self.max_window_words, self.max_window_ms, self.clause_window_words)


@dataclass(eq=False)
class LiveTranscriber:
    """See the module docstring."""

    detector: SpeechDetector
    settings: TranscriberSettings = field(default_factory=TranscriberSettings)
    task: ClassVar[str] = TRANSCRIBE  # whisper's task (engine/speech_translation.py translates)

    def __post_init__(self) -> None:
        self.buffer = AudioBuffer(max_ms=self.settings.max_buffer_ms)
        self.agreement = LocalAgreement(agreement=2)
        self.windows = CaptionWindows(self.settings.window_rules)
        self._tentative: tuple[Word, ...] = ()
        self._context: list[str] = []  # recent closed-window text, the final pass's prompt
        self._in_flight: AsrRequest | None = None
        self._in_flight_speech: tuple[int, list[tuple[int, int]]] = (0, [])  # from, spans: see step()
        self._last_pass_end_ms = 0  # audio heard by the latest pass, of either kind
        self._last_final_end_ms = 0  # audio heard by the latest final pass
        self._last_pass = DRAFT_PASS
        self._ending = False
        self._failures = 0
        self.finished = False

    # -- input -------------------------------------------------------------------------------------
    def insert_audio(self, pcm16le: bytes) -> None:
        if self._ending:
            raise ValueError("audio after the end of the stream")
        self.buffer.append(pcm16le)

    def end(self) -> None:
        """No more audio: the next step runs a last final pass, then everything is closed."""
        self._ending = True

    @property
    def ending(self) -> bool:
        """``end`` was called: no more audio is taken (``finished`` once everything is closed)."""
        return self._ending

    # -- the loop ----------------------------------------------------------------------------------
    def step(self) -> tuple[AsrRequest | None, list[CaptionDraft | Window]]:
        """What to do now: a recognition request to run (or None) and any events already due."""
        if self._in_flight is not None or self.finished:
            return None, []
        uncommitted_from = max(self.buffer.start_ms, self.agreement.committed_until_ms)
        pass_name = self._choose_pass()
        if pass_name == FINAL_PASS:
            new_audio, needed = self.buffer.end_ms - self._last_final_end_ms, self.settings.interval_ms
        else:
            new_audio, needed = self.buffer.end_ms - self._last_pass_end_ms, self.settings.draft_interval_ms
        if not self._ending and new_audio < needed:
            return None, []
        speech = self.detector.speech_spans(self.buffer.samples(uncommitted_from), uncommitted_from)
        if not speech:
            return None, self._silence(uncommitted_from)
        if pass_name == FINAL_PASS:
            audio_from = self.buffer.start_ms
            self._last_final_end_ms = self.buffer.end_ms
        else:
            audio_from = max(self.buffer.start_ms, uncommitted_from - self.settings.draft_lead_ms)
        request = AsrRequest(
            audio=self.buffer.samples(audio_from),
            offset_ms=audio_from,
            pass_name=pass_name,
            language=self.settings.language,
            prompt=" ".join(self._context[-self.settings.context_words :]) if pass_name == FINAL_PASS else "",
            task=self.task,
        )
        self._in_flight = request
        self._in_flight_speech = (uncommitted_from, speech)
        self._last_pass_end_ms = self.buffer.end_ms
        self._last_pass = pass_name
        return request, []

    def on_result(self, request: AsrRequest, words: list[Word]) -> list[CaptionDraft | Window]:
        """Fold in the recogniser's words for ``request``; returns drafts and closed windows."""
        if request is not self._in_flight:
            raise ValueError("a result for a request this transcriber did not issue")
        self._in_flight = None
        self._failures = 0
        events: list[CaptionDraft | Window] = []
        if request.pass_name == FINAL_PASS:
            heard_until = request.offset_ms + len(request.audio) * 1000 // SAMPLE_RATE
            final_pass_ends = self._ending and heard_until >= self.buffer.end_ms
            words = self._without_echo(self._within_speech(words))
            # a word needs audio after it before it can be confirmed, except at the very end
            margin = 0 if final_pass_ends else self.settings.right_context_ms
            update = self.agreement.insert(words, settled_until_ms=heard_until - margin)
            events.extend(self._closed(self.windows.add(update.committed)))
            self._tentative = update.tentative
            if final_pass_ends:
                events.extend(self._closed(self.windows.add(self.agreement.finish().committed)))
                self._tentative = ()
            if final_pass_ends:
                events.extend(self._close_window())
                self.finished = True
                return events
            events.extend(self._keep_buffer_bounded())
        else:
            committed_until = self.agreement.committed_until_ms
            self._tentative = tuple(w for w in self._within_speech(words) if w.t1_ms > committed_until + 100)
        events.extend(self.windows.draft(self._tentative))
        return events

    def set_caption_only(self, caption_only: bool) -> None:
        self.windows.caption_only = caption_only

    def on_error(self, request: AsrRequest) -> list[CaptionDraft | Window]:
        """The recogniser failed on ``request``: its audio is covered again by the next pass. At the end
        of the stream, after ``MAX_FAILURES`` failures in a row, what was heard so far is closed as is."""
        if request is not self._in_flight:
            raise ValueError("an error for a request this transcriber did not issue")
        self._in_flight = None
        self._last_pass_end_ms = request.offset_ms
        if request.pass_name == FINAL_PASS:
            self._last_final_end_ms = request.offset_ms
        self._failures += 1
        if not (self._ending and self._failures >= MAX_FAILURES):
            return []
        unsettled = self._tentative[len(self.agreement.tentative) :]
        events = self._closed(self.windows.add([*self.agreement.finish().committed, *unsettled]))
        events.extend(self._close_window())
        self.finished = True
        return events

    # -- internals ---------------------------------------------------------------------------------
    def _without_echo(self, words: list[Word]) -> list[Word]:
        """Whisper, given recent captions as its prompt, sometimes answers leftover audio (the tail of a
        word, breath, silence) by repeating that prompt. New words that only repeat recent closed text
        are such an echo and are dropped."""
        fresh = [w for w in words if w.t1_ms > self.agreement.committed_until_ms]
        if len(fresh) < ECHO_MIN_WORDS or self.windows.open_words:
            return words
        recent = " ".join(normalise(w) for w in self._context[-self.settings.context_words :])
        said = " ".join(normalise(w.text) for w in fresh)
        return words[: len(words) - len(fresh)] if f" {said} " in f" {recent} " else words

    def _within_speech(self, words: list[Word]) -> list[Word]:
        """Whisper may answer silence with fluent invented text (often after the last words, or when a
        stream ends). Unconfirmed words that touch no span of detected speech (padded by the
        detector) were not said, and are dropped before they can be confirmed."""
        checked_from, spans = self._in_flight_speech
        return [
            w
            for w in words
            if w.t1_ms <= checked_from or any(w.t0_ms < end and w.t1_ms > start for start, end in spans)
        ]

    def _choose_pass(self) -> str:
        if self._ending or not self.settings.use_draft_pass:
            return FINAL_PASS
        return FINAL_PASS if self._last_pass == DRAFT_PASS else DRAFT_PASS

    def _silence(self, uncommitted_from: int) -> list[CaptionDraft | Window]:
        """No speech since the last final word: drop guesses; close the window after a pause."""
        self._tentative = ()
        self.agreement.reset_tentative()
        events: list[CaptionDraft | Window] = []
        if self._ending:
            events.extend(self._close_window())
            self.finished = True
            return events
        open_words = self.windows.open_words
        last_word_end = open_words[-1].t1_ms if open_words else uncommitted_from
        if open_words and self.buffer.end_ms - last_word_end >= self.settings.pause_ms:
            events.extend(self._close_window())
        if self.buffer.end_ms - self.buffer.start_ms > self.settings.pause_ms:
            # nothing unconfirmed to keep but the last moments
            self.buffer.trim_before(self.buffer.end_ms - self.settings.pause_ms)
        self._last_pass_end_ms = self._last_final_end_ms = self.buffer.end_ms
        return events

    def _close_window(self) -> list[CaptionDraft | Window]:
        return self._closed(self.windows.close())

    def _closed(self, windows: list[Window]) -> list[CaptionDraft | Window]:
        """Keep the closed windows' text as the final pass's context; once no confirmed word is left
        open, drop the audio they were heard in."""
        for window in windows:
            self._context.extend(window.source.split())
            del self._context[: -self.settings.context_words]
        if windows and not self.windows.open_words:
            self.buffer.trim_before(min(windows[-1].t1_ms, self.buffer.end_ms))
        return list(windows)

    def _keep_buffer_bounded(self) -> list[CaptionDraft | Window]:
        """Near the buffer's bound, confirm the latest reading of all but the newest audio and drop it:
        latency and memory stay bounded even when passes keep disagreeing, and no word is lost."""
        limit = self.settings.max_buffer_ms - self.settings.trim_keep_ms
        if self.buffer.end_ms - self.buffer.start_ms <= limit:
            return []
        update = self.agreement.commit_through(self.buffer.end_ms - self.settings.trim_keep_ms)
        events = self._closed(self.windows.add(update.committed))
        self._tentative = update.tentative
        self.buffer.trim_before(max(self.agreement.committed_until_ms, self.buffer.end_ms - limit))
        return events
