"""``source_lang: "auto"``: which language a speech stream speaks, from whisper's language
identification on its first seconds of speech, sans I/O.

``AutoLanguageTranscriber`` is a ``Transcriber`` for a stream whose language is not given. Until it
knows the language it only listens: it holds the audio, finds the speech in it (Silero VAD, as every
transcriber does) and, once ``min_speech_ms`` of speech was heard, asks whisper to identify the
language of that speech (an ``AsrRequest`` with task ``identify``: the speech spans joined, as
faster-whisper's ``detect_language`` does with its VAD filter, at most 30 s). When whisper's most
likely language has at least ``min_probability`` (faster-whisper's own threshold, 0.5), or
``max_speech_ms`` of speech was heard, or the stream ended, that language is taken:
``detected_language`` and ``language_probability`` are set (the hub announces them to viewers) and
the transcriber the server makes for that language (``make``) is given all the audio held so far, on
the same clock, and does the rest: every later call goes to it. Otherwise it waits for
``retry_speech_ms`` more speech and asks again.

Costs: the captions start after the identification (about ``min_speech_ms`` of speech plus one
pass), and one identification pass (an encoder pass and one decoder step). Audio before the first
speech is not held: it reaches the chosen transcriber as silence of the same length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.asr import IDENTIFY, MAX_AUDIO_S, AsrRequest, language_guesses
from engine.audio import SAMPLE_RATE, AudioBuffer, SpeechDetector
from engine.caption_windows import CaptionDraft
from engine.transcriber import FINAL_PASS, MAX_FAILURES, Transcriber
from engine.types import Window, Word

AUTO = "auto"
LEAD_MS = 1_000  # audio held before the first speech (the detector pads its spans)
SILENCE_CHUNK_MS = 1_000  # held-back silence reaches the chosen transcriber in chunks this long


@dataclass(frozen=True, slots=True)
class LanguageIdSettings:
    min_speech_ms: int = 3_000  # speech heard before the first identification
    retry_speech_ms: int = 2_000  # more speech before asking again when whisper was unsure
    max_speech_ms: int = 10_000  # with this much speech heard, whisper's best guess is taken
    min_probability: float = 0.5  # faster-whisper's language_detection_threshold
    interval_ms: int = 300  # new audio needed before the speech is measured again
    fallback: str = "en"  # the language taken when identification failed MAX_FAILURES times

    def __post_init__(self) -> None:
        if not 0 < self.min_speech_ms <= self.max_speech_ms <= MAX_AUDIO_S * 1000:
            raise ValueError("need 0 < min_speech_ms <= max_speech_ms <= 30 s")
        if self.retry_speech_ms <= 0 or self.interval_ms <= 0:
            raise ValueError("retry_speech_ms and interval_ms must be positive")


class AutoLanguageTranscriber:
    """See the module docstring. ``make(language)`` builds the stream's transcriber for a language
    code whisper named (``es``, ``en``, ...)."""

    def __init__(
        self,
        detector: SpeechDetector,
        make: Callable[[str], Transcriber],
        settings: LanguageIdSettings | None = None,
    ) -> None:
        self.detector = detector
        self.make = make
        self.settings = settings or LanguageIdSettings()
        self.detected_language: str | None = None
        self.language_probability = 0.0
        self.inner: Transcriber | None = None
        self._buffer = AudioBuffer(max_ms=MAX_AUDIO_S * 1000 * 2)
        self._speech: list[tuple[int, int]] = []  # spans in the held audio
        self._measured_until_ms = 0
        self._speech_needed_ms = self.settings.min_speech_ms
        self._in_flight: AsrRequest | None = None
        self._failures = 0
        self._ending = False
        self.finished = False  # kept equal to the chosen transcriber's once there is one
        self._caption_only = False  # handed to the chosen transcriber

    # -- the Transcriber contract ------------------------------------------------------------------
    @property
    def ending(self) -> bool:
        return self._ending

    def insert_audio(self, pcm16le: bytes) -> None:
        if self._ending:
            raise ValueError("audio after the end of the stream")
        if self.inner is not None:
            self.inner.insert_audio(pcm16le)
            return
        self._buffer.append(pcm16le)
        if not self._speech:  # nothing said yet: hold only the lead-in
            self._buffer.trim_before(self._buffer.end_ms - LEAD_MS)

    def end(self) -> None:
        self._ending = True
        if self.inner is not None:
            self.inner.end()

    def step(self) -> tuple[AsrRequest | None, list[CaptionDraft | Window]]:
        if self.inner is not None:
            request, events = self.inner.step()
            self.finished = self.inner.finished
            return request, events
        if self._in_flight is not None or self.finished:
            return None, []
        if not self._ending and self._buffer.end_ms - self._measured_until_ms < self.settings.interval_ms:
            return None, []
        self._measure()
        heard = self.speech_heard_ms
        if not self._speech:
            self.finished = self._ending  # a stream that never spoke
            return None, []
        if heard < self._speech_needed_ms and not self._ending:
            return None, []
        self._in_flight = AsrRequest(
            audio=self._speech_audio(),
            offset_ms=self._speech[0][0],
            pass_name=FINAL_PASS,
            language=None,
            task=IDENTIFY,
        )
        return self._in_flight, []

    def on_result(self, request: AsrRequest, words: list[Word]) -> list[CaptionDraft | Window]:
        if self.inner is not None:
            events = self.inner.on_result(request, words)
            self.finished = self.inner.finished
            return events
        if request is not self._in_flight:
            raise ValueError("a result for a request this transcriber did not issue")
        self._in_flight = None
        guesses = language_guesses(words)
        if not guesses:
            raise ValueError("language identification answered no language")
        language, probability = guesses[0]
        enough = self.speech_heard_ms >= self.settings.max_speech_ms or self._ending
        if probability >= self.settings.min_probability or enough:
            self._choose(language, probability)
        else:
            self._speech_needed_ms = self.speech_heard_ms + self.settings.retry_speech_ms
        return []

    def set_caption_only(self, caption_only: bool) -> None:
        self._caption_only = caption_only
        if self.inner is not None:
            self.inner.set_caption_only(caption_only)

    def on_error(self, request: AsrRequest) -> list[CaptionDraft | Window]:
        if self.inner is not None:
            events = self.inner.on_error(request)
            self.finished = self.inner.finished
            return events
        if request is not self._in_flight:
            raise ValueError("an error for a request this transcriber did not issue")
        self._in_flight = None
        self._failures += 1
        if self._failures >= MAX_FAILURES:
            self._choose(self.settings.fallback, 0.0)
        return []

    @property
    def held_until_ms(self) -> int:
        """Where the audio held for identification ends (after the choice no more is held)."""
        return self._buffer.end_ms

    def replay(self, into: Transcriber) -> int:
        """Give ``into`` the audio held until the language was chosen, on the stream's clock (the
        chosen transcriber got it so; the hub gives it to a transcriber started with it, such as the
        stream's ``en`` track). Returns the stream time it reaches, in ms."""
        feed_silence(into, self._buffer.start_ms)
        audio = self._buffer.samples()
        into.insert_audio((np.clip(audio * 32768.0, -32768, 32767)).astype("<i2").tobytes())
        return self._buffer.end_ms

    # -- internals ---------------------------------------------------------------------------------
    @property
    def speech_heard_ms(self) -> int:
        """Detected speech in the held audio so far."""
        return sum(end - start for start, end in self._speech)

    def _measure(self) -> None:
        start = self._buffer.start_ms
        self._speech = self.detector.speech_spans(self._buffer.samples(), start)
        self._measured_until_ms = self._buffer.end_ms

    def _speech_audio(self) -> np.ndarray:
        """The speech spans joined, at most the first 30 s of speech."""
        start = self._buffer.start_ms
        audio = self._buffer.samples()
        pieces = [
            audio[(a - start) * SAMPLE_RATE // 1000 : (b - start) * SAMPLE_RATE // 1000]
            for a, b in self._speech
        ]
        return np.concatenate(pieces)[: MAX_AUDIO_S * SAMPLE_RATE]

    def _choose(self, language: str, probability: float) -> None:
        """Take ``language``: make its transcriber and give it everything heard, on the stream's clock."""
        self.detected_language, self.language_probability = language, probability
        inner = self.make(language)
        inner.set_caption_only(self._caption_only)
        self.replay(inner)
        if self._ending:
            inner.end()
        self.inner = inner


def feed_silence(into: Transcriber, duration_ms: int) -> None:
    """``duration_ms`` of silence into ``into``, in chunks of ``SILENCE_CHUNK_MS``."""
    while duration_ms > 0:
        chunk = min(duration_ms, SILENCE_CHUNK_MS)
        into.insert_audio(bytes(chunk * SAMPLE_RATE // 1000 * 2))
        duration_ms -= chunk
