"""Speech in any language whisper knows -> an English track, from whisper's own ``translate`` task,
sans I/O: the per-stream policy of the ``en`` track of a non-English speech stream.

``SpeechTranslation`` is a ``LiveTranscriber`` whose passes ask whisper to translate (``task``
``translate``): the same rolling buffer, speech filter, one request in flight, and the same
confirmation rule (LocalAgreement-2 with right context) on the translated words. Drafts are the
unconfirmed English, as caption drafts are.

What differs is where its windows end. An ``en`` track is one final per caption window, so the hub
can treat it like a translation track (and the pivot can translate each ``en`` final on). The
caption's windows come from the stream's own transcriber; the hub hands each one over as it closes
(``caption_closed``, with the hub's window number). Confirmed English words are held until the
caption window they belong to is due, then go out as one ``Window`` numbered like the caption window:

* a word belongs to the first caption window whose end lies at or after the word's midpoint (whisper
  places translated words in the time of the speech they translate, roughly: a word near a boundary
  may land on the other side of it);
* a caption window is due once no English word can still land in it: a confirmed word lies past its
  end, or the latest final pass heard ``right_context_ms`` past its end with no unconfirmed word
  before it, or the English track has finished;
* once the caption has finished too (``captions_finished``), its last window still waiting takes every
  English word left; English placed after every caption window that already went out is dropped
  (the caption heard no words there, so it is whisper answering noise);
* a caption window to which no English word belongs gets an empty final (the text had nothing
  whisper translated there).

The confirmed English also becomes the translation passes' prompt, as closed captions do for
transcription passes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from engine.asr import TRANSLATE, AsrRequest
from engine.audio import SAMPLE_RATE
from engine.caption_windows import CaptionDraft, CaptionWindows
from engine.transcriber import FINAL_PASS, LiveTranscriber
from engine.types import Window, Word


class HeldWords(CaptionWindows):
    """Confirmed words waiting for their caption window: never closes a window by itself."""

    def add(self, words: list[Word] | tuple[Word, ...]) -> list[Window]:
        self.open_words.extend(words)
        return []

    def close(self, count: int | None = None) -> list[Window]:
        return []  # a pause or the end of the stream: the caption's windows decide

    def take(self, until_ms: int | None) -> list[Word]:
        """Remove and return the held words whose midpoint is at or before ``until_ms`` (all: None)."""
        cut = len(self.open_words)
        if until_ms is not None:
            cut = next((i for i, w in enumerate(self.open_words) if _midpoint(w) > until_ms), cut)
        taken, self.open_words = self.open_words[:cut], self.open_words[cut:]
        return taken


def _midpoint(word: Word) -> int:
    return (word.t0_ms + word.t1_ms) // 2


@dataclass(eq=False)
class SpeechTranslation(LiveTranscriber):
    """See the module docstring. ``settings.language`` is the speech's language (whisper translates
    from it; None: whisper identifies it on every pass)."""

    task: ClassVar[str] = TRANSLATE

    def __post_init__(self) -> None:
        super().__post_init__()
        self.windows: HeldWords = HeldWords(self.settings.window_rules)
        self._captions: deque[Window] = deque()
        self._heard_ms = 0  # audio every completed final pass (or silence) has covered
        self._captions_done = False
        self._last_index = -1

    def caption_closed(self, window: Window) -> list[CaptionDraft | Window]:
        """The caption track closed ``window`` (numbered as the hub numbers it). Returns the English
        windows now due."""
        if self._captions_done:
            raise ValueError("a caption window after the caption finished")
        if window.index <= self._last_index:
            raise ValueError(f"caption window {window.index} came out of order")
        self._last_index = window.index
        self._captions.append(window)
        return self._release()

    def captions_finished(self) -> list[CaptionDraft | Window]:
        """The caption's transcriber has finished: no more caption windows. Returns what is now due."""
        self._captions_done = True
        return self._release()

    def step(self) -> tuple[AsrRequest | None, list[CaptionDraft | Window]]:
        request, events = super().step()
        if self._in_flight is None:
            self._heard_ms = max(self._heard_ms, self._last_final_end_ms)  # silence covered it
        return request, [*events, *self._release()]

    def on_result(self, request: AsrRequest, words: list[Word]) -> list[CaptionDraft | Window]:
        events = super().on_result(request, words)
        if request.pass_name == FINAL_PASS:
            self._heard_ms = max(self._heard_ms, request.offset_ms + len(request.audio) * 1000 // SAMPLE_RATE)
        return [*events, *self._release()]

    def on_error(self, request: AsrRequest) -> list[CaptionDraft | Window]:
        return [*super().on_error(request), *self._release()]

    @property
    def captions_over(self) -> bool:
        """The caption has finished: no caption window is open, nor will one be."""
        return self._captions_done

    @property
    def waiting_index(self) -> int | None:
        """The caption window the English goes to next: the oldest handed over and not yet released
        (None: none is waiting, the next English belongs to the caption window still open)."""
        return self._captions[0].index if self._captions else None

    @property
    def complete(self) -> bool:
        """Every English word went out: the transcriber has finished, so has the caption, and every
        caption window got its English. ``finished`` alone means no more passes; held words may still
        wait for their caption windows."""
        return self.finished and self._captions_done and not self._captions

    def _due(self, caption: Window) -> bool:
        if self.finished:
            # the newest caption window may still be followed by another, which its words could be in
            return caption is not self._captions[-1] or self._captions_done
        if self._captions_done and caption is self._captions[-1]:
            return False  # the caption's last window takes every English word left: wait for them all
        end = caption.t1_ms
        if any(_midpoint(w) > end for w in self.windows.open_words):
            return True
        unconfirmed_before = any(_midpoint(w) <= end for w in self._tentative)
        return not unconfirmed_before and self._heard_ms >= end + self.settings.right_context_ms

    def _release(self) -> list[CaptionDraft | Window]:
        released: list[Window] = []
        while self._captions and self._due(self._captions[0]):
            caption = self._captions.popleft()
            last = self.finished and self._captions_done and not self._captions
            words = self.windows.take(None if last else caption.t1_ms)
            released.append(
                Window(caption.index, " ".join(w.text for w in words), caption.t0_ms, caption.t1_ms)
            )
        if self.complete:
            self.windows.take(None)  # placed after every caption window: see the module docstring
        self._closed(released)  # the passes' prompt, and the audio no word is left in
        return list(released)
