"""The finals each stream has produced, kept for the web pages: history, the stream list, downloads.

A ``TranscriptStore`` watches a ``StreamHub`` (as one of its observers) and keeps, per stream and
track, the newest ``max_finals`` finals and counts of drafts and finals; it remembers the newest
``max_streams`` streams once they are gone from the hub, so their captions can still be downloaded.

Every transcript carries the stream's *epoch*, an opaque id of the hub's state for that stream. The hub
forgets a stream nobody uses and numbers windows from 0 again when the name comes back, so a client
that resumes (the overlay after a reconnect) compares epochs to tell "windows I have shown" from "a new
stream under the old name". A final arriving under a new epoch starts a new transcript.

``streams()`` lists live and remembered streams; ``render(stream, track, fmt)`` gives a track as
WebVTT or SRT, timed by the caption writers' ``CueTimer`` (clients/broadcast/cues.py), or as JSON for
the pages. Sans-I/O: it is fed by the hub on the loop's thread and never blocks.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from clients.broadcast.cues import Caption, Cue, CueTimer
from clients.broadcast.srt import SrtWriter
from clients.broadcast.webvtt import WebVttWriter
from engine.types import CAPTION_TRACK
from stream.hub import StreamHub
from stream.messages import DraftMsg, FinalMsg

Format = Literal["vtt", "srt", "json"]
FORMATS: Final[tuple[Format, ...]] = ("vtt", "srt", "json")


@dataclass(frozen=True, slots=True)
class StoredFinal:
    window: int
    text: str
    t0_ms: int
    t1_ms: int
    latency_ms: int
    error: str | None
    arrival_ms: int  # on the store's monotonic clock

    def to_json(self) -> dict[str, object]:
        return {
            "window": self.window,
            "text": self.text,
            "t0_ms": self.t0_ms,
            "t1_ms": self.t1_ms,
            "latency_ms": self.latency_ms,
            "error": self.error,
        }


@dataclass(eq=False)
class TrackTranscript:
    finals: deque[StoredFinal]
    final_count: int = 0  # including finals no longer kept
    draft_count: int = 0


@dataclass(eq=False)
class Transcript:
    stream: str
    epoch: str
    started_at_s: float  # wall clock of the first message, for listings
    tracks: dict[str, TrackTranscript] = field(default_factory=dict)


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


class TranscriptStore:
    """See the module docstring."""

    def __init__(
        self,
        hub: StreamHub,
        *,
        max_finals: int = 5000,
        max_streams: int = 64,
        clock_ms: Callable[[], int] = lambda: time.monotonic_ns() // 1_000_000,
        wall_s: Callable[[], float] = time.time,
    ) -> None:
        self._hub = hub
        self._max_finals = max_finals
        self._max_streams = max_streams
        self._clock_ms = clock_ms
        self._wall_s = wall_s
        self._transcripts: OrderedDict[str, Transcript] = OrderedDict()  # least recently updated first
        hub.add_observer(self.observe)

    def close(self) -> None:
        self._hub.remove_observer(self.observe)

    def epoch_of(self, stream: str) -> str | None:
        """The stream's epoch: of the hub's live state if it has one, else of the remembered transcript."""
        state = self._hub.streams.get(stream)
        if state is not None:
            return f"{state.started_ns:x}"
        transcript = self._transcripts.get(stream)
        return transcript.epoch if transcript is not None else None

    # -- hub observer --------------------------------------------------------------------------------
    def observe(self, message: DraftMsg | FinalMsg) -> None:
        epoch = self.epoch_of(message.stream) or "0"
        transcript = self._transcripts.get(message.stream)
        if transcript is None or transcript.epoch != epoch:
            transcript = Transcript(stream=message.stream, epoch=epoch, started_at_s=self._wall_s())
        self._transcripts[message.stream] = transcript
        self._transcripts.move_to_end(message.stream)
        track = transcript.tracks.get(message.track)
        if track is None:
            track = transcript.tracks[message.track] = TrackTranscript(deque(maxlen=self._max_finals))
        if isinstance(message, DraftMsg):
            track.draft_count += 1
        else:
            track.final_count += 1
            track.finals.append(
                StoredFinal(
                    window=message.window, text=message.text, t0_ms=message.t0_ms, t1_ms=message.t1_ms,
                    latency_ms=message.latency_ms, error=message.error, arrival_ms=self._clock_ms(),
                )
            )  # fmt: skip
        self._evict()

    def _evict(self) -> None:
        while len(self._transcripts) > self._max_streams:
            for name in self._transcripts:
                if name not in self._hub.streams:  # never forget a live stream
                    del self._transcripts[name]
                    break
            else:
                return

    # -- queries -------------------------------------------------------------------------------------
    def streams(self) -> list[StreamInfo]:
        """Live streams first (by name), then remembered ones, newest first."""
        rows: list[StreamInfo] = []
        for name in sorted(self._hub.streams):
            state = self._hub.streams[name]
            transcript = self._current(name)
            tracks = {CAPTION_TRACK} | state.target_tracks()
            if transcript is not None:
                tracks |= set(transcript.tracks)
            rows.append(
                StreamInfo(
                    stream=name,
                    epoch=f"{state.started_ns:x}",
                    live=True,
                    publishing=state.publisher is not None,
                    viewers=sum(viewer is not state.publisher for viewer in state.viewers),
                    tracks=_ordered(tracks),
                    finals=_counts(transcript),
                )
            )
        for name, transcript in reversed(self._transcripts.items()):
            if name not in self._hub.streams:
                rows.append(
                    StreamInfo(
                        stream=name, epoch=transcript.epoch, live=False, publishing=False, viewers=0,
                        tracks=_ordered(set(transcript.tracks)), finals=_counts(transcript),
                    )
                )  # fmt: skip
        return rows

    def finals(self, stream: str, track: str) -> tuple[str, list[StoredFinal]] | None:
        """``(epoch, finals in window order)`` of a live or remembered stream (empty if the track has
        none yet); ``None`` for a stream the server does not know."""
        epoch = self.epoch_of(stream)
        if epoch is None:
            return None
        transcript = self._current(stream)
        if transcript is None or track not in transcript.tracks:
            return epoch, []
        return epoch, list(transcript.tracks[track].finals)

    def render(self, stream: str, track: str, fmt: Format) -> str | None:
        """The track's captions as WebVTT, SRT or JSON; ``None`` for an unknown stream."""
        found = self.finals(stream, track)
        if found is None:
            return None
        epoch, finals = found
        if fmt == "json":
            document = {
                "stream": stream,
                "track": track,
                "epoch": epoch,
                "finals": [final.to_json() for final in finals],
            }
            return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        cues = _cues(finals)
        if fmt == "vtt":
            vtt = WebVttWriter()
            return vtt.header() + "".join(vtt.cue(cue) for cue in cues)
        srt = SrtWriter()
        return "".join(srt.cue(cue) for cue in cues)

    def _current(self, stream: str) -> Transcript | None:
        """The remembered transcript if it belongs to the stream's current epoch."""
        transcript = self._transcripts.get(stream)
        state = self._hub.streams.get(stream)
        if transcript is not None and state is not None and transcript.epoch != f"{state.started_ns:x}":
            return None  # the hub restarted this stream and nothing has been said yet
        return transcript


def _cues(finals: list[StoredFinal]) -> list[Cue]:
    timer = CueTimer()
    cues: list[Cue] = []
    for final in finals:
        if final.error is None:
            caption = Caption(final.text, final.window, final.t0_ms, final.t1_ms, final.arrival_ms)
            cues.extend(timer.add(caption))
    cues.extend(timer.finish())
    return cues


def _ordered(tracks: set[str]) -> tuple[str, ...]:
    """``caption`` first, then the languages by name."""
    return tuple(sorted(tracks, key=lambda t: (t != CAPTION_TRACK, t)))


def _counts(transcript: Transcript | None) -> dict[str, int]:
    if transcript is None:
        return {}
    return {name: track.final_count for name, track in transcript.tracks.items()}
