"""``livecanvas send``: publish text or audio, show drafts and finals as they arrive, then a summary.

``send_segments`` publishes text; ``send_audio`` publishes PCM16 chunks (from a WAV file or the microphone,
see ``clients.python.audio_source``) and adds the caption track's word latency to the summary. On a
terminal, drafts are overwritten in place by their finals above a progress bar (``render.LiveView``);
piped, every message is one line (``render.LogView``), or one JSON object with ``--json``. The summary
gives, per track, the counts of windows, drafts and finals and the median and p95 latencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from clients.python.client import CaptionSession, connect
from clients.python.render import JsonView, LiveView, LogView, View
from stream.errors import ProtocolError
from stream.wire.messages import Bye, DraftMsg, ErrorMsg, FinalMsg, ServerMessage


@dataclass(frozen=True, slots=True)
class SendOptions:
    url: str
    stream: str = "demo"
    tracks: tuple[str, ...] = ("caption", "pt")
    source_lang: str = "en"
    token: str = ""
    interval_s: float = 0.0
    typing_wpm: float = 0.0  # > 0: each line is typed as partial lines at this many words a minute first
    as_json: bool = False
    live: bool | None = None  # drafts overwritten in place; None: when the output is a terminal


@dataclass
class Tally:
    """Counts and latencies per track, from the messages and their arrival times."""

    drafts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    finals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    windows: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    first_draft_ms: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    final_ms: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    # (t1_ms, arrival monotonic_ns) of each window's first draft and of each final, per track
    first_draft_at: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    final_at: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    errors: int = 0
    _drafted: set[tuple[str, int]] = field(default_factory=set)

    def record(self, message: ServerMessage, at_ns: int | None = None) -> None:
        at_ns = time.monotonic_ns() if at_ns is None else at_ns
        if isinstance(message, DraftMsg):
            self.drafts[message.track] += 1
            self.windows[message.track].add(message.window)
            if (message.track, message.window) not in self._drafted:
                self._drafted.add((message.track, message.window))
                self.first_draft_ms[message.track].append(message.latency_ms)
                self.first_draft_at[message.track].append((message.t1_ms, at_ns))
        elif isinstance(message, FinalMsg):
            self.finals[message.track] += 1
            self.windows[message.track].add(message.window)
            self.final_ms[message.track].append(message.latency_ms)
            self.final_at[message.track].append((message.t1_ms, at_ns))
            self.errors += message.error is not None
        elif isinstance(message, ErrorMsg):
            self.errors += 1


@dataclass(frozen=True, slots=True)
class AudioClock:
    """Maps audio time to when it was spoken: ``origin_ns + t_ms / speed`` (for a paced source, speed > 0)."""

    origin_ns: int
    speed: float

    def spoken_ns(self, t_ms: int) -> int:
        return self.origin_ns + round(t_ms * 1_000_000 / self.speed)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile (``fraction`` in [0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def spread(values: Sequence[float]) -> str:
    """``median 120 ms, p95 310 ms`` of a non-empty sequence."""
    return f"median {statistics.median(values):.0f} ms, p95 {percentile(values, 0.95):.0f} ms"


def summary(tally: Tally, clock: AudioClock | None = None, track: str = "caption") -> list[str]:
    lines = ["", "summary (server-measured latency from window commit):"]
    for name in sorted(set(tally.finals) | set(tally.drafts)):
        drafts = tally.first_draft_ms.get(name, [])
        finals = tally.final_ms.get(name, [])
        draft_part = f"first draft {spread(drafts)}" if drafts else "no drafts"
        final_part = f"final {spread(finals)}, max {max(finals)} ms" if finals else "no finals"
        counts = (
            f"{len(tally.windows.get(name, ()))} windows, "
            f"{tally.finals.get(name, 0)} finals, {tally.drafts.get(name, 0)} drafts"
        )
        lines.append(f"  {name:>7}: {counts}; {draft_part}; {final_part}")
    if clock is not None:
        lines.extend(word_latency(tally, clock, track))
    if tally.errors:
        lines.append(f"  errors: {tally.errors}")
    return lines


def word_latency(tally: Tally, clock: AudioClock, track: str = "caption") -> list[str]:
    """Client-side latency of ``track``: arrival minus when the window's last word (``t1_ms``) was spoken."""
    if not clock.speed or clock.speed == float("inf"):
        return [f"  {track} word latency: not measured (audio sent as fast as possible)"]
    pace = "real-time pace" if clock.speed == 1 else f"audio sent at {clock.speed:g}x: only --speed 1 is live"
    lines = [f"  {track} word latency, arrival - when the window's last word (t1) was spoken, {pace}:"]
    for label, points in (("final", tally.final_at), ("first draft", tally.first_draft_at)):
        delays = [(at_ns - clock.spoken_ns(t1_ms)) / 1e6 for t1_ms, at_ns in points.get(track, [])]
        if delays:
            lines.append(
                f"    {label:>11}: median {statistics.median(delays):.0f} ms, "
                f"p95 {percentile(delays, 0.95):.0f} ms over {len(delays)}"
            )
        else:
            lines.append(f"    {label:>11}: none")
    return lines


Progress = Callable[[float, float, str], None]
"""``progress(done, total, unit)``: how far the input has been sent."""


async def _publish(
    session: CaptionSession,
    segments: Sequence[str],
    interval_s: float,
    progress: Progress,
    typing_wpm: float = 0.0,
) -> None:
    """Send each segment (``interval_s`` apart); with ``typing_wpm`` each is first typed word by word as
    ``partial`` lines at that pace, as a stenographer's line grows, then sent as settled text."""
    for index, segment in enumerate(segments):
        if index and interval_s:
            await asyncio.sleep(interval_s)
        words = segment.split()
        for count in range(1, len(words) if typing_wpm > 0 else 0):
            await session.send_partial(" ".join(words[:count]))
            await asyncio.sleep(60.0 / typing_wpm)
        await session.send_text(segment)
        progress(index + 1, len(segments), "lines")
    await session.end()


def make_view(options: SendOptions, out: TextIO, started_ns: int) -> View:
    if options.as_json:
        return JsonView()
    live = options.live
    if live is None:
        live = out.isatty() and os.environ.get("TERM") != "dumb"
    if live:
        return LiveView(width=shutil.get_terminal_size().columns, color="NO_COLOR" not in os.environ)
    return LogView(started_ns)


async def _run(
    options: SendOptions,
    publish: Callable[[CaptionSession, Progress], Coroutine[Any, Any, None]],
    tally: Tally,
    out: TextIO,
    started_ns: int,
) -> int:
    """Connect, run ``publish`` alongside showing every message (into ``tally``) until bye; 0 or 1."""
    view = make_view(options, out, started_ns)

    def write(text: str) -> None:
        if text:
            out.write(text)
            out.flush()

    def progress(done: float, total: float, unit: str) -> None:
        write(view.progress(done, total, unit))

    try:
        async with connect(
            options.url,
            stream=options.stream,
            tracks=options.tracks,
            token=options.token,
            source_lang=options.source_lang,
        ) as session:
            publisher = asyncio.create_task(publish(session, progress))
            try:
                async for item in session.received():
                    tally.record(item.message, item.at_ns)
                    write(view.message(item.message, item.at_ns))
                    if isinstance(item.message, Bye):
                        break
            finally:
                write(view.close())
                if not publisher.done():
                    publisher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publisher
    except (OSError, ProtocolError, RuntimeError, ValueError) as error:  # the connection or the source
        print(f"livecanvas send: {error}", file=sys.stderr)
        return 1
    return 0


async def send_segments(options: SendOptions, segments: Sequence[str], out: TextIO = sys.stdout) -> int:
    """Publish ``segments`` and print every message until the server's bye; exit code 0 if all went well."""
    if not segments:
        print("nothing to send", file=sys.stderr)
        return 2
    started = time.monotonic_ns()
    tally = Tally()
    code = await _run(
        options,
        lambda session, progress: _publish(
            session, segments, options.interval_s, progress, options.typing_wpm
        ),
        tally,
        out,
        started,
    )
    if code:
        return code
    if not options.as_json:
        print("\n".join(summary(tally)), file=out)
    return 0 if tally.errors == 0 else 1


async def send_audio(
    options: SendOptions,
    source: AsyncIterable[tuple[int, bytes]],
    out: TextIO = sys.stdout,
    *,
    speed: float = 1.0,
    total_ms: int | None = None,
) -> int:
    """Publish audio from ``source`` (``(audio_end_ms, pcm16le)`` chunks, e.g. ``paced_chunks``), print
    drafts and finals as they arrive, then a summary with the caption track's word latency.

    ``speed`` is the pace ``source`` keeps (1: real time, 0: as fast as possible); the word latency is
    measured against the moment each word was spoken, ``origin + t1_ms / speed``, where ``origin`` is when
    the first chunk was sent less its own duration. With ``total_ms`` (the length of a file) a terminal
    shows a progress bar. Ctrl-C stops the audio and still waits for the finals (a second Ctrl-C gives
    up). Exit code 0 if all went well, 1 on errors, 130 if interrupted.
    """
    started = time.monotonic_ns()
    tally = Tally()
    clocks: list[AudioClock] = []
    stop = asyncio.Event()

    async def publish(session: CaptionSession, progress: Progress) -> None:
        try:
            async for end_ms, chunk in source:
                if stop.is_set():
                    break
                if not clocks:
                    origin = time.monotonic_ns() - (round(end_ms * 1_000_000 / speed) if speed else 0)
                    clocks.append(AudioClock(origin, speed))
                await session.send_audio(chunk)
                if total_ms:
                    progress(end_ms / 1000, total_ms / 1000, "s")
        finally:  # even if the source failed: the server finalises what it heard, then says bye
            close = getattr(source, "aclose", None)
            if close is not None:  # stop a microphone now rather than when the generator is collected
                await close()
            with contextlib.suppress(Exception):
                await session.end()

    task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        if stop.is_set():
            print("\nlivecanvas send: interrupted", file=sys.stderr)
            if task is not None:
                task.cancel()
            return
        stop.set()
        print(
            "\nlivecanvas send: stopping; waiting for the last finals (Ctrl-C again to quit)", file=sys.stderr
        )

    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers on this platform
        loop.add_signal_handler(signal.SIGINT, interrupted)
    try:
        code = await _run(options, publish, tally, out, started)
    except asyncio.CancelledError:
        return 130
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    if code:
        return code
    if not options.as_json:
        print("\n".join(summary(tally, clocks[0] if clocks else None)), file=out)
    return 0 if tally.errors == 0 else 1
