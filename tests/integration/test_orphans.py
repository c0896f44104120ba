"""A track nobody watches any more stops costing model steps: a real server, real connections.

The viewer of the only translation track goes away mid-stream; after the server's orphan grace its
windows are cancelled in the engine (no more steps for them) and each gets an error final in the
final log, so the publisher's stream still ends cleanly and a late resume finds one final per window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.python.client import connect
from engine.types import CAPTION_TRACK
from stream.config import ServerConfig
from stream.hub import ORPHANED
from stream.server import LivecanvasServer
from stream.wire.messages import Bye, DraftMsg, FinalMsg
from tests.integration.conftest import url_of

# enough windows that many are still queued when the hub cancels, however fast the translator is
# (24 were once all translated before the 300 ms grace had passed, and nothing was left to cancel)
SENTENCES = [
    f"This is sentence number {n} of a long talk about the weather in the mountains." for n in range(96)
]


@pytest.fixture
async def quick_orphans(livecanvas_cache: Path) -> AsyncIterator[LivecanvasServer]:
    config = ServerConfig(
        host="127.0.0.1", port=0, idle_ms=400, drain_timeout_s=60, asr=False, max_batch=2, orphan_grace_ms=300
    )
    async with LivecanvasServer(config) as running:
        yield running


async def wait_until(condition: str, check: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not {condition} after {timeout_s} s"
        await asyncio.sleep(0.05)


async def test_windows_of_a_track_nobody_watches_are_cancelled_and_end_with_one_error_final(
    quick_orphans: LivecanvasServer,
) -> None:
    server = quick_orphans
    stats = server.worker.stats
    async with connect(url_of(server), stream="talk", role="publish", tracks=(CAPTION_TRACK,)) as publisher:
        async with connect(url_of(server), stream="talk", role="subscribe", tracks=("pt",)) as viewer:
            for sentence in SENTENCES:
                await publisher.send_text(sentence)
            await publisher.flush()
            first = await asyncio.wait_for(anext(m async for m in viewer if isinstance(m, DraftMsg)), 60)
            assert first.track == "pt"
        # max_batch 2: most of the windows are still queued or running when the viewer leaves
        await wait_until("cancelled", lambda: stats.cancelled > 0)
        await wait_until("idle", lambda: stats.jobs == stats.finals + stats.cancelled)
        stepped = stats.canvases_stepped
        await publisher.end()
        messages = [m async for m in publisher]
    assert isinstance(messages[-1], Bye)
    assert stats.canvases_stepped == stepped  # no step ran for the cancelled windows
    assert 0 < stats.cancelled < len(SENTENCES)
    kept = server.finals.replay("talk", 0, frozenset({"pt"}), 10**9).finals
    assert sorted(m.window for m in kept) == list(range(len({m.window for m in kept})))
    assert len(kept) == len({m.window for m in kept}) == stats.jobs  # one final per window, no more
    errors = [m for m in kept if m.error is not None]
    # the engine's own final for a window may still be on its way when the hub cancels: the hub's
    # error final is then the one (the late one is ignored), so errors can outnumber cancellations
    assert stats.cancelled <= len(errors) < len(SENTENCES)
    assert {m.error for m in errors} == {ORPHANED}
    assert all(isinstance(m, FinalMsg) for m in kept)
