"""WebVTT output (sans-I/O): a live file that grows cue by cue, and HLS-style segments with a playlist.

``WebVttWriter`` gives the ``WEBVTT`` header once and then one block per cue, so a file can be
appended to as finals arrive. ``HlsSegmenter`` cuts the timeline into fixed segments of
``segment_ms``: each is a complete WebVTT file whose header carries
``X-TIMESTAMP-MAP=MPEGTS:<mpegts>,LOCAL:00:00:00.000`` (cue times are the stream's milliseconds;
``mpegts`` is the 90 kHz presentation time of the video at stream time 0), holding every cue that
overlaps it (a cue across a boundary is repeated in both segments, as HLS expects). A segment is
finished, and never changes again, once nothing can start in it any more: a cue starts after its end
(cues come in start order), ``close_until(t)`` says nothing will start before ``t`` (the cue timer's
watermark, stream/captions/cues.py), or ``finish``. A cue that would start in a finished segment is
refused (``ValueError``): its segment is already out. ``playlist`` is the media playlist of the
segments finished so far (``#EXT-X-ENDLIST`` once finished); every ``#EXTINF`` is the segment length,
and ``#EXT-X-TARGETDURATION`` that length rounded up to whole seconds.

Cue text is wrapped at ``line_chars`` (42, the usual subtitle line), then escaped (``&``, ``<``,
``>``): the width counts what a viewer reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stream.captions.cues import Cue, wrap

DEFAULT_MPEGTS = 900_000  # 10 s at 90 kHz: where many encoders start their video timestamps


def vtt_time(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cue_block(cue: Cue, *, line_chars: int = 42) -> str:
    lines = [escape(line) for line in wrap(cue.text, line_chars)]  # wrap the text, then escape
    return (
        f"window-{cue.window}\n{vtt_time(cue.start_ms)} --> {vtt_time(cue.end_ms)}\n"
        + "\n".join(lines)
        + "\n\n"
    )


class WebVttWriter:
    """Header once, then a block per cue: text to append to a growing ``.vtt`` file."""

    def __init__(self, *, line_chars: int = 42) -> None:
        self.line_chars = line_chars

    def header(self) -> str:
        return "WEBVTT\n\n"

    def cue(self, cue: Cue) -> str:
        return cue_block(cue, line_chars=self.line_chars)


@dataclass(frozen=True, slots=True)
class Segment:
    sequence: int  # media sequence number: the segment's position on the grid of segment_ms
    start_ms: int
    end_ms: int
    name: str
    text: str


class HlsSegmenter:
    """See the module docstring."""

    def __init__(
        self,
        segment_ms: int = 6000,
        *,
        mpegts: int = DEFAULT_MPEGTS,
        name_pattern: str = "captions{:05d}.vtt",
        line_chars: int = 42,
    ) -> None:
        if segment_ms < 1000:
            raise ValueError(f"segment_ms must be at least 1000, got {segment_ms}")
        self.segment_ms = segment_ms
        self.mpegts = mpegts
        self.name_pattern = name_pattern
        self.line_chars = line_chars
        self.segments: list[Segment] = []
        self._first: int | None = None  # sequence of the first segment
        self._next = 0  # sequence of the first segment not yet finished
        self._cues: list[Cue] = []  # cues that may still touch unfinished segments
        self._finished = False

    def add(self, cue: Cue) -> list[Segment]:
        if self._first is None:
            self._first = self._next = cue.start_ms // self.segment_ms
        if cue.start_ms < self._next * self.segment_ms:
            raise ValueError(
                f"cue {cue.index} starts at {cue.start_ms} ms, in a segment already finished"
                f" (up to {self._next * self.segment_ms} ms)"
            )
        done = self.close_until(cue.start_ms)
        self._cues.append(cue)
        return done

    def close_until(self, t_ms: int) -> list[Segment]:
        """Finish every segment that ends at or before ``t_ms`` (no cue can start in it any more)."""
        done: list[Segment] = []
        if self._first is None:
            return done
        while (self._next + 1) * self.segment_ms <= t_ms:
            done.append(self._close_next())
        return done

    def finish(self) -> list[Segment]:
        """Finish the segments up to the last cue's end."""
        if self._finished:
            return []
        self._finished = True
        if not self._cues:
            return []
        last_end = max(cue.end_ms for cue in self._cues)
        return self.close_until(math.ceil(last_end / self.segment_ms) * self.segment_ms)

    def _close_next(self) -> Segment:
        sequence = self._next
        start, end = sequence * self.segment_ms, (sequence + 1) * self.segment_ms
        inside = [cue for cue in self._cues if cue.start_ms < end and cue.end_ms > start]
        header = f"WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:{self.mpegts},LOCAL:00:00:00.000\n\n"
        text = header + "".join(cue_block(cue, line_chars=self.line_chars) for cue in inside)
        segment = Segment(sequence, start, end, self.name_pattern.format(sequence), text)
        self.segments.append(segment)
        self._cues = [cue for cue in self._cues if cue.end_ms > end]
        self._next += 1
        return segment

    def playlist(self) -> str:
        target = math.ceil(self.segment_ms / 1000)
        first = self.segments[0].sequence if self.segments else 0
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{target}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
            "#EXT-X-PLAYLIST-TYPE:EVENT",
        ]
        for segment in self.segments:
            lines += [f"#EXTINF:{(segment.end_ms - segment.start_ms) / 1000:.3f},", segment.name]
        if self._finished:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"
