"""What the HTTP side shows of the finals: the stream list and a track's captions as WebVTT, SRT or JSON.

Both are read from the hub's ``FinalLog`` (stream/final_log.py), the one store of finals, and the
``StreamHub``, which knows who is on a stream now. ``stream_list`` gives live streams and those the hub
has forgotten but the log remembers; ``render(hub, stream, track, fmt)`` gives a track of the stream's
current transcript, timed by the caption writers' ``CueTimer`` (stream/captions/cues.py) for WebVTT and
SRT. Every row and document carries the stream's *epoch* (docs/overlay.md). Sans-I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, Literal

from engine.types import CAPTION_TRACK
from stream.captions.cues import Caption, Cue, CueTimer
from stream.captions.srt import SrtWriter
from stream.captions.webvtt import WebVttWriter
from stream.final_log import KeptFinal, Transcript
from stream.hub import StreamHub

Format = Literal["vtt", "srt", "json"]
FORMATS: Final[tuple[Format, ...]] = ("vtt", "srt", "json")


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One row of the stream list."""

    stream: str
    epoch: str
    live: bool  # the hub has the stream now
    publishing: bool  # ... and a publisher is connected
    viewers: int
    tracks: tuple[str, ...]
    finals: dict[str, int]

    def to_json(self) -> dict[str, object]:
        return {
            "stream": self.stream,
            "epoch": self.epoch,
            "live": self.live,
            "publishing": self.publishing,
            "viewers": self.viewers,
            "tracks": list(self.tracks),
            "finals": self.finals,
        }


def stream_list(hub: StreamHub) -> list[StreamInfo]:
    """Live streams first (by name), then remembered ones, newest first."""
    rows: list[StreamInfo] = []
    for name in sorted(hub.streams):
        state = hub.streams[name]
        transcript = hub.finals.transcript(name)
        assert transcript is not None, "the hub begins an epoch for every stream it has"
        rows.append(
            StreamInfo(
                stream=name,
                epoch=transcript.epoch,
                live=True,
                publishing=state.publisher is not None,
                viewers=sum(viewer is not state.publisher for viewer in state.viewers),
                tracks=_ordered({CAPTION_TRACK} | state.target_tracks() | set(transcript.tracks)),
                finals=_counts(transcript),
            )
        )
    for transcript in hub.finals.remembered():
        rows.append(
            StreamInfo(
                stream=transcript.stream, epoch=transcript.epoch, live=False, publishing=False, viewers=0,
                tracks=_ordered(set(transcript.tracks)), finals=_counts(transcript),
            )
        )  # fmt: skip
    return rows


def render(hub: StreamHub, stream: str, track: str, fmt: Format) -> str | None:
    """The track's captions as WebVTT, SRT or JSON; ``None`` for an unknown stream."""
    transcript = hub.finals.transcript(stream)
    if transcript is None:
        return None
    kept = list(transcript.tracks[track].finals) if track in transcript.tracks else []
    if fmt == "json":
        document = {
            "stream": stream,
            "track": track,
            "epoch": transcript.epoch,
            "finals": [_to_json(k) for k in kept],
        }
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    cues = _cues(kept)
    if fmt == "vtt":
        vtt = WebVttWriter()
        return vtt.header() + "".join(vtt.cue(cue) for cue in cues)
    srt = SrtWriter()
    return "".join(srt.cue(cue) for cue in cues)


def _to_json(kept: KeptFinal) -> dict[str, object]:
    final = kept.final
    return {
        "window": final.window,
        "text": final.text,
        "t0_ms": final.t0_ms,
        "t1_ms": final.t1_ms,
        "latency_ms": final.latency_ms,
        "error": final.error,
    }


def _cues(kept: list[KeptFinal]) -> list[Cue]:
    timer = CueTimer()
    cues: list[Cue] = []
    for item in kept:
        final = item.final
        if final.error is None:
            arrival_ms = round(item.at * 1000)
            cues.extend(timer.add(Caption(final.text, final.window, final.t0_ms, final.t1_ms, arrival_ms)))
    cues.extend(timer.finish())
    return cues


def _ordered(tracks: set[str]) -> tuple[str, ...]:
    """``caption`` first, then the languages by name."""
    return tuple(sorted(tracks, key=lambda t: (t != CAPTION_TRACK, t)))


def _counts(transcript: Transcript) -> dict[str, int]:
    return {name: track.count for name, track in transcript.tracks.items()}
