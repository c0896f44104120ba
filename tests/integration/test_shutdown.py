"""Graceful shutdown: windows in flight get their finals (or, past the deadline, an error final), then
every client gets a bye and a going-away close; SIGTERM does all that to `livecanvas serve`."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import pytest

from clients.python.client import connect
from stream.config import ServerConfig
from stream.errors import CloseCode
from stream.messages import Bye, FinalMsg, Role
from stream.server import LivecanvasServer
from tests.integration.serve_process import running_serve


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


async def test_windows_past_the_deadline_get_an_error_final_not_silence(livecanvas_cache: Path) -> None:
    config = ServerConfig(host="127.0.0.1", port=0, idle_ms=60_000, drain_timeout_s=0.001, asr=False)
    server = LivecanvasServer(config)
    await server.start()
    url = f"ws://127.0.0.1:{server.port}"
    async with (
        connect(url, stream="live", role=Role.SUBSCRIBE, tracks=("caption", "pt")) as viewer,
        connect(url, stream="live", tracks=("caption",)) as publisher,
    ):
        for sentence in ("One sentence in flight.", "Another right behind it.", "And a third."):
            await publisher.send_text(sentence)
        await asyncio.sleep(0.05)
        shutdown = asyncio.create_task(server.shutdown())
        watched = [m async for m in viewer]
        await shutdown
    pt = [m for m in watched if isinstance(m, FinalMsg) and m.track == "pt"]
    assert [f.window for f in pt] == [0, 1, 2], "one final per window, in order, even past the deadline"
    assert any(f.error is not None and "shut down" in f.error for f in pt)
    assert isinstance(watched[-1], Bye)


async def test_sigterm_finishes_windows_says_bye_and_closes_going_away(
    livecanvas_cache: Path, tmp_path: Path
) -> None:
    serve = running_serve(livecanvas_cache, tmp_path, "sigterm-test", "--idle-ms", "60000")
    async with serve as (port, process):
        url = f"ws://127.0.0.1:{port}"
        async with (
            connect(url, stream="live", tracks=("caption", "pt"), token="sigterm-test") as publisher,
            connect(url, stream="live", role=Role.SUBSCRIBE, tracks=("pt",), token="sigterm-test") as viewer,
        ):
            await publisher.send_text("A complete sentence is on its way.")
            await publisher.send_text("And an unfinished one")
            await asyncio.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            received = [m async for m in publisher]
            watched = [m async for m in viewer]
            for session in (publisher, viewer):
                await asyncio.wait_for(session.websocket.wait_closed(), 30)
            codes = (publisher.websocket.close_code, viewer.websocket.close_code)
        output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, output.decode()[-2000:]
    assert codes == (CloseCode.GOING_AWAY, CloseCode.GOING_AWAY)
    for messages in (received, watched):
        assert isinstance(messages[-1], Bye)
        assert messages[-1].reason == "server shutting down"
        pt_finals = [m for m in messages if isinstance(m, FinalMsg) and m.track == "pt"]
        assert [f.window for f in pt_finals] == [0, 1]
        assert all(f.error is None for f in pt_finals)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
