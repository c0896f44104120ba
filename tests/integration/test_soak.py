"""Soak: 8 publishers and 50 subscribers on one real server (a `livecanvas serve` subprocess, tokens
on) for a bounded time, on loopback. Checks that no final is lost or repeated (also for subscribers
that drop and resume midway), that the server's memory stays flat, and that latency stays bounded.

Runs in the default test run (CI); ``LIVECANVAS_SOAK_S`` changes its length (default 120 s).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

import pytest

from clients.python.client import CaptionSession, connect
from stream.wire.messages import Bye, ErrorMsg, FinalMsg, Role, ServerMessage
from tests.integration.serve_process import running_serve

DURATION_S = float(os.environ.get("LIVECANVAS_SOAK_S", "120"))
PUBLISHERS, SUBSCRIBERS = 8, 50
SENTENCE_EVERY_S = 2.0
WARM_UP_S = min(30.0, DURATION_S / 4)
RSS_GROWTH_BOUND_MB = 80  # after warm-up; a leak of one final per viewer and window would exceed it
FINAL_P95_BOUND_S = 20.0  # translation finals on 2 shared CPU cores, at the soak's load
TOKEN = "soak-admin-token"
SENTENCES = (
    "The council meets again on Monday.",
    "Residents asked for more shade at bus stops.",
    "The vote is expected next week.",
    "Cooling centres will stay open all night.",
    "Thank you all for coming this evening.",
    "Questions come at the end of the session.",
)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def publish(url: str, stream: str, deadline: float) -> list[ServerMessage]:
    async with connect(url, stream=stream, tracks=("caption", "pt"), token=TOKEN) as session:
        reading = asyncio.create_task(collect(session))
        rng = random.Random(stream)
        await asyncio.sleep(rng.uniform(0, SENTENCE_EVERY_S))
        while time.monotonic() < deadline:
            await session.send_text(rng.choice(SENTENCES))
            await asyncio.sleep(SENTENCE_EVERY_S)
        await session.end()
        return await reading


async def collect(session: CaptionSession) -> list[ServerMessage]:
    return [m async for m in session]


async def subscribe(url: str, stream: str, drop_at: float | None) -> list[ServerMessage]:
    messages: list[ServerMessage] = []
    async with connect(
        url, stream=stream, role=Role.SUBSCRIBE, tracks=("caption", "pt"), token=TOKEN
    ) as first:
        async for message in first:
            messages.append(message)
            if drop_at is not None and time.monotonic() > drop_at:
                point = first.resume_point
                first.websocket.transport.abort()
                break
        else:
            return messages
    await asyncio.sleep(1.0)
    async with connect(
        url, stream=stream, role=Role.SUBSCRIBE, tracks=("caption", "pt"), token=TOKEN, resume=point
    ) as again:
        messages.extend([m async for m in again])
    return messages


def check_finals(messages: list[ServerMessage], windows: int, who: str) -> None:
    by_track: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        assert not isinstance(message, ErrorMsg), f"{who}: {message}"
        if isinstance(message, FinalMsg):
            assert message.error is None, f"{who}: {message}"
            by_track[message.track].append(message.window)
    for track in ("caption", "pt"):
        assert by_track[track] == list(range(windows)), f"{who} {track}: every final once, in order"


@pytest.mark.slow
@pytest.mark.timeout(DURATION_S + 300)
async def test_soak_many_viewers_no_final_lost_memory_flat_latency_bounded(
    livecanvas_cache: Path, tmp_path: Path
) -> None:
    async with running_serve(livecanvas_cache, tmp_path, TOKEN, "--threads", "1") as (port, process):
        url = f"ws://127.0.0.1:{port}"
        started = time.monotonic()
        deadline = started + DURATION_S
        streams = [f"soak-{i}" for i in range(PUBLISHERS)]
        subscribers = [
            asyncio.create_task(
                subscribe(url, streams[i % PUBLISHERS], started + DURATION_S / 2 if i < PUBLISHERS else None)
            )
            for i in range(SUBSCRIBERS)
        ]
        await asyncio.sleep(0.5)  # every subscriber is in before the first sentence
        publishers = [asyncio.create_task(publish(url, s, deadline)) for s in streams]
        await asyncio.sleep(WARM_UP_S)
        rss_start = rss_mb(process.pid)
        published = await asyncio.gather(*publishers)  # each got every final of its stream, then bye
        rss_end = rss_mb(process.pid)
        elapsed = time.monotonic() - started
        process.terminate()  # subscribers get their bye from the graceful shutdown
        watched = await asyncio.wait_for(asyncio.gather(*subscribers), 120)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, output.decode()[-2000:]

    latencies: list[float] = []
    total_windows = 0
    for stream, messages in zip(streams, published, strict=True):
        assert isinstance(messages[-1], Bye)
        windows = sum(isinstance(m, FinalMsg) and m.track == "caption" for m in messages)
        assert windows >= DURATION_S / SENTENCE_EVERY_S - 2
        total_windows += windows
        check_finals(messages, windows, f"publisher {stream}")
        latencies += [m.latency_ms / 1000 for m in messages if isinstance(m, FinalMsg) and m.track == "pt"]
        for index, viewer in enumerate(watched):
            if streams[index % PUBLISHERS] == stream:
                check_finals(viewer, windows, f"subscriber {index} of {stream}")
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(
        f"\nsoak: {elapsed:.0f} s, {PUBLISHERS} publishers, {SUBSCRIBERS} subscribers "
        f"({PUBLISHERS} dropped and resumed), {total_windows} windows; pt final latency median "
        f"{statistics.median(latencies):.2f} s, p95 {p95:.2f} s, max {max(latencies):.2f} s; server RSS "
        f"{rss_start:.0f} MB after warm-up -> {rss_end:.0f} MB at the end ({rss_end - rss_start:+.1f} MB)"
    )
    assert rss_end - rss_start < RSS_GROWTH_BOUND_MB
    assert p95 < FINAL_P95_BOUND_S
