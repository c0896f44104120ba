"""SubRip (``.srt``) output (sans-I/O): one numbered block per cue, appendable as finals arrive.

Blocks are numbered from 1, times are ``HH:MM:SS,mmm``, text is wrapped at ``line_chars`` (42) and
never holds a blank line (which would end the block early). SubRip has no escaping: ``<`` and ``>``
are left as they are (players may read them as tags).
"""

from __future__ import annotations

from stream.captions.cues import Cue, wrap


def srt_time(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d},{millis:03d}"


class SrtWriter:
    """``cue()`` gives the next numbered block."""

    def __init__(self, *, line_chars: int = 42) -> None:
        self.line_chars = line_chars
        self._number = 0

    def cue(self, cue: Cue) -> str:
        self._number += 1
        text = "\n".join(wrap(cue.text, self.line_chars))
        return f"{self._number}\n{srt_time(cue.start_ms)} --> {srt_time(cue.end_ms)}\n{text}\n\n"
