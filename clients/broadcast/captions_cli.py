"""``livecanvas captions``: write one track's finals as WebVTT, SubRip, CEA-608 text or Scenarist SCC.

    livecanvas captions --source ws://127.0.0.1:8765 --stream talk --track pt-BR --format vtt --out pt.vtt
    livecanvas captions --mqtt broker:1883 --stream talk --track caption --format scc --out talk.scc
    livecanvas captions --stream talk --format vtt --hls hls/ --segment-s 6 --late-s 10   # + playlist

The file grows as finals arrive (it is flushed after every cue); ``--count N`` stops after N finals,
otherwise it runs until the server says ``bye`` or Ctrl-C / SIGTERM, and then finishes the file
(the last cue, the 608 clear, the HLS ``#EXT-X-ENDLIST``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from clients.broadcast.cea608 import Mode
from clients.broadcast.formats import FORMATS, CaptionWriter, Output
from stream.captions.cues import DEFAULT_LATE_MS, Caption
from stream.config import env_str, parse_host_port
from stream.errors import ProtocolError

POLL_S = 0.25


def add_captions_parser(commands: Any) -> None:  # argparse's subparsers action has no public type
    parser: argparse.ArgumentParser = commands.add_parser(
        "captions", help="write a track's finals as WebVTT, SRT, CEA-608 or SCC (from the server or MQTT)"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--source", help="livecanvas server URL (default: $LIVECANVAS_URL or ws://127.0.0.1:8765)"
    )
    source.add_argument("--mqtt", metavar="HOST[:PORT]", help="read the finals from this MQTT broker instead")
    parser.add_argument("--mqtt-prefix", default=env_str("MQTT_PREFIX", "livecanvas"), help="topic root")
    parser.add_argument("--stream", required=True)
    parser.add_argument(
        "--track", default="caption", help="caption (the source language) or a target language"
    )
    parser.add_argument("--token", default=env_str("TOKEN", ""))
    parser.add_argument(
        "--format", choices=FORMATS, default="vtt", help="vtt, srt, 608 (screens as text), scc"
    )
    parser.add_argument("--out", type=Path, help="the caption file (default: standard output)")
    parser.add_argument(
        "--hls", type=Path, metavar="DIR", help="vtt: write HLS segments and captions.m3u8 here"
    )
    parser.add_argument("--segment-s", type=float, default=6.0, help="HLS segment length (default 6 s)")
    parser.add_argument(
        "--late-s",
        type=float,
        default=DEFAULT_LATE_MS / 1000,
        help="HLS: how much later than the most prompt final a final may arrive and still start at its"
        " own time; a segment is written once this long has passed its end (default 10 s)",
    )
    parser.add_argument("--mpegts", type=int, default=900_000, help="X-TIMESTAMP-MAP MPEGTS at stream time 0")
    parser.add_argument("--mode", choices=[m.value for m in Mode], default="roll-up", help="608/scc layout")
    parser.add_argument("--rows", type=int, default=2, help="608/scc rows: roll-up 2-4, pop-on 1-4")
    parser.add_argument("--count", type=int, help="stop after this many finals")
    parser.set_defaults(handler=run_captions)


def run_captions(args: argparse.Namespace) -> int:
    from websockets.exceptions import WebSocketException

    try:
        writer = CaptionWriter(
            args.format,
            mode=args.mode,
            rows=args.rows,
            hls_segment_ms=round(args.segment_s * 1000) if args.hls else None,
            hls_late_ms=round(args.late_s * 1000),
            mpegts=args.mpegts,
        )
        captions = _source(args)
    except ValueError as error:
        print(f"livecanvas captions: {error}", file=sys.stderr)
        return 2
    out: IO[str] = sys.stdout if args.out is None else args.out.open("w", encoding="utf-8")
    try:
        sink = Sink(out, args.hls)
        asyncio.run(write_captions(captions, writer, sink, count=args.count))
    except (OSError, ProtocolError, WebSocketException) as error:  # the connection or the output file
        print(f"livecanvas captions: {error}", file=sys.stderr)
        return 1
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _source(args: argparse.Namespace) -> AsyncIterator[Caption]:
    from clients.broadcast.sources import mqtt_captions, websocket_captions

    if args.mqtt:
        host, port = parse_host_port(args.mqtt, 1883)
        return mqtt_captions(host, port, prefix=args.mqtt_prefix, stream=args.stream, track=args.track)
    url = args.source or env_str("URL", "ws://127.0.0.1:8765")
    return websocket_captions(url, stream=args.stream, track=args.track, token=args.token)


class Sink:
    """Where the text goes (appended and flushed), and the HLS directory (segments written atomically)."""

    def __init__(self, out: IO[str], hls_dir: Path | None) -> None:
        self.out = out
        self.hls_dir = hls_dir
        if hls_dir is not None:
            hls_dir.mkdir(parents=True, exist_ok=True)

    def write(self, output: Output, writer: CaptionWriter, *, last: bool = False) -> None:
        if output.text:
            self.out.write(output.text)
            self.out.flush()
        if self.hls_dir is not None and (
            output.segments or last or not (self.hls_dir / "captions.m3u8").exists()
        ):
            for segment in output.segments:
                _atomic_write(self.hls_dir / segment.name, segment.text)
            assert writer.hls is not None
            _atomic_write(self.hls_dir / "captions.m3u8", writer.hls.playlist())


def _atomic_write(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


async def write_captions(
    captions: AsyncIterator[Caption], writer: CaptionWriter, sink: Sink, *, count: int | None = None
) -> None:
    """Feed ``captions`` through ``writer`` into ``sink`` until the source ends, ``count`` finals, or a
    SIGINT/SIGTERM (captions already received are still written); then finish the file."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    queue: asyncio.Queue[Caption | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for caption in captions:
                await queue.put(caption)
        finally:
            await queue.put(None)

    reader = asyncio.create_task(pump())
    sink.write(Output(text=writer.start()), writer)
    seen = 0
    try:
        while not stop.is_set() and (count is None or seen < count):
            get = asyncio.ensure_future(queue.get())
            halt = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({get, halt}, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
            halt.cancel()
            if get not in done:
                get.cancel()
                sink.write(writer.poll(time.monotonic_ns() // 1_000_000), writer)
                continue
            caption = get.result()
            if caption is None:
                break
            seen += 1
            sink.write(writer.add(caption), writer)
        while not queue.empty() and (count is None or seen < count):  # received before a stop: kept
            caption = queue.get_nowait()
            if caption is None:
                break
            seen += 1
            sink.write(writer.add(caption), writer)
    finally:
        reader.cancel()
        failure: BaseException | None = None
        with contextlib.suppress(asyncio.CancelledError):
            failure = (await asyncio.gather(reader, return_exceptions=True))[0]
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        sink.write(writer.finish(), writer, last=True)
    if isinstance(failure, Exception):
        raise failure
