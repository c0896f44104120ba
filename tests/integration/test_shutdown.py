"""Graceful shutdown: windows in flight get their finals, then every client gets a bye."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clients.python.client import connect
from stream.config import ServerConfig
from stream.messages import Bye, FinalMsg, Role
from stream.server import LivecanvasServer


async def test_shutdown_finishes_open_windows_then_says_bye(livecanvas_cache: Path) -> None:
    config = ServerConfig(host="127.0.0.1", port=0, idle_ms=60_000, drain_timeout_s=120, asr=False)
    server = LivecanvasServer(config)
    await server.start()
    url = f"ws://127.0.0.1:{server.port}"
    async with (
        connect(url, stream="live", tracks=("caption", "pt")) as publisher,
        connect(url, stream="live", role=Role.SUBSCRIBE, tracks=("pt",)) as viewer,
    ):
        await publisher.send_text("A complete sentence is on its way.")
        await publisher.send_text("And an unfinished one")  # waits for more text: flushed by the shutdown
        await asyncio.sleep(0.05)
        shutdown = asyncio.create_task(server.shutdown())
        received = [m async for m in publisher]
        watched = [m async for m in viewer]
        await shutdown
    for messages in (received, watched):
        assert isinstance(messages[-1], Bye)
        assert messages[-1].reason == "server shutting down"
        pt_finals = [m for m in messages if isinstance(m, FinalMsg) and m.track == "pt"]
        assert [f.window for f in pt_finals] == [0, 1]
        assert all(f.error is None for f in pt_finals)
    captions = [m.text for m in received if isinstance(m, FinalMsg) and m.track == "caption"]
    assert captions == ["A complete sentence is on its way.", "And an unfinished one"]
    assert not server.worker.alive
