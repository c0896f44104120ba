"""What ``livecanvas send`` writes for each message, progress step and at the end (sans-I/O).

Three views share one interface: ``message(message, at_ns)``, ``progress(done, total, unit)`` and
``close()`` each return the text to write (possibly empty), so they are tested without a terminal.

* ``LiveView``, for a terminal: finals scroll up as permanent lines; under them a *live area*, redrawn
  in place with ANSI escapes (``CR``, erase line, cursor up), holds the newest draft of each open
  window (dim) and a progress bar. When a window's final arrives its draft leaves the live area and
  the final is printed above it: the draft is seen being overwritten by its final. Live lines are cut
  to the terminal's width (wide characters count two cells) so that redrawing never leaves debris.
* ``LogView``, for pipes and files: one plain line per message (``describe``), drafts included.
* ``JsonView``: one JSON object per message (``--json``).
"""

from __future__ import annotations

import json
import time
import unicodedata
from typing import Protocol

from stream.wire.messages import Bye, DraftMsg, ErrorMsg, FinalMsg, ServerMessage, StatsMsg

CLEAR_LINE = "\x1b[2K"
CURSOR_UP = "\x1b[1A"
DIM = "\x1b[2m"
BOLD = "\x1b[1m"
RESET = "\x1b[0m"
MAX_LIVE_DRAFTS = 6  # newest drafts kept in the live area; older open windows wait off screen
BAR_CELLS = 24


class View(Protocol):
    def message(self, message: ServerMessage, at_ns: int) -> str: ...

    def progress(self, done: float, total: float, unit: str) -> str: ...

    def close(self) -> str: ...


def printable(text: str) -> str:
    """Text safe for one terminal line: control characters shown as a middle dot."""
    return "".join(ch if ch.isprintable() else "\u00b7" for ch in text)


def describe(message: ServerMessage, started_ns: int, at_ns: int | None = None) -> str:
    """One line for ``message``: when it arrived (ms since ``started_ns``), what it is, its latency."""
    at = ((time.monotonic_ns() if at_ns is None else at_ns) - started_ns) // 1_000_000
    if isinstance(message, DraftMsg):
        head = f"[{at:6d} ms] draft {message.track:>7} #{message.window} r{message.rev}"
        return f"{head} (+{message.latency_ms} ms)  {printable(message.text)}"
    if isinstance(message, FinalMsg):
        text = printable(message.text) if message.error is None else f"<error: {message.error}>"
        return (
            f"[{at:6d} ms] FINAL {message.track:>7} #{message.window}    (+{message.latency_ms} ms)  {text}"
        )
    if isinstance(message, ErrorMsg):
        return f"[{at:6d} ms] error {message.code}: {message.message}"
    return f"[{at:6d} ms] {message.TYPE}"


def cells(text: str) -> int:
    """Terminal cells ``text`` takes: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def fit_tail(text: str, width: int) -> str:
    """``text`` if it fits in ``width`` cells, else its end behind an ellipsis: the newest words."""
    if cells(text) <= width:
        return text
    kept: list[str] = []
    used = 1  # the ellipsis
    for ch in reversed(text):
        used += cells(ch)
        if used > width:
            break
        kept.append(ch)
    return "\u2026" + "".join(reversed(kept))


def bar(done: float, total: float, unit: str, cells_wide: int = BAR_CELLS) -> str:
    """``[#########...........]  42%  12.6/30.0 s`` (``unit`` "s" shows seconds, others counts)."""
    fraction = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
    filled = round(fraction * cells_wide)
    amount = f"{done:.1f}/{total:.1f} s" if unit == "s" else f"{done:g}/{total:g} {unit}"
    return f"[{'#' * filled}{'.' * (cells_wide - filled)}] {fraction * 100:3.0f}%  {amount}"


class LiveView:
    """See the module docstring."""

    def __init__(self, *, width: int = 80, color: bool = True) -> None:
        self.width = max(20, width)
        self.color = color
        self._drafts: dict[tuple[str, int], DraftMsg] = {}
        self._progress = ""
        self._drawn = 0  # lines of the live area on screen now

    def message(self, message: ServerMessage, at_ns: int) -> str:
        if isinstance(message, DraftMsg):
            self._drafts[(message.track, message.window)] = message
            return self._redraw([])
        if isinstance(message, FinalMsg):
            for key in [k for k in self._drafts if k[0] == message.track and k[1] <= message.window]:
                del self._drafts[key]  # its own draft, and any of an earlier window left behind
            return self._redraw([self._final(message)])
        if isinstance(message, ErrorMsg):
            return self._redraw([self._style(f"error {message.code}: {message.message}", BOLD)])
        if isinstance(message, Bye):
            return self._redraw([self._style(f"bye ({message.reason})", DIM)])
        if isinstance(message, StatsMsg):
            return ""
        return self._redraw([self._style(message.TYPE, DIM)])

    def progress(self, done: float, total: float, unit: str) -> str:
        room = self.width - 1
        line = bar(done, total, unit, cells_wide=max(5, min(BAR_CELLS, room - 26)))[:room]
        if line == self._progress:
            return ""
        self._progress = line
        return self._redraw([])

    def close(self) -> str:
        """Clear the live area; the cursor is left at the start of an empty line."""
        out = self._clear()
        self._drawn = 0
        return out

    # -- drawing -----------------------------------------------------------------------------------
    def _style(self, text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if self.color else text

    def _final(self, message: FinalMsg) -> str:
        text = printable(message.text) if message.error is None else f"<error: {message.error}>"
        head = f"{message.track:>7} #{message.window:<3}"
        return f"{self._style(head, BOLD)} {text}  {self._style(f'+{message.latency_ms} ms', DIM)}"

    def _live_lines(self) -> list[str]:
        room = self.width - 1  # never the last column: some terminals wrap there
        lines = []
        for (track, window), draft in sorted(self._drafts.items(), key=lambda item: item[1].seq)[
            -MAX_LIVE_DRAFTS:
        ]:
            head = f"{track:>7} #{window:<3} "
            text = fit_tail(printable(draft.text) + " \u2026", max(1, room - cells(head)))
            lines.append(self._style(head + text, DIM))
        if self._progress:
            lines.append(self._progress)
        return lines

    def _clear(self) -> str:
        if not self._drawn:
            return ""
        return "\r" + CLEAR_LINE + (CURSOR_UP + CLEAR_LINE) * (self._drawn - 1)

    def _redraw(self, permanent: list[str]) -> str:
        live = self._live_lines()
        out = self._clear() + "".join(f"{line}\n" for line in permanent) + "\n".join(live)
        self._drawn = len(live)
        return out


class LogView:
    """One ``describe`` line per message; no progress, nothing to clear."""

    def __init__(self, started_ns: int) -> None:
        self.started_ns = started_ns

    def message(self, message: ServerMessage, at_ns: int) -> str:
        return describe(message, self.started_ns, at_ns) + "\n"

    def progress(self, done: float, total: float, unit: str) -> str:
        return ""

    def close(self) -> str:
        return ""


class JsonView:
    """Every message as one line of JSON, as on the wire."""

    def message(self, message: ServerMessage, at_ns: int) -> str:
        return json.dumps(message.to_wire("json")) + "\n"

    def progress(self, done: float, total: float, unit: str) -> str:
        return ""

    def close(self) -> str:
        return ""
