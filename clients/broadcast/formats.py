"""One caption format end to end, without I/O: captions in, file text (and HLS segments) out.

``CaptionWriter`` strings the pieces together: ``CueTimer`` (stream/captions/cues.py) turns finals
into cues, then the format writes them: WebVTT (``vtt``, or HLS segments with ``hls_segment_ms``),
SubRip (``srt``), CEA-608 screens as text (``608``, for reading and diffing) or Scenarist SCC
(``scc``). ``start()`` gives the file's header, ``add``/``poll``/``finish`` what to append after it.
With HLS, ``hls_late_ms`` is how much later than the most prompt final a final may arrive and still
start at its own time (the cue timer's watermark); segments are finished once it has passed them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from clients.broadcast.cea608 import Cea608Layout, Mode, Screen, render
from clients.broadcast.scc import SccWriter
from stream.captions.cues import DEFAULT_LATE_MS, Caption, Cue, CueTimer, CueTiming
from stream.captions.srt import SrtWriter
from stream.captions.webvtt import DEFAULT_MPEGTS, HlsSegmenter, Segment, WebVttWriter

FORMATS: Final = ("vtt", "srt", "608", "scc")


@dataclass(slots=True)
class Output:
    """What to append to the caption file, and HLS segments finished (with ``hls_segment_ms``)."""

    text: str = ""
    segments: list[Segment] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        self.text += other.text
        self.segments += other.segments


class CaptionWriter:
    """See the module docstring."""

    def __init__(
        self,
        fmt: str,
        *,
        mode: Mode | str = Mode.ROLL_UP,
        rows: int = 2,
        hls_segment_ms: int | None = None,
        hls_late_ms: int = DEFAULT_LATE_MS,
        mpegts: int = DEFAULT_MPEGTS,
        timing: CueTiming | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        if hls_segment_ms is not None and fmt != "vtt":
            raise ValueError("HLS segments are WebVTT: use format 'vtt'")
        self.format = fmt
        self.timer = CueTimer(timing, late_ms=hls_late_ms)
        self.vtt = WebVttWriter()
        self.srt = SrtWriter()
        self.layout = Cea608Layout(mode, rows)
        self.scc = SccWriter(mode, rows)
        self.hls = HlsSegmenter(hls_segment_ms, mpegts=mpegts) if hls_segment_ms is not None else None
        self.cues: list[Cue] = []

    def start(self) -> str:
        if self.hls is not None:
            return ""  # every segment is a whole WebVTT file
        if self.format == "vtt":
            return self.vtt.header()
        return self.scc.header() if self.format == "scc" else ""

    def add(self, caption: Caption) -> Output:
        return self._cues(self.timer.add(caption))

    def poll(self, now_ms: int) -> Output:
        """Call now and then with the arrival clock: settles a cue whose time is up, and finishes the
        HLS segments the cue timer's watermark has passed."""
        out = self._cues(self.timer.poll(now_ms))
        if self.hls is not None:
            mark = self.timer.watermark(now_ms)
            if mark is not None:
                out.segments += self.hls.close_until(mark)
        return out

    def finish(self) -> Output:
        out = self._cues(self.timer.finish())
        if self.format in ("608", "scc"):
            out.text += self._screens(self.layout.finish())
        if self.hls is not None:
            out.segments += self.hls.finish()
        return out

    def _cues(self, cues: list[Cue]) -> Output:
        out = Output()
        for cue in cues:
            self.cues.append(cue)
            if self.hls is not None:
                out.segments += self.hls.add(cue)
            elif self.format == "vtt":
                out.text += self.vtt.cue(cue)
            elif self.format == "srt":
                out.text += self.srt.cue(cue)
            else:
                out.text += self._screens(self.layout.add(cue))
        return out

    def _screens(self, screens: list[Screen]) -> str:
        if self.format == "scc":
            return "".join(self.scc.screen(screen) for screen in screens)
        return "".join(render(screen) for screen in screens)
