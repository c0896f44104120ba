"""The ``remote`` engine backend against a real ``livecanvas engine-serve`` process on loopback.

Front ends are real ``LivecanvasServer``s started with ``--model remote:ws://...``; publishers are real
WebSocket clients. The remote engine must give the same translations as a local engine (seeds follow
the window keys), per-step drafts before finals, and one batch for the canvases of several front ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from clients.python.client import connect
from engine.remote import RemoteEngineWorker
from engine.types import CanvasKey, Final, WindowJob
from engine.worker import EngineEvent
from stream.config import ServerConfig
from stream.messages import DraftMsg, FinalMsg, ServerMessage
from stream.server import LivecanvasServer
from tests.integration.conftest import url_of
from tests.integration.test_server import SENTENCES, check_session, publish_and_collect


@contextlib.contextmanager
def engine_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``livecanvas engine-serve`` on the embedded model, on a free loopback port, as its own process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "--log-level", "warning", "engine-serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        assert line.startswith("engine listening on "), f"engine-serve said {line!r}"
        yield process, line.split()[-1]
    finally:
        process.terminate()
        process.wait(timeout=60)
        process.stdout.close()


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    with engine_process() as (_, url):
        yield url


def front_end_config(model: str) -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0, model=model, idle_ms=400, drain_timeout_s=60, asr=False)


@pytest.fixture
async def front_end(engine_url: str) -> AsyncIterator[LivecanvasServer]:
    async with LivecanvasServer(front_end_config(f"remote:{engine_url}")) as running:
        yield running


def finals(messages: list[ServerMessage], track: str) -> list[str]:
    return [m.text for m in messages if isinstance(m, FinalMsg) and m.track == track]


async def test_remote_engine_translates_like_the_local_one(
    front_end: LivecanvasServer, server: LivecanvasServer
) -> None:
    assert front_end.model is not None
    assert front_end.model.resolved.spec.startswith("remote:ws://")
    assert front_end.model.card == server.model.card  # the card came over the wire, pairs and all
    assert front_end.model.card.serves("pt", "en")
    assert not front_end.model.card.serves("en", "es")
    remote, local = await asyncio.gather(
        publish_and_collect(url_of(front_end), "alpha", SENTENCES),
        publish_and_collect(url_of(server), "alpha", SENTENCES),
    )
    check_session(remote, expected_windows=3, tracks=("caption", "pt"))  # drafts before finals, once each
    assert any(isinstance(m, DraftMsg) and m.track == "pt" for m in remote)
    assert finals(remote, "pt") == finals(local, "pt")
    assert all(finals(remote, "pt"))


async def test_two_front_ends_share_the_remote_engines_forwards(engine_url: str) -> None:
    url = f"remote:{engine_url}"
    async with (
        LivecanvasServer(front_end_config(url)) as first,
        LivecanvasServer(front_end_config(url)) as second,
    ):
        one, two = await asyncio.gather(
            publish_and_collect(url_of(first), "north", SENTENCES),
            publish_and_collect(url_of(second), "south", SENTENCES),
        )
        check_session(one, expected_windows=3, tracks=("caption", "pt"))
        check_session(two, expected_windows=3, tracks=("caption", "pt"))
        stats = first.worker.stats
        assert stats.finals == 3
        assert stats.errors == 0
        assert max(first.worker.stats.max_batch_seen, second.worker.stats.max_batch_seen) >= 2


async def test_a_window_in_flight_when_the_engine_dies_gets_an_error_final() -> None:
    with engine_process() as (process, url):
        async with LivecanvasServer(front_end_config(f"remote:{url}")) as front:
            got: list[FinalMsg] = []

            async def publish() -> None:
                async with connect(url_of(front), stream="gamma", tracks=("pt",)) as session:
                    await session.send_text(" ".join(SENTENCES * 4))
                    await session.flush()
                    async for message in session:
                        if isinstance(message, FinalMsg):
                            got.append(message)
                            return

            task = asyncio.create_task(publish())
            while front.worker.stats.jobs == 0:  # noqa: ASYNC110 - the worker's counter is on another thread
                await asyncio.sleep(0.01)
            process.kill()
            await asyncio.wait_for(task, 60)
            assert got
            assert got[0].error is not None
            # a window sent after the engine is gone is answered at once, not left waiting
            async with connect(url_of(front), stream="delta", tracks=("pt",)) as session:
                await session.send_text("One more sentence.")
                await session.flush()
                final = await asyncio.wait_for(anext(m async for m in session if isinstance(m, FinalMsg)), 30)
            assert final.error is not None


def test_cancelled_windows_leave_the_remote_engine_without_events(engine_url: str) -> None:
    events: list[EngineEvent] = []
    lock = threading.Lock()
    kept_final = threading.Event()

    counters: list[tuple[int, int]] = []  # the engine's (forwards, canvases stepped) at each kept event

    def emit(batch: list[EngineEvent]) -> None:
        with lock:
            events.extend(batch)
            if any(e.key.stream == "kept" for e in batch):
                counters.append((worker.stats.forwards, worker.stats.canvases_stepped))
        if any(isinstance(e, Final) and e.key.stream == "kept" for e in batch):
            kept_final.set()

    worker = RemoteEngineWorker(engine_url, emit)
    worker.start()
    worker.wait_ready(60)
    try:
        long_text = " ".join(SENTENCES * 2)
        dropped = [WindowJob(CanvasKey("gone", "pt", i), long_text, (), "en", "pt", 0) for i in range(6)]
        for job in dropped:
            worker.submit(job)
        worker.cancel({job.key for job in dropped})
        worker.submit(WindowJob(CanvasKey("kept", "pt", 0), SENTENCES[0], (), "en", "pt", 0))
        assert kept_final.wait(60)
        with lock:
            seen = list(events)
        assert not [e for e in seen if e.key.stream == "gone"]
        assert worker.stats.cancelled == len(dropped)
        final = next(e for e in seen if isinstance(e, Final))
        assert final.error is None
        # the engine dropped them too: the cancel went before the kept job, so from the kept window's
        # first event to its final every forward stepped the kept canvas alone
        (forwards, stepped), (last_forwards, last_stepped) = counters[0], counters[-1]
        assert last_stepped - stepped == last_forwards - forwards
    finally:
        worker.stop(drain=False, timeout=60)
