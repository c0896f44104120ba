"""Live transcription for a recogniser that hears a segment, not a 30 s window (Moonshine), sans I/O.

Same contract as ``engine.transcriber.LiveTranscriber`` (audio in, recognition requests out, results
in, caption drafts and final windows out; times in ms of the stream's audio, no clock read), with a
policy fit for a model whose cost follows the audio it hears and which continues from given text:

* **Segments.** The open segment is the audio since the last cut, and every cut lies in silence, so no
  pass ever starts or ends inside a word. A segment begins where speech begins (voice activity
  detection); audio without speech is never sent to the recogniser. A pass also hears up to
  ``context_ms`` before the cut, with the final words estimated to lie there as the start of its
  prefix: a phrase after a short pause is read in the context of the one before it ("is to be
  ill-disposed", not "is to be old, a supposed"). After a longer silence the context is dropped.
* **Passes.** Once ``interval_ms`` of audio is new to the last pass, the next pass hears the whole open
  segment, with the segment's confirmed words as ``prefix``: the recogniser continues after them, so a
  pass costs the audio plus the new words, and confirmed words never change.
* **Confirmation.** A word is final when the latest pass and an earlier one that heard at least
  ``agreement_gap_ms`` less audio agree on it and on every word before it (LocalAgreement-2 after the
  prefix, across a gap: two passes 200 ms apart often agree on the same guess at where an unfinished
  phrase goes, "going down [from Jerusalem]"), except the newest ``hold_words`` of the latest pass
  and any word it places within ``right_context_ms`` of its audio's end. Words the recogniser is sure
  of (each token at least ``confident_probability`` in both readings) need less: readings
  ``confident_gap_ms`` apart (consecutive passes) and ``confident_context_ms`` of audio after them. A
  guess at an unfinished phrase is rarely sure; a clearly heard word usually is. Every word of a segment is
  final once a pause ends it: the detector (``pause_detector``) sees the speech end at least
  ``PAUSE_MS`` before the newest audio; the segment is cut in that silence and a last pass over
  exactly the segment confirms what is left.
* **Long speech without a pause.** Once a segment reaches ``max_segment_ms``, it is cut at the quietest
  10 ms of its second half that lies after its confirmed words (the gap between two words, in practice),
  and the words before the cut are confirmed the same way.
* **Bounded work.** At most one request is in flight per stream; when it returns, the next pass covers
  everything that arrived meanwhile. Since segments are cut at ``max_segment_ms``, the buffer holds at
  most about that plus one pass's wait; its hard bound ``max_buffer_ms`` is far above.
* **Word times** are estimated (the recogniser gives none): a segment's words are spread over its
  detected speech in proportion to their length. Windows and drafts follow ``engine.caption_windows``;
  a pause also closes the open window.

A word the recogniser returns twice across a cut (the end of a segment and the start of the next) is
kept once: the first words of a segment that repeat the last confirmed ones are dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from engine.asr import SEGMENT_PASS, AsrRequest
from engine.audio import SAMPLE_RATE, AudioBuffer, SpeechDetector
from engine.caption_windows import CaptionDraft, CaptionWindows, WindowRules
from engine.commit import normalise
from engine.types import Window, Word

MAX_FAILURES = 3
MAX_REPEAT_WORDS = 3
FRAME_MS = 10
PAUSE_MS = 300  # the silence that ends a segment: the minimum silence of ``pause_detector``'s spans
READINGS_KEPT = 16


@dataclass(frozen=True, slots=True)
class SegmentSettings:
    language: str | None = "en"
    interval_ms: int = 300  # audio new to the last pass, needed before the next pass
    hold_words: int = 1  # the newest words of a pass wait for a pause or more audio after them
    agreement_gap_ms: int = 800  # a reading is checked against one that heard at least this much less
    right_context_ms: int = 600  # and so does every word (by its estimated end) this close to the end
    # words both readings are this sure of need only this gap and right context (above 1: never)
    confident_probability: float = 0.9
    confident_gap_ms: int = 300
    confident_context_ms: int = 300
    max_segment_ms: int = 12_000  # a segment this long is cut in its quietest gap
    lead_ms: int = 300  # audio kept before the detected start of speech
    context_ms: int = 1_500  # audio before the cut heard again by the next segment's passes
    max_buffer_ms: int = 40_000  # hard bound of the rolling buffer (a safety net, not the policy)
    max_window_words: int = 16
    max_window_ms: int = 2_000
    clause_window_words: int = 6
    caption_only_window_ms: int | None = 1_200  # no translation track watched (engine.caption_windows)

    @property
    def window_rules(self) -> WindowRules:
        return WindowRules(
            self.max_window_words, self.max_window_ms, self.clause_window_words, self.caption_only_window_ms
        )


@dataclass(frozen=True, slots=True)
class _Pass:
    """What a request in flight was for: the segment it heard, and whether it ends the segment."""

    request: AsrRequest
    cut_ms: int | None  # the segment ends here (a pause, a forced cut or the stream's end)
    pause: bool  # the cut lies in a pause (or at the end): the open window closes there too
    speech: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class _Reading:
    """A pass's reading of the segment: the audio it heard until, and every heard word (the confirmed
    ones, then its new ones) normalised, with how sure the recogniser was of each."""

    until_ms: int
    keys: list[str]
    probabilities: list[float]


@dataclass(eq=False)
class SegmentTranscriber:
    """See the module docstring."""

    detector: SpeechDetector
    settings: SegmentSettings = field(default_factory=SegmentSettings)

    def __post_init__(self) -> None:
        self.buffer = AudioBuffer(max_ms=self.settings.max_buffer_ms)
        self.windows = CaptionWindows(self.settings.window_rules)
        self._heard_from_ms = 0  # where passes start: the segment's start, or its context before it
        self._segment_from_ms = 0  # the last cut: audio after it is new to the segment
        self._confirmed: list[Word] = []  # final words in the heard audio (context, then the segment's)
        self._hypothesis: list[Word] = []  # the latest pass's words after them
        # the segment's readings, oldest first
        self._readings: deque[_Reading] = deque(maxlen=READINGS_KEPT)
        self._in_flight: _Pass | None = None
        self._last_pass_end_ms = 0
        self._ending = False
        self._failures = 0
        self.finished = False

    # -- input -------------------------------------------------------------------------------------
    def insert_audio(self, pcm16le: bytes) -> None:
        if self._ending:
            raise ValueError("audio after the end of the stream")
        self.buffer.append(pcm16le)

    def end(self) -> None:
        """No more audio: the next step runs a last pass over the open segment, then closes everything."""
        self._ending = True

    @property
    def ending(self) -> bool:
        return self._ending

    # -- the loop ----------------------------------------------------------------------------------
    def step(self) -> tuple[AsrRequest | None, list[CaptionDraft | Window]]:
        """What to do now: a recognition request to run (or None) and any events already due."""
        if self._in_flight is not None or self.finished:
            return None, []
        if not self._ending and self.buffer.end_ms - self._last_pass_end_ms < self.settings.interval_ms:
            return None, []
        start = max(self._heard_from_ms, self.buffer.start_ms)
        heard = self.detector.speech_spans(self.buffer.samples(start), start)
        speech = [
            (max(s, self._segment_from_ms), e) for s, e in heard if e > self._segment_from_ms + FRAME_MS
        ]
        if not speech:
            return None, self._silence()
        if not self._confirmed:  # the segment starts where its speech does
            start = max(start, speech[0][0] - self.settings.lead_ms)
            self._heard_from_ms = self._segment_from_ms = start
        end = self.buffer.end_ms
        cut: int | None = None
        pause = True
        if self._ending:
            cut = end
        elif speech[-1][1] < end:  # the detector saw the speech end: a pause
            cut = speech[-1][1]
        elif len(speech) > 1:  # a pause the speaker has already ended
            cut = speech[-2][1]
        elif end - start >= self.settings.max_segment_ms:
            cut, pause = self._quietest_gap(end), False
        until = end if cut is None else cut
        request = AsrRequest(
            audio=self.buffer.samples(start)[: (until - start) * SAMPLE_RATE // 1000],
            offset_ms=start,
            pass_name=SEGMENT_PASS,
            language=self.settings.language,
            prefix=" ".join(w.text for w in self._confirmed),
            guess=" ".join(w.text for w in self._hypothesis),
        )
        pad = self.detector.speech_pad_ms  # the spans' padding: words lie inside it
        spans = tuple(
            (max(s + pad, start), min(e - pad, until)) if e - s > 3 * pad else (max(s, start), min(e, until))
            for s, e in heard
            if s < until
        )
        self._in_flight = _Pass(request, cut, pause, spans)
        self._last_pass_end_ms = end
        return request, []

    def on_result(self, request: AsrRequest, words: list[Word]) -> list[CaptionDraft | Window]:
        """Fold in the recogniser's words after ``request.prefix``; returns drafts and closed windows."""
        done = self._take(request)
        self._failures = 0
        new = self._without_repeat(self._placed(done, words))
        events: list[CaptionDraft | Window] = []
        if done.cut_ms is not None:
            events.extend(self._confirm(new))
            events.extend(self._end_segment(done.cut_ms, close_window=done.pause))
            return events
        heard_until = done.request.offset_ms + len(done.request.audio) * 1000 // SAMPLE_RATE
        reading = _Reading(
            heard_until,
            [normalise(w.text) for w in (*self._confirmed, *new)],
            [*(1.0 for _ in self._confirmed), *(w.probability for w in new)],
        )
        agreed = max(
            self._agreed(new, reading, self.settings.agreement_gap_ms, self.settings.right_context_ms, 0.0),
            self._agreed(
                new,
                reading,
                self.settings.confident_gap_ms,
                self.settings.confident_context_ms,
                self.settings.confident_probability,
            ),
        )
        self._readings.append(reading)
        events.extend(self._confirm(new[:agreed]))
        self._hypothesis = new[agreed:]
        events.extend(self.windows.draft(self._hypothesis))
        return events

    def set_caption_only(self, caption_only: bool) -> None:
        self.windows.caption_only = caption_only

    def on_error(self, request: AsrRequest) -> list[CaptionDraft | Window]:
        """The recogniser failed on ``request``: its audio is heard again by the next pass. At the end
        of the stream, after ``MAX_FAILURES`` failures in a row, what was heard so far is closed as is."""
        self._take(request)
        self._last_pass_end_ms = request.offset_ms
        self._failures += 1
        if not (self._ending and self._failures >= MAX_FAILURES):
            return []
        events = self._confirm(self._hypothesis)
        events.extend(self._end_segment(self.buffer.end_ms, close_window=True))
        return events

    # -- internals ---------------------------------------------------------------------------------
    def _agreed(self, new: list[Word], reading: _Reading, gap_ms: int, context_ms: int, sure: float) -> int:
        """How many of the latest pass's ``new`` words are confirmed: the prefix on which its ``reading`` and
        the latest earlier reading that heard at least ``gap_ms`` less audio agree, each word at least
        ``sure`` in both, short of the held-back newest words and of those within ``context_ms`` of
        the end of the audio heard."""
        base = len(self._confirmed)
        earlier = next((r for r in reversed(self._readings) if r.until_ms <= reading.until_ms - gap_ms), None)
        if earlier is None or earlier.keys[:base] != reading.keys[:base]:
            return 0
        agreed = 0
        while (
            base + agreed < min(len(earlier.keys), len(reading.keys))
            and earlier.keys[base + agreed] == reading.keys[base + agreed]
            and min(earlier.probabilities[base + agreed], reading.probabilities[base + agreed]) >= sure
        ):
            agreed += 1
        agreed = min(agreed, max(0, len(new) - self.settings.hold_words))
        while agreed and new[agreed - 1].t1_ms > reading.until_ms - context_ms:
            agreed -= 1
        return agreed

    def _take(self, request: AsrRequest) -> _Pass:
        done = self._in_flight
        if done is None or request is not done.request:
            raise ValueError("a result for a request this transcriber did not issue")
        self._in_flight = None
        return done

    def _confirm(self, words: list[Word]) -> list[CaptionDraft | Window]:
        if not words:
            return []
        self._confirmed.extend(words)
        return list(self.windows.add(words))

    def _end_segment(self, cut_ms: int, *, close_window: bool) -> list[CaptionDraft | Window]:
        """The segment's words are all final: start the next segment at ``cut_ms``, hearing up to
        ``context_ms`` before it again with the words estimated to lie there as its prefix."""
        context_from = max(cut_ms - self.settings.context_ms, self._heard_from_ms)
        self._confirmed = [w for w in self._confirmed if w.t0_ms >= context_from]
        self._hypothesis = []
        self._readings.clear()
        self._heard_from_ms = context_from if self._confirmed else cut_ms
        self._segment_from_ms = cut_ms
        self.buffer.trim_before(self._heard_from_ms)
        events: list[CaptionDraft | Window] = list(self.windows.close()) if close_window else []
        if self._ending and cut_ms >= self.buffer.end_ms:
            self.finished = True
        return events

    def _silence(self) -> list[CaptionDraft | Window]:
        """No speech in the open segment: nothing to hear; at the end of the stream, close up."""
        self._hypothesis = []
        events: list[CaptionDraft | Window] = []
        if self._ending:
            events.extend(self._end_segment(self.buffer.end_ms, close_window=True))
            self.finished = True
            return events
        keep_from = self.buffer.end_ms - self.settings.lead_ms
        # no words to keep as context, or a silence long enough that they are no context any more
        if not self._confirmed or keep_from - self._segment_from_ms >= self.settings.context_ms:
            events.extend(self.windows.close())
            self._confirmed = []
            self._readings.clear()
            self.buffer.trim_before(keep_from)
            self._heard_from_ms = self._segment_from_ms = max(self._segment_from_ms, keep_from)
        self._last_pass_end_ms = self.buffer.end_ms
        return events

    def _placed(self, done: _Pass, words: list[Word]) -> list[Word]:
        """The new ``words`` with times: the heard words (prefix + new) spread over the heard speech."""
        spans = list(done.speech)
        if not spans:
            heard_until = done.request.offset_ms + len(done.request.audio) * 1000 // SAMPLE_RATE
            spans = [(done.request.offset_ms, heard_until)]
        floor = self._confirmed[-1].t1_ms if self._confirmed else 0
        heard = spread_words([*(w.text for w in self._confirmed), *(w.text for w in words)], spans)
        placed: list[Word] = []
        for word, given in zip(heard[len(self._confirmed) :], words, strict=True):
            t0 = max(word.t0_ms, floor)
            placed.append(
                Word(text=word.text, t0_ms=t0, t1_ms=max(word.t1_ms, t0), probability=given.probability)
            )
            floor = placed[-1].t1_ms
        return placed

    def _without_repeat(self, words: list[Word]) -> list[Word]:
        """``words`` without first words that only repeat the last final ones (heard across a cut)."""
        recent = [normalise(w.text) for w in self._confirmed[-MAX_REPEAT_WORDS:]]
        for size in range(min(len(recent), len(words)), 0, -1):
            if recent[-size:] == [normalise(w.text) for w in words[:size]]:
                return words[size:]
        return words

    def _quietest_gap(self, end: int) -> int:
        """The quietest 10 ms of the segment's second half, after its confirmed words (a forced cut)."""
        earliest = max(
            self._segment_from_ms + (end - self._segment_from_ms) // 2,
            self._confirmed[-1].t1_ms if self._confirmed else 0,
        )
        latest = end - 2 * FRAME_MS
        if latest <= earliest:
            return end
        audio = self.buffer.samples(earliest)[: (latest - earliest) * SAMPLE_RATE // 1000]
        frame = FRAME_MS * SAMPLE_RATE // 1000
        count = len(audio) // frame
        if count == 0:
            return end
        energy = (audio[: count * frame].reshape(count, frame) ** 2).mean(axis=1)
        return earliest + int(np.argmin(energy)) * FRAME_MS + FRAME_MS // 2


def spread_words(texts: list[str], spans: list[tuple[int, int]]) -> list[Word]:
    """``texts`` as ``Word``s over the speech ``spans`` (in order, not overlapping), for a recogniser
    that gives no word times: each word takes speech time in proportion to its length plus one
    character (the gap after it), counted across the spans as if they were one."""
    lengths = np.array([e - s for s, e in spans], dtype=np.int64)
    total_ms = int(lengths.sum())
    ends = np.cumsum(lengths)
    weights = [len(text) + 1 for text in texts]
    total = sum(weights) or 1

    def at(elapsed_ms: int) -> int:
        index = min(int(np.searchsorted(ends, elapsed_ms, side="right")), len(spans) - 1)
        before = int(ends[index] - lengths[index])
        return spans[index][0] + min(elapsed_ms - before, int(lengths[index]))

    words: list[Word] = []
    elapsed = 0
    for text, weight in zip(texts, weights, strict=True):
        t0 = at(elapsed * total_ms // total)
        elapsed += weight
        t1 = at((elapsed - 1) * total_ms // total)
        words.append(Word(text=text, t0_ms=t0, t1_ms=max(t0, t1)))
    return words


def pause_detector() -> SpeechDetector:
    """The speech detector a segment transcriber is given: a span ends after ``PAUSE_MS`` of silence
    (shorter than the whisper transcriber's 500 ms: a pause confirms a whole phrase at once)."""
    return SpeechDetector(min_silence_ms=PAUSE_MS)
