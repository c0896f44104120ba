"""From finals to timed cues: the timing every caption writer shares (sans-I/O).

A ``Caption`` is a final as the writers take it (text, window, the window's times, when it arrived).
``CueTimer`` turns the stream of captions into ``Cue``s that never overlap and never have zero length:

* A cue starts at its window's ``t0_ms``; a caption without times (a text-only source that sends
  none) starts at its arrival time, on a clock that puts the first caption at its own start.
* It lasts the window's span (``t1_ms - t0_ms``, the speech) or its reading time, whichever is
  longer: ``len(text) * ms_per_char`` clamped to ``min_ms .. max_ms``.
* A cue is held until the next caption arrives (or ``poll`` finds its time is up, or ``finish``), so
  that when the next one starts earlier than the held cue would end, the held cue is cut short to
  end where the next starts, though never shorter than ``floor_ms``; the next then starts after it.
  Starts never go backwards, so windows whose times overlap or run backwards still give clean cues.
* Captions with no text (an engine failure's empty final) give no cue.

Watermark (for writers that must know when a stretch of the timeline is complete, as HLS segments
do). Finals arrive late: a window's final comes after its speech, and later still when it waited for
an idle timeout or a busy translator. ``watermark(now_ms)`` is the stream time before which no cue
can start any more, and ``CueTimer`` keeps that promise:

* the *lead* is the largest ``start - arrival_ms`` any caption had (the most prompt one maps the
  arrival clock onto stream time); a caption is *late* by how much its own ``start - arrival_ms``
  falls short of the lead;
* the watermark is ``now_ms + lead - late_ms`` (``late_ms``: 10 s by default), but never past the
  held cue's start, never behind the last settled cue's end (no cue starts before that anyway), and
  it never goes back;
* a caption late by at most ``late_ms`` starts at its own time (the rules above); one later than that
  starts at the watermark already given out, so it is shown late by at most its lateness less
  ``late_ms`` — never lost, never before a stretch already written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

DEFAULT_LATE_MS: Final = 10_000  # how much later than the most prompt final a final may come


@dataclass(frozen=True, slots=True)
class Caption:
    """A final for the caption writers; times in ms, ``None`` when the source has none."""

    text: str
    window: int
    t0_ms: int | None = None
    t1_ms: int | None = None
    arrival_ms: int = 0  # on the receiver's own clock (monotonic)


@dataclass(frozen=True, slots=True)
class Cue:
    """A caption on the output timeline: ``start_ms < end_ms``, after the previous cue's end."""

    index: int  # 0, 1, ... in output order
    window: int
    start_ms: int
    end_ms: int
    text: str  # whitespace collapsed to single spaces


@dataclass(frozen=True, slots=True)
class CueTiming:
    min_ms: int = 1200  # a cue is readable for at least this long ...
    ms_per_char: int = 55  # ... or this per character (about 18 characters a second) ...
    max_ms: int = 7000  # ... up to this, unless the speech itself was longer
    floor_ms: int = 600  # a cue cut short by the next one still lasts this long

    def reading_ms(self, text: str) -> int:
        return min(self.max_ms, max(self.min_ms, len(text) * self.ms_per_char))


@dataclass(frozen=True, slots=True)
class _Held:
    window: int
    start_ms: int
    end_ms: int  # the end it wants
    text: str
    arrival_ms: int


def clean_text(text: str) -> str:
    return " ".join(text.split())


class CueTimer:
    """See the module docstring: ``add`` / ``poll`` / ``finish`` each return the cues now settled."""

    def __init__(self, timing: CueTiming | None = None, *, late_ms: int = DEFAULT_LATE_MS) -> None:
        if late_ms < 0:
            raise ValueError(f"late_ms must not be negative, got {late_ms}")
        self.timing = timing or CueTiming()
        self.late_ms = late_ms
        self._held: _Held | None = None
        self._last_end = 0
        self._count = 0
        self._origin: tuple[int, int] | None = None  # (arrival_ms, stream ms) of the first caption
        self._lead: int | None = None  # the largest start - arrival_ms of any caption
        self._watermark: int | None = None  # the latest watermark given out

    def add(self, caption: Caption) -> list[Cue]:
        text = clean_text(caption.text)
        if not text:
            return []
        start = self._start(caption)
        span = 0
        if caption.t0_ms is not None and caption.t1_ms is not None:
            span = max(0, caption.t1_ms - caption.t0_ms)
        out: list[Cue] = []
        start = max(start, self._last_end, 0 if self._watermark is None else self._watermark)
        if self._held is not None:
            held = self._held
            end = max(min(held.end_ms, start), held.start_ms + self.timing.floor_ms)
            out.append(self._settle(held, end))
            start = max(start, end)
        self._held = _Held(
            caption.window, start, start + max(span, self.timing.reading_ms(text)), text, caption.arrival_ms
        )
        return out

    def poll(self, now_ms: int) -> list[Cue]:
        """Settle the held cue once as much time has passed since it arrived as it wants to last."""
        held = self._held
        if held is None or now_ms - held.arrival_ms < held.end_ms - held.start_ms:
            return []
        return [self._settle(held, held.end_ms)]

    def finish(self) -> list[Cue]:
        held = self._held
        return [] if held is None else [self._settle(held, held.end_ms)]

    def watermark(self, now_ms: int) -> int | None:
        """Stream time before which no cue will start (see the module docstring), at ``now_ms`` on the
        arrival clock; ``None`` before any caption. Later captions are held to it."""
        if self._lead is None:
            return None
        mark = max(self._last_end, now_ms + self._lead - self.late_ms)
        if self._held is not None:
            mark = min(mark, self._held.start_ms)
        self._watermark = mark if self._watermark is None else max(mark, self._watermark)
        return self._watermark

    def _start(self, caption: Caption) -> int:
        if self._origin is None:
            self._origin = (caption.arrival_ms, caption.t0_ms or 0)
        if caption.t0_ms is not None:
            start = caption.t0_ms
        else:
            arrival0, stream0 = self._origin
            start = stream0 + max(0, caption.arrival_ms - arrival0)
        lead = start - caption.arrival_ms
        self._lead = lead if self._lead is None else max(self._lead, lead)
        return start

    def _settle(self, held: _Held, end_ms: int) -> Cue:
        self._held = None
        self._last_end = end_ms
        cue = Cue(self._count, held.window, held.start_ms, end_ms, held.text)
        self._count += 1
        return cue


_BREAK = re.compile(r"\S+")


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` characters, broken at spaces; a longer word is split."""
    lines: list[str] = []
    line = ""
    for word in _BREAK.findall(text):
        while len(word) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= width:
            line = f"{line} {word}"
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines
