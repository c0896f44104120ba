"""Graceful shutdown: windows in flight get their finals (or, past the deadline, an error final), then
every client gets a bye and a going-away close; SIGTERM does all that to `livecanvas serve`."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from clients.python.client import CaptionSession, connect
from stream.config import ServerConfig
from stream.errors import CloseCode
from stream.server import LivecanvasServer
from stream.wire.messages import Bye, ErrorMsg, FinalMsg, Role, ServerMessage
from tests.integration.serve_process import running_serve


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Wait for the server (on this loop) to reach a state; fail loudly if it does not."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout_s} s"
        await asyncio.sleep(0.01)


def pending(server: LivecanvasServer, stream: str, windows: int, *, unfinished: bool) -> bool:
    """The hub has committed ``windows`` windows of ``stream`` (and holds unfinished text)."""
    state = server.hub.streams.get(stream)
    return (
        state is not None and state.next_window == windows and bool(state.windower.pending_text) == unfinished
    )


async def barrier(session: CaptionSession) -> list[ServerMessage]:
    """Everything sent so far has been read by the server: an empty segment is answered with an error,
    and the server reads a connection's frames in order. Returns the messages read meanwhile."""
    await session.websocket.send('{"type": "text", "segment": ""}')  # raw: the client refuses to send it
    seen: list[ServerMessage] = []
    async for message in session:
        seen.append(message)
        if isinstance(message, ErrorMsg):
            return seen
    raise AssertionError("the connection ended before the server answered")


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
        await until(lambda: pending(server, "live", 1, unfinished=True), "the text in the hub")
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
    server.hub._submit = lambda job: None  # the engine never finishes them, however fast it is
    url = f"ws://127.0.0.1:{server.port}"
    async with (
        connect(url, stream="live", role=Role.SUBSCRIBE, tracks=("caption", "pt")) as viewer,
        connect(url, stream="live", tracks=("caption",)) as publisher,
    ):
        for sentence in ("One sentence in flight.", "Another right behind it.", "And a third."):
            await publisher.send_text(sentence)
        await until(lambda: pending(server, "live", 3, unfinished=False), "three windows in the hub")
        shutdown = asyncio.create_task(server.shutdown())
        watched = [m async for m in viewer]
        await shutdown
    pt = [m for m in watched if isinstance(m, FinalMsg) and m.track == "pt"]
    assert [f.window for f in pt] == [0, 1, 2], "one final per window, in order, even past the deadline"
    assert all(f.error is not None and "shut down" in f.error for f in pt)
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
            early = await barrier(publisher)  # the server process has both segments
            process.send_signal(signal.SIGTERM)
            received = early + [m async for m in publisher]
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


async def test_healthz_says_draining_for_the_whole_drain_and_new_sessions_are_refused(
    livecanvas_cache: Path,
) -> None:
    config = ServerConfig(host="127.0.0.1", port=0, idle_ms=60_000, drain_timeout_s=3, asr=False)
    server = LivecanvasServer(config)
    await server.start()
    submitted = asyncio.Event()
    server.hub._submit = lambda job: submitted.set()  # no engine: the drain runs to its deadline
    url = f"ws://127.0.0.1:{server.port}"
    async with connect(url, stream="slow", tracks=("pt",)) as publisher:
        await publisher.send_text("A sentence the engine never finishes.")
        await asyncio.wait_for(submitted.wait(), 30)
        shutdown = asyncio.create_task(server.shutdown())
        await asyncio.sleep(0.2)  # well inside the 3 s drain
        assert not shutdown.done()
        health = await asyncio.to_thread(fetch_status, f"http://127.0.0.1:{server.port}/healthz")
        assert health == (
            503,
            '{"status":"draining","pairs":[["en","pt-BR"],["pt-BR","en"]]}',
        )  # answered, not connection refused
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, stream="late", tracks=("caption",)):
                pass
        assert refused.value.response.status_code == 503
        received = [m async for m in publisher]
        await shutdown
    finals = [m for m in received if isinstance(m, FinalMsg)]
    assert [f.window for f in finals] == [0]
    assert finals[0].error is not None  # past the deadline: an error final, not silence
    assert isinstance(received[-1], Bye)


def fetch_status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
