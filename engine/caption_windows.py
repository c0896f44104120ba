"""How confirmed caption words become windows, and what the open window's draft shows.

This module owns the closing rules every live transcriber shares, whatever its recogniser: final words
gather into the open window, which closes at a sentence end, at a clause end once it is long enough, at
the word budget, once its words span ``max_window_ms`` (every word waits for its window's end, so the
span bounds that wait), and whenever the transcriber says so (a pause, the end of the stream). While
the stream's captions are ``caption_only`` (no translation track is watched, so no translation suffers
from short windows), the span is ``caption_only_window_ms`` where the rules set one. A draft shows the
open window: its final words so far, then the newest unconfirmed ones. Sans-I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.types import Window, Word
from engine.windows import ends_sentence

CLAUSE_ENDS = (",", ";", ":", "—", "\uff0c", "\u3001", "\uff1b", "\uff1a")
CLOSING_QUOTES = "\"'\u201d\u2019)»"


@dataclass(frozen=True, slots=True)
class CaptionDraft:
    """The open window as it stands: final words so far plus the newest unconfirmed ones."""

    text: str
    t0_ms: int
    t1_ms: int


@dataclass(frozen=True, slots=True)
class WindowRules:
    """When an open caption window closes by itself (see the module docstring)."""

    max_window_words: int = 16
    max_window_ms: int = 2_500
    clause_window_words: int = 6  # a window this long also closes at a clause boundary (, ; :)
    caption_only_window_ms: int | None = None  # the span while captions are caption-only (None: the same)


class CaptionWindows:
    """The open window's final words; ``add`` and ``close`` return the windows that closed."""

    def __init__(self, rules: WindowRules) -> None:
        self.rules = rules
        self.caption_only = False  # no translation track is watched (module docstring)
        self.open_words: list[Word] = []
        self._last_draft = ""

    def add(self, words: list[Word] | tuple[Word, ...]) -> list[Window]:
        """Confirmed words, in order: the windows they complete."""
        self.open_words.extend(words)
        windows: list[Window] = []
        while True:
            cut = next((i + 1 for i, w in enumerate(self.open_words) if self._closes(i, w.text)), None)
            if cut is None and len(self.open_words) >= self.rules.max_window_words:
                cut = self.rules.max_window_words
            if cut is None and self._span_ms() >= self.max_span_ms:
                cut = len(self.open_words)  # everything confirmed so far: no word waits for the next
            if cut is None:
                return windows
            windows.extend(self.close(cut))

    @property
    def max_span_ms(self) -> int:
        """The span at which the open window closes now."""
        if self.caption_only and self.rules.caption_only_window_ms is not None:
            return self.rules.caption_only_window_ms
        return self.rules.max_window_ms

    def close(self, count: int | None = None) -> list[Window]:
        """Close the open window now, on its first ``count`` words (default: all of them)."""
        cut = len(self.open_words) if count is None else count
        words, self.open_words = self.open_words[:cut], self.open_words[cut:]
        if not words:
            return []
        self._last_draft = ""
        text = " ".join(w.text for w in words)
        return [Window(index=0, source=text, t0_ms=words[0].t0_ms, t1_ms=words[-1].t1_ms)]

    def draft(self, tentative: tuple[Word, ...] | list[Word]) -> list[CaptionDraft]:
        """The open window's draft with ``tentative`` words after its final ones, if it changed."""
        words = [*self.open_words, *tentative]
        text = " ".join(w.text for w in words)
        if not words or text == self._last_draft:
            return []
        self._last_draft = text
        return [CaptionDraft(text=text, t0_ms=words[0].t0_ms, t1_ms=words[-1].t1_ms)]

    def _span_ms(self) -> int:
        return self.open_words[-1].t1_ms - self.open_words[0].t0_ms if self.open_words else 0

    def _closes(self, index: int, text: str) -> bool:
        if ends_sentence(text):
            return True
        clause = text.rstrip(CLOSING_QUOTES).endswith(CLAUSE_ENDS)
        return clause and index + 1 >= self.rules.clause_window_words
