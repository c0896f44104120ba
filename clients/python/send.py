"""``livecanvas send``: publish segments, print drafts and finals as they arrive, then a summary."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from clients.python.client import CaptionSession, connect
from stream.errors import ProtocolError
from stream.messages import Bye, DraftMsg, ErrorMsg, FinalMsg, ServerMessage


@dataclass(frozen=True, slots=True)
class SendOptions:
    url: str
    stream: str = "demo"
    tracks: tuple[str, ...] = ("caption", "pt")
    source_lang: str = "en"
    token: str = ""
    interval_s: float = 0.0
    as_json: bool = False


@dataclass
class Tally:
    drafts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    finals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_draft_ms: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    final_ms: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    errors: int = 0
    _drafted: set[tuple[str, int]] = field(default_factory=set)

    def record(self, message: ServerMessage) -> None:
        if isinstance(message, DraftMsg):
            self.drafts[message.track] += 1
            if (message.track, message.window) not in self._drafted:
                self._drafted.add((message.track, message.window))
                self.first_draft_ms[message.track].append(message.latency_ms)
        elif isinstance(message, FinalMsg):
            self.finals[message.track] += 1
            self.final_ms[message.track].append(message.latency_ms)
            self.errors += message.error is not None
        elif isinstance(message, ErrorMsg):
            self.errors += 1


def printable(text: str) -> str:
    """Text safe for one terminal line: control characters shown as a middle dot."""
    return "".join(ch if ch.isprintable() else "\u00b7" for ch in text)


def describe(message: ServerMessage, started_ns: int) -> str:
    at = (time.monotonic_ns() - started_ns) // 1_000_000
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


def summary(tally: Tally) -> list[str]:
    lines = ["", "summary (server-measured latency from window commit):"]
    for track in sorted(set(tally.finals) | set(tally.drafts)):
        drafts = tally.first_draft_ms.get(track, [])
        finals = tally.final_ms.get(track, [])
        draft_part = f"first draft median {statistics.median(drafts):.0f} ms" if drafts else "no drafts"
        final_part = (
            f"final median {statistics.median(finals):.0f} ms, max {max(finals)} ms"
            if finals
            else "no finals"
        )
        counts = f"{tally.finals.get(track, 0)} finals, {tally.drafts.get(track, 0)} drafts"
        lines.append(f"  {track:>7}: {counts}; {draft_part}; {final_part}")
    if tally.errors:
        lines.append(f"  errors: {tally.errors}")
    return lines


async def _publish(session: CaptionSession, segments: Sequence[str], interval_s: float) -> None:
    for index, segment in enumerate(segments):
        if index and interval_s:
            await asyncio.sleep(interval_s)
        await session.send_text(segment)
    await session.end()


async def send_segments(options: SendOptions, segments: Sequence[str], out: TextIO = sys.stdout) -> int:
    """Publish ``segments`` and print every message until the server's bye; exit code 0 if all went well."""
    if not segments:
        print("nothing to send", file=sys.stderr)
        return 2
    started = time.monotonic_ns()
    tally = Tally()
    try:
        async with connect(
            options.url,
            stream=options.stream,
            tracks=options.tracks,
            token=options.token,
            source_lang=options.source_lang,
        ) as session:
            publisher = asyncio.create_task(_publish(session, segments, options.interval_s))
            async for message in session:
                tally.record(message)
                if options.as_json:
                    print(json.dumps(message.to_wire("json")), file=out, flush=True)
                else:
                    print(describe(message, started), file=out, flush=True)
                if isinstance(message, Bye):
                    break
            await publisher
    except (OSError, ProtocolError) as error:
        print(f"livecanvas send: {error}", file=sys.stderr)
        return 1
    if not options.as_json:
        print("\n".join(summary(tally)), file=out)
    return 0 if tally.errors == 0 else 1
