"""Caption files checked against the finals sent, with tools livecanvas did not write: Debian's ffmpeg
(``ffprobe``) reads the HLS playlist and every segment, pycaption the SCC, webvtt-py the live WebVTT,
srt the SubRip. The finals come from a real server, paced like a talk: a sentence with a full stop is
final at once, one without waits for the idle timeout, so every other final arrives later than the one
before it (docs/broadcast.md's bounds: the HLS watermark's ``--late-s``, SCC's schedule)."""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import srt
import webvtt
from pycaption import SCCReader

from clients.broadcast.scc import frames_to_ms
from clients.python.client import connect
from stream.captions.cues import CueTiming
from stream.server import LivecanvasServer
from stream.wire.messages import FinalMsg
from tests.integration.conftest import url_of
from tests.integration.test_captions_cli import finished, start_captions, subscribed
from tests.integration.test_mqtt import wait_until

SEGMENT_MS = 1000
LATE_S = "2"  # above the test server's 0.4 s idle timeout plus how long a final takes
INTERVAL_S = 1.5  # longer than any line's reading time: each cue starts at its own t0
LINES = [f"Item {n} & more is done." if n % 2 == 0 else f"short line {n} <ok>" for n in range(8)]

Cue = tuple[str, int, int, str]  # identifier, start ms, end ms, text


def ffprobe(path: Path) -> list[Cue]:
    """The cues ffprobe reads from a WebVTT file or an HLS playlist (times in ms, text unescaped)."""
    tool = shutil.which("ffprobe")
    if tool is None:
        pytest.fail("ffprobe is missing: apt-get install ffmpeg (README's test command installs it)")
    result = subprocess.run(
        [tool, "-v", "error", "-show_packets", "-show_data", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    cues: list[Cue] = []
    for packet in json.loads(result.stdout).get("packets", []):
        assert packet["codec_type"] == "subtitle", packet
        ids = [
            side["data"] for side in packet.get("side_data_list", []) if side["side_data_type"] == "WebVTT ID"
        ]
        identifier = hexdump_text(ids[0]) if ids else ""
        start = int(packet["pts"])
        cues.append((identifier, start, start + int(packet["duration"]), hexdump_text(packet["data"])))
    return cues


def hexdump_text(dump: str) -> str:
    """The bytes of ffprobe's ``-show_data`` hex dump (``00000000: 4c69 6e65 ...  Line``), as text."""
    data = b"".join(bytes.fromhex(line.split(":", 1)[1][:40]) for line in dump.strip().splitlines())
    return html.unescape(data.decode("utf-8")).replace("\n", " ")


async def talk(server: LivecanvasServer, stream: str) -> list[FinalMsg]:
    """Publish LINES one every INTERVAL_S with their real times; the caption finals, once all are out."""
    loop = asyncio.get_running_loop()
    async with connect(url_of(server), stream=stream, tracks=("caption",)) as session:
        begin = loop.time()
        for n, line in enumerate(LINES):
            await asyncio.sleep(max(0.0, begin + n * INTERVAL_S - loop.time()))  # the talk's pace
            await session.send_text(line, round((loop.time() - begin) * 1000) + 1300)
        await session.end()
        return [m for m in [m async for m in session] if isinstance(m, FinalMsg) and m.track == "caption"]


def playlist_segments(playlist: str) -> list[tuple[str, float]]:
    lines = playlist.splitlines()
    return [(lines[i + 1], float(line[8:-1])) for i, line in enumerate(lines) if line.startswith("#EXTINF:")]


async def test_hls_scc_vtt_srt_hold_every_final_as_the_tools_read_them(
    server: LivecanvasServer, tmp_path: Path
) -> None:
    stream = "conformance"
    hls = tmp_path / "hls"
    common = ("--source", url_of(server), "--stream", stream, "--track", "caption")
    processes = {
        "hls": await start_captions(
            *common, "--format", "vtt", "--hls", str(hls), "--segment-s", "1", "--late-s", LATE_S,
            "--mpegts", "126000", "--out", str(tmp_path / "live-hls.vtt"),
        ),
        "scc": await start_captions(
            *common, "--format", "scc", "--mode", "pop-on", "--rows", "2", "--out", str(tmp_path / "talk.scc")
        ),
        "vtt": await start_captions(*common, "--format", "vtt", "--out", str(tmp_path / "talk.vtt")),
        "srt": await start_captions(*common, "--format", "srt", "--out", str(tmp_path / "talk.srt")),
    }  # fmt: skip
    await wait_until(
        lambda: subscribed(server, stream) and len(server.hub.streams[stream].viewers) == 4,
        60,
        "the four captions clients to subscribe",
    )
    finals = await talk(server, stream)
    assert [f.text for f in finals] == LINES
    assert all(before.t0_ms < after.t0_ms for before, after in itertools.pairwise(finals))
    timing = CueTiming()
    wanted = [
        (f"window-{f.window}", f.t0_ms, f.t0_ms + max(f.t1_ms - f.t0_ms, timing.reading_ms(f.text)), f.text)
        for f in finals
    ]  # on time: each starts at its window's t0 ...
    wanted = [
        (name, start, min(end, wanted[i + 1][1]) if i + 1 < len(wanted) else end, text)
        for i, (name, start, end, text) in enumerate(wanted)
    ]  # ... and lasts its reading time, cut where the next starts

    # the segment that holds the last final is written live, once the watermark has passed it
    last = (hls / f"captions{wanted[-1][1] // SEGMENT_MS:05d}.vtt").name
    playlist_path = hls / "captions.m3u8"
    await wait_until(
        lambda: playlist_path.exists() and last in playlist_path.read_text(encoding="utf-8"),
        30,
        f"{last} in the playlist",
    )
    for process in processes.values():
        process.send_signal(signal.SIGINT)
    for process in processes.values():
        await finished(process)

    # HLS: ffprobe reads the playlist (each cue once) and every segment (each cue it overlaps)
    playlist = playlist_path.read_text(encoding="utf-8")
    assert playlist.splitlines()[-1] == "#EXT-X-ENDLIST"
    target = int(playlist.split("#EXT-X-TARGETDURATION:")[1].splitlines()[0])
    segments = playlist_segments(playlist)
    assert all(duration <= target for _, duration in segments)
    assert ffprobe(playlist_path) == wanted
    first = int(segments[0][0][8:13])
    assert [name for name, _ in segments] == [f"captions{first + i:05d}.vtt" for i in range(len(segments))]
    assert first * SEGMENT_MS <= wanted[0][1]
    assert (first + len(segments)) * SEGMENT_MS >= wanted[-1][2]
    for index, (name, duration) in enumerate(segments):
        begin = (first + index) * SEGMENT_MS
        end = begin + round(duration * 1000)
        assert (
            (hls / name)
            .read_text(encoding="utf-8")
            .startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\n\n")
        )
        held = ffprobe(hls / name)
        assert held == [cue for cue in wanted if cue[1] < end and cue[2] > begin], name
        assert all(cue[1] < end and cue[2] > begin for cue in held)  # no tolerance beyond the overlap

    # live WebVTT (webvtt-py, strict) and SubRip (srt): the same cues
    live = webvtt.read(str(tmp_path / "talk.vtt"))
    assert [(c.identifier, html.unescape(c.text).replace("\n", " ")) for c in live] == [
        (name, text) for name, _, _, text in wanted
    ]
    subtitles = list(srt.parse((tmp_path / "talk.srt").read_text(encoding="utf-8")))
    assert [
        (
            round(s.start.total_seconds() * 1000),
            round(s.end.total_seconds() * 1000),
            s.content.replace("\n", " "),
        )
        for s in subtitles
    ] == [(start, end, text) for _, start, end, text in wanted]

    # SCC (pycaption): each caption on air at its final's time (these short lines are slower than the
    # channel: docs/broadcast.md's schedule puts them on their frame), on screen until the next one
    # replaces it (within 1.5 s) or, the last, until its cue ends
    scc = SCCReader().read((tmp_path / "talk.scc").read_text(encoding="utf-8"))
    read = scc.get_captions(scc.get_languages()[0])
    assert [" ".join(c.get_text().replace("\xa0", " ").split()) for c in read] == LINES
    frames = frames_to_ms(3)  # a frame's rounding and drop-frame timecode's 2 frames
    shown = [(start, after[1]) for (_, start, _, _), after in itertools.pairwise(wanted)]
    shown.append((wanted[-1][1], wanted[-1][2]))
    for caption, (start, end) in zip(read, shown, strict=True):
        assert abs(caption.start / 1000 - start) <= frames, (caption, start)
        assert abs(caption.end / 1000 - end) <= frames, (caption, end)
