"""Cutting a live stream of source text into ``Window``s: sentence boundaries, token budget, idle timeout.

This module owns the rules for where one window ends and the next begins. It is sans-I/O: text and
time come in through ``TextWindower.push``/``poll``/``flush`` and windows come out; no clock is read.
Complete sentences leave at once (one sentence per window); an incomplete tail waits for more text,
for ``flush``, or for ``idle_ms`` without new text. A window never exceeds ``max_tokens`` unless a
single word alone does: long sentences are cut at clauses, then words, then (for scripts written
without spaces) characters.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from engine.types import Segment, Window

ABBREVIATIONS: tuple[str, ...] = (
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc",
    "e.g", "i.e", "cf", "a.m", "p.m", "u.s", "no",
)  # fmt: skip
"""Words (lower case, without the final dot) after which a ``.`` does not end a sentence. ``no`` is
one only before a number ("No. 5") or at the end of the buffered text, where the next word is unknown."""

_CLOSERS = "\"'”’)]»」』）"  # noqa: RUF001
_OPENERS = "\"'“‘([«¿¡「『（"  # noqa: RUF001
_GLUE = frozenset(",.;:!?…%)]}»”’，。、；：！？）」』】")  # noqa: RUF001
"""Characters that attach to the text before them: a segment starting with one gets no joining space."""

_WS = re.compile(r"\s+")
_ENDER = re.compile(rf"(?:(?P<latin>[.!?…]+)|[。！？]+)[{re.escape(_CLOSERS)}]*")  # noqa: RUF001
_CLAUSE = re.compile(rf"[,;:][{re.escape(_CLOSERS)}]*(?=\s)|\s[—–](?=\s)|[，、；：][{re.escape(_CLOSERS)}]*")  # noqa: RUF001
_INITIALS = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")
_SPACELESS = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u2e80-\u2fdf\u3000-\u9fff\uf900-\ufaff\uff00-\uffef"
    "\U00020000-\U0002ffff]"
)
"""Scripts written without spaces between words (CJK, kana, Thai, Lao, Khmer, Myanmar)."""

Span = tuple[int, int]
"""A half-open ``[start, end)`` range of the buffered text, without surrounding whitespace."""


def count_words(text: str) -> int:
    """The default token counter: whitespace-separated words."""
    return len(text.split())


@dataclass(frozen=True, slots=True)
class _Budget:
    count: Callable[[str], int]
    max_tokens: int

    def fits(self, text: str) -> bool:
        return self.count(text) <= self.max_tokens


def _is_spaceless(char: str) -> bool:
    return _SPACELESS.match(char) is not None


def _separator(left: str, right: str) -> str:
    """What goes between buffered text ``left`` and new normalised text ``right`` (non-blank)."""
    if not left or left.endswith(" "):
        return ""
    if right.startswith(" "):
        return " "
    if right[0] in _GLUE or (_is_spaceless(left[-1]) and _is_spaceless(right[0])):
        return ""
    return " "


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the single ``.`` at ``dot`` closes an abbreviation or an initial rather than a sentence."""
    word = text[text.rfind(" ", 0, dot) + 1 : dot].lstrip(_OPENERS).lower()
    if word == "no":
        following = text[dot + 1 :].lstrip(_CLOSERS + " ")[:1]
        return not following or following.isdigit()
    return bool(word) and (word in ABBREVIATIONS or _INITIALS.fullmatch(word) is not None)


def _is_sentence_end(text: str, match: re.Match[str]) -> bool:
    latin = match.group("latin")
    if latin is None:
        return True
    after = text[match.end() : match.end() + 1]
    if after and not after.isspace():
        return False
    return latin != "." or not _is_abbreviation(text, match.start())


def ends_sentence(word: str) -> bool:
    """Whether text ending in ``word`` (e.g. one recognised word) is a complete sentence, by the same
    rules as text windows: ``Mr.``, ``e.g.`` and initials do not end one; closing quotes may follow."""
    ends = _sentence_ends(word)
    return bool(ends) and ends[-1] == len(word)


def _sentence_ends(text: str) -> list[int]:
    """Offsets just past each complete sentence's ender (and closing quotes/brackets) in ``text``."""
    return [m.end() for m in _ENDER.finditer(text) if _is_sentence_end(text, m)]


def _clause_cuts(text: str) -> list[int]:
    return [m.end() for m in _CLAUSE.finditer(text) if m.end() < len(text)]


def _word_cuts(text: str) -> list[int]:
    return [m.start() for m in _WS.finditer(text)]


def _char_cut_ok(before: str, after: str) -> bool:
    if before.isspace() or after.isspace() or before in _OPENERS or after in _CLOSERS or after in _GLUE:
        return False
    if unicodedata.category(after).startswith("M"):
        return False
    return _is_spaceless(before) or _is_spaceless(after)


def _char_cuts(text: str) -> list[int]:
    return [i for i in range(1, len(text)) if _char_cut_ok(text[i - 1], text[i])]


_LEVELS: tuple[Callable[[str], list[int]], ...] = (_clause_cuts, _word_cuts, _char_cuts)
"""Where a too-long piece may be cut, coarsest first. Each takes stripped text, returns inner offsets."""


def _strip_span(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _pieces(text: str, span: Span, cuts: list[int]) -> list[Span]:
    """``span`` cut at ``cuts`` (ascending, inside it), each piece stripped, blank pieces dropped."""
    bounds = [span[0], *cuts, span[1]]
    return [piece for a, b in pairwise(bounds) if (piece := _strip_span(text, a, b)) is not None]


def _cuts(text: str, span: Span, level: int) -> list[int]:
    return [span[0] + cut for cut in _LEVELS[level](text[span[0] : span[1]])]


def _balanced(text: str, pieces: list[Span], budget: _Budget) -> list[Span]:
    """Group consecutive ``pieces`` (each within budget) into the fewest, most even windows that fit."""
    n = len(pieces)
    best: list[tuple[int, int]] = [(0, 0)] + [(n + 1, 0)] * n
    back = [0] * (n + 1)
    for i in range(1, n + 1):
        for j in range(i - 1, -1, -1):
            tokens = budget.count(text[pieces[j][0] : pieces[i - 1][1]])
            if tokens > budget.max_tokens and j < i - 1:
                break
            cost = (best[j][0] + 1, best[j][1] + tokens * tokens)
            if cost < best[i]:
                best[i], back[i] = cost, j
    groups: list[Span] = []
    i = n
    while i > 0:
        groups.append((pieces[back[i]][0], pieces[i - 1][1]))
        i = back[i]
    return groups[::-1]


def _split_span(text: str, span: Span, budget: _Budget, level: int = 0) -> list[Span]:
    """Cut ``span`` into windows within budget: at clauses, then words, then characters."""
    if budget.fits(text[span[0] : span[1]]) or level >= len(_LEVELS):
        return [span]
    pieces = _pieces(text, span, _cuts(text, span, level))
    if len(pieces) < 2:
        return _split_span(text, span, budget, level + 1)
    out: list[Span] = []
    run: list[Span] = []
    for piece in pieces:
        if budget.fits(text[piece[0] : piece[1]]):
            run.append(piece)
            continue
        out += _balanced(text, run, budget)
        run = []
        out += _split_span(text, piece, budget, level + 1)
    return out + _balanced(text, run, budget)


def _leading_cut(text: str, span: Span, budget: _Budget) -> int | None:
    """Where to cut an over-budget tail: after its longest fitting prefix at the coarsest level that has
    one; failing that, after its first word (which alone exceeds the budget); None if it is one word."""
    for level in range(len(_LEVELS)):
        best: int | None = None
        for cut in _cuts(text, span, level):
            if not budget.fits(text[span[0] : cut].rstrip()):
                break
            best = cut
        if best is not None:
            return best
    return min((cut for level in range(len(_LEVELS)) for cut in _cuts(text, span, level)), default=None)


def _merge_short(text: str, spans: list[Span], budget: _Budget, min_tokens: int) -> list[Span]:
    """Join each sentence under ``min_tokens`` to the next one, while the result stays within budget."""
    out: list[Span] = []
    short: Span | None = None
    for span in spans:
        if short is not None:
            merged = (short[0], span[1])
            if budget.fits(text[merged[0] : merged[1]]):
                span = merged
            else:
                out.append(short)
        short = span if budget.count(text[span[0] : span[1]]) < min_tokens else None
        if short is None:
            out.append(span)
    if short is not None:
        out.append(short)
    return out


class TextWindower:
    """Turns pushed ``Segment``s into numbered ``Window``s for one stream.

    Callers must know: ``push`` first emits a tail that was already idle for ``idle_ms`` at ``now_ms``
    (as ``poll`` would have), so results do not depend on how often ``poll`` is called; segments join
    with a space unless whitespace is already there, the new one starts with closing punctuation, or
    both sides are CJK (no space between CJK segments); windows are cut at whitespace, except within
    CJK text.
    """

    def __init__(
        self,
        *,
        count_tokens: Callable[[str], int] = count_words,
        max_tokens: int = 48,
        min_tokens: int = 1,
        idle_ms: int = 1500,
        start_index: int = 0,
    ) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if min_tokens < 0:
            raise ValueError(f"min_tokens must be >= 0, got {min_tokens}")
        if idle_ms < 0:
            raise ValueError(f"idle_ms must be >= 0, got {idle_ms}")
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index}")
        self._budget = _Budget(count_tokens, max_tokens)
        self._min_tokens = min_tokens
        self._idle_ms = idle_ms
        self._next_index = start_index
        self._buf = ""  # normalised: single spaces, no leading space, at most one trailing space
        self._marks: list[tuple[int, int]] = []  # (offset of a segment's first char in _buf, its t_ms)
        self._last_text_ms = 0

    @property
    def pending_text(self) -> str:
        """The buffered text not yet emitted."""
        return self._buf.rstrip()

    @property
    def next_deadline_ms(self) -> int | None:
        """When ``poll`` would emit the buffered tail; None if nothing is buffered."""
        return self._last_text_ms + self._idle_ms if self._buf else None

    def push(self, segment: Segment, now_ms: int) -> list[Window]:
        """Add a segment; returns the windows it completed (after any tail that had gone idle)."""
        windows = self.poll(now_ms)
        if self._append(segment.text, now_ms if segment.t_ms is None else segment.t_ms):
            self._last_text_ms = now_ms
        windows += self._cut_sentences(final=False)
        windows += self._cut_overflow()
        return windows

    def poll(self, now_ms: int) -> list[Window]:
        """Emit the buffered tail if no text arrived for ``idle_ms``."""
        deadline = self.next_deadline_ms
        if deadline is None or now_ms < deadline:
            return []
        return self._cut_sentences(final=True)

    def flush(self, now_ms: int) -> list[Window]:
        """Emit everything buffered, complete or not."""
        return self._cut_sentences(final=True)

    def _append(self, raw: str, t_ms: int) -> bool:
        """Join ``raw`` to the buffer; returns whether it carried any non-whitespace text."""
        text = _WS.sub(" ", raw)
        core = text.lstrip()
        if not core:
            if text and self._buf and not self._buf.endswith(" "):
                self._buf += " "
            return False
        sep = _separator(self._buf, text)
        self._marks.append((len(self._buf) + len(sep), t_ms))
        self._buf += sep + core
        return True

    def _cut_sentences(self, *, final: bool) -> list[Window]:
        """Emit the complete sentences in the buffer (with ``final``, the incomplete tail as well)."""
        text = self._buf
        ends = _sentence_ends(text)
        tail_end = len(text.rstrip())
        if final and tail_end and (not ends or ends[-1] < tail_end):
            ends.append(tail_end)
        if not ends:
            return []
        sentences = _merge_short(
            text, _pieces(text, (0, ends[-1]), ends[:-1]), self._budget, self._min_tokens
        )
        windows = [self._window(part) for span in sentences for part in _split_span(text, span, self._budget)]
        self._consume(ends[-1])
        return windows

    def _cut_overflow(self) -> list[Window]:
        """Emit the leading part of an incomplete tail that is already over budget."""
        windows: list[Window] = []
        while (span := _strip_span(self._buf, 0, len(self._buf))) is not None:
            if self._budget.fits(self._buf[span[0] : span[1]]):
                break
            cut = _leading_cut(self._buf, span, self._budget)
            head = None if cut is None else _strip_span(self._buf, 0, cut)
            if cut is None or head is None:
                break
            windows.append(self._window(head))
            self._consume(cut)
        return windows

    def _window(self, span: Span) -> Window:
        offsets = [offset for offset, _ in self._marks]
        first = bisect_right(offsets, span[0]) - 1
        last = bisect_left(offsets, span[1]) - 1
        times = [t for _, t in self._marks[first : last + 1]]
        window = Window(self._next_index, self._buf[span[0] : span[1]], times[0], max(times))
        self._next_index += 1
        return window

    def _consume(self, pos: int) -> None:
        """Drop the buffer up to ``pos`` (and the whitespace after it), keeping segment times aligned."""
        rest = self._buf[pos:].lstrip()
        if not rest:
            self._buf, self._marks = "", []
            return
        shift = len(self._buf) - len(rest)
        first = bisect_right([offset for offset, _ in self._marks], shift) - 1
        self._marks = [(max(offset - shift, 0), t) for offset, t in self._marks[first:]]
        self._buf = rest
