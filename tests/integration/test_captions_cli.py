"""``livecanvas captions`` as a user runs it: a subprocess reading a real server or a real broker, writing
caption files that independent parsers (pycaption, srt, webvtt-py) must accept."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
from pathlib import Path

import aiomqtt
import srt
import webvtt
from pycaption import SCCReader

from clients.python.client import connect
from stream.server import LivecanvasServer
from tests.integration.conftest import url_of
from tests.integration.mosquitto import Mosquitto
from tests.integration.test_mqtt import mqtt_server, wait_until

SENTENCES = ["Good evening from the newsroom.", "Olá, São Paulo — ça va?", "That is all for tonight."]


async def start_captions(*args: str, log_level: str = "warning") -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livecanvas.cli", "--log-level", log_level, "captions", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def finished(process: asyncio.subprocess.Process, timeout_s: float = 60) -> str:
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    assert process.returncode == 0, stderr.decode()[-2000:]
    return stderr.decode()


async def publish(server: LivecanvasServer, stream: str, times: list[int] | None = None) -> None:
    async with connect(url_of(server), stream=stream, tracks=("caption",)) as session:
        for position, sentence in enumerate(SENTENCES):
            await session.send_text(sentence, None if times is None else times[position])
        await session.end()
        async for _ in session:
            pass


def subscribed(server: LivecanvasServer, stream: str) -> bool:
    state = server.hub.streams.get(stream)
    return state is not None and bool(state.viewers)


async def test_scc_from_the_websocket_reads_back_with_pycaption(
    server: LivecanvasServer, tmp_path: Path
) -> None:
    out = tmp_path / "talk.scc"
    process = await start_captions(
        "--source", url_of(server), "--stream", "cli-scc", "--format", "scc", "--mode", "pop-on",
        "--rows", "2", "--count", "3", "--out", str(out),
    )  # fmt: skip
    await wait_until(lambda: subscribed(server, "cli-scc"), 60, "the captions client to subscribe")
    await publish(server, "cli-scc", times=[2000, 6000, 10000])
    await finished(process)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("Scenarist_SCC V1.0\n\n")
    captions = SCCReader().read(text)
    read = captions.get_captions(captions.get_languages()[0])
    assert [" ".join(c.get_text().replace("\xa0", " ").split()) for c in read] == SENTENCES
    assert [round(c.start / 1_000_000) for c in read] == [2, 6, 10]  # window times, in seconds


async def test_srt_from_mqtt(mosquitto: Mosquitto, tmp_path: Path, livecanvas_cache: Path) -> None:
    out = tmp_path / "talk.srt"
    async with mqtt_server(mosquitto, tmp_path) as server:
        process = await start_captions(
            "--mqtt", f"127.0.0.1:{mosquitto.port}", "--stream", "cli-srt", "--track", "caption",
            "--format", "srt", "--count", "3", "--out", str(out),
        )  # fmt: skip
        await wait_until(
            lambda: "livecanvas/cli-srt/caption/final (QoS 1)" in mosquitto.log.read_text(),
            30,
            "the captions client to subscribe",
        )
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as feeder:
            for sentence in SENTENCES:
                await feeder.publish("livecanvas/cli-srt/in/text", sentence.encode(), qos=1)
            await feeder.publish("livecanvas/cli-srt/in/end", b"", qos=1)
        await finished(process)
        assert server.mqtt is not None
    subtitles = list(srt.parse(out.read_text(encoding="utf-8")))
    assert [s.content.replace("\n", " ") for s in subtitles] == SENTENCES
    assert [s.index for s in subtitles] == [1, 2, 3]
    for before, after in itertools.pairwise(subtitles):
        assert before.end <= after.start


async def test_hls_webvtt_segments_finish_on_sigint(server: LivecanvasServer, tmp_path: Path) -> None:
    hls = tmp_path / "hls"
    process = await start_captions(
        "--source", url_of(server), "--stream", "cli-hls", "--format", "vtt", "--hls", str(hls),
        "--segment-s", "2", "--mpegts", "126000", log_level="info",
    )  # fmt: skip
    await wait_until(lambda: subscribed(server, "cli-hls"), 60, "the captions client to subscribe")
    await publish(server, "cli-hls", times=[0, 3000, 7000])
    assert process.stderr is not None
    log: list[str] = []
    while not any("ended (end)" in line for line in log):  # `ended` follows the stream's last final
        line = await asyncio.wait_for(process.stderr.readline(), 30)
        assert line, "the captions client exited before the stream's end:\n" + "".join(log)
        log.append(line.decode())
    process.send_signal(signal.SIGINT)
    await finished(process)
    playlist = (hls / "captions.m3u8").read_text(encoding="utf-8").splitlines()
    assert playlist[-1] == "#EXT-X-ENDLIST"
    names = [line for line in playlist if line.endswith(".vtt")]
    assert names == [f"captions{n:05d}.vtt" for n in range(5)]  # 0-10 s in 2 s segments
    texts: list[str] = []
    for name in names:
        segment = (hls / name).read_text(encoding="utf-8")
        assert segment.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\n")
        texts += [c.text.replace("\n", " ") for c in webvtt.from_string(segment, strict=True)]
    assert list(dict.fromkeys(texts)) == SENTENCES  # in order; a cue across a boundary is repeated


async def test_captions_cli_reports_a_refused_connection() -> None:
    process = await start_captions("--source", "ws://127.0.0.1:9", "--stream", "x", "--count", "1")
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    assert b"livecanvas captions:" in stderr
    assert b"Traceback" not in stderr
