"""Faults on a real server: a viewer that stops reading, a client that vanishes mid-frame, an engine
that fails on one window. (The MQTT broker restarting is covered by tests/integration/test_mqtt.py:
``test_server_finals_and_translations_survive_a_broker_restart`` and
``test_bridge_delivers_every_final_once_across_broker_restarts``.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.python.client import CaptionSession, connect
from stream.config import ServerConfig
from stream.errors import CloseCode
from stream.limits import Limits
from stream.server import LivecanvasServer
from stream.wire.messages import Bye, FinalMsg, Role, ServerMessage
from tests.integration.conftest import url_of
from tests.integration.rawws import client_frame, open_raw

BACKLOG = 100
MAX_SEGMENTS = 12_000  # kernel socket buffers take megabytes before the outbox fills


def cut_off(server: LivecanvasServer) -> bool:
    value = server.metrics.registry.get_sample_value(
        "livecanvas_limit_hits_total", {"limit": "viewer_backlog"}
    )
    return bool(value)


async def collect(session: CaptionSession, until: str | None = None) -> list[ServerMessage]:
    """Messages until ``bye``, or until a final whose text starts with ``until``."""
    messages: list[ServerMessage] = []
    async for message in session:
        messages.append(message)
        if until is not None and isinstance(message, FinalMsg) and message.text.startswith(until):
            break
    return messages


@pytest.fixture
async def small_backlog(livecanvas_cache: Path) -> AsyncIterator[LivecanvasServer]:
    limits = Limits(max_viewer_backlog=BACKLOG, max_text_chars_per_s=1e6, text_burst_chars=10**7)
    config = ServerConfig(host="127.0.0.1", port=0, idle_ms=400, asr=False, limits=limits)
    async with LivecanvasServer(config) as running:
        yield running


async def test_a_viewer_that_stops_reading_is_cut_off_and_slows_no_one(
    small_backlog: LivecanvasServer,
) -> None:
    server = small_backlog
    url = url_of(server)
    stalled = await open_raw(server.port, rcvbuf=2048)  # a tiny receive window, and it never reads
    await stalled.send_msg(
        {"type": "hello", "protocol": 1, "stream": "s", "role": "subscribe", "tracks": ["caption"]}
    )
    padding = " ".join(["a-long-word-that-makes-each-caption-about-one-kilobyte"] * 18)
    async with (
        connect(url, stream="s", tracks=("caption",)) as publisher,
        connect(url, stream="s", role=Role.SUBSCRIBE, tracks=("caption",)) as viewer,
    ):
        reading = asyncio.create_task(collect(publisher))
        watching = asyncio.create_task(collect(viewer, until="Last caption."))
        started = time.monotonic()
        sent = 0
        while sent < MAX_SEGMENTS and not cut_off(server):
            await publisher.send_text(f"Caption {sent} {padding}.")
            sent += 1
            await asyncio.sleep(0.001)  # hundreds of captions a second: far faster than any live source
        await publisher.send_text("Last caption.")
        sent_s = time.monotonic() - started
        await publisher.end()
        published = await reading
        watched = await watching
    assert cut_off(server), f"the stalled viewer still connected after {sent} captions"
    expected = [f"Caption {i} {padding}." for i in range(sent)] + ["Last caption."]
    for messages in (published, watched):
        texts = [m.text for m in messages if isinstance(m, FinalMsg)]
        assert texts == expected, "no final lost or reordered for the viewers that keep up"
    assert isinstance(published[-1], Bye)
    assert sent_s < sent * 0.001 + 30, "the publisher was not held back by the stalled viewer"
    try:
        messages, code, reason = await asyncio.wait_for(stalled.read_until_close(), 15)
    finally:
        stalled.close()
    assert code == CloseCode.POLICY
    assert reason.startswith("slow_consumer")
    assert 0 < len(messages) < sent


async def test_a_client_vanishing_mid_frame_loses_nothing_it_sent(server: LivecanvasServer) -> None:
    url = url_of(server)
    async with connect(url, stream="s", role=Role.SUBSCRIBE, tracks=("caption", "pt")) as viewer:
        raw = await open_raw(server.port)
        await raw.send('{"type":"hello","protocol":1,"stream":"s","role":"publish","tracks":["caption"]}')
        await raw.send('{"type":"text","segment":"A sentence that was complete."}')
        await raw.send('{"type":"text","segment":"And one that was not"}')
        whole = client_frame('{"type":"text","segment":"This frame never arrives in full."}')
        raw.writer.write(whole[: len(whole) // 2])  # half a frame, then the client is gone
        await raw.writer.drain()
        raw.writer.transport.abort()
        finals: list[FinalMsg] = []
        async for message in viewer:
            if isinstance(message, FinalMsg):
                finals.append(message)
                if len(finals) == 4:
                    break
    by_track = {(f.track, f.window): f for f in finals}
    assert by_track[("caption", 0)].text == "A sentence that was complete."
    assert by_track[("caption", 1)].text == "And one that was not"  # flushed when the publisher vanished
    assert {("pt", 0), ("pt", 1)} <= set(by_track)
    for _ in range(50):
        if not server.connections:
            break
        await asyncio.sleep(0.1)
    assert not server.connections
    async with connect(url, stream="s", tracks=("caption",)) as publisher:  # the stream is free again
        await publisher.send_text("A new publisher.")
        await publisher.end()
        assert [m.text async for m in publisher if isinstance(m, FinalMsg)] == ["A new publisher."]


async def test_a_window_the_model_cannot_take_gets_an_error_final_and_the_stream_goes_on(
    server: LivecanvasServer,
) -> None:
    """A real input the real model fails on: one 4096-character word is far over its context budget."""
    poison = "x" * 4096
    async with connect(url_of(server), stream="s", tracks=("caption", "pt")) as publisher:
        await publisher.send_text("Before the bad window.")
        await publisher.send_text(poison)
        await publisher.flush()
        await publisher.send_text("After the bad window.")
        await publisher.end()
        messages = [m async for m in publisher]
    pt = [m for m in messages if isinstance(m, FinalMsg) and m.track == "pt"]
    assert [f.window for f in pt] == [0, 1, 2]
    assert pt[0].error is None
    assert pt[1].error is not None
    assert "budget" in pt[1].error
    assert pt[1].text == ""
    assert pt[2].error is None
    assert pt[2].text
    assert isinstance(messages[-1], Bye)
    assert "livecanvas_final_errors_total 1.0" in server.metrics.render().decode()
