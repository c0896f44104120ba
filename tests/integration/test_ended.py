"""Viewers are told when the publisher is done: ``ended`` over real WebSockets, after the last final.

A real server on loopback (its orphan grace, which is also how long a publisher that disconnected may
take to come back before its viewers are told, cut to 300 ms), real publishers and subscribers: the
subscriber gets ``ended`` after every final of the stream, for a publisher that sends ``end`` and for
one that just goes away; it stays connected, and a viewer that joins or resumes later is told too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect

from clients.python.client import CaptionSession, connect
from stream.config import ServerConfig
from stream.server import LivecanvasServer
from stream.wire.messages import Bye, Ended, FinalMsg, Role, ServerMessage
from tests.integration.conftest import url_of

TIMEOUT_S = 60.0
SENTENCES = ["The council meets again on Monday.", "The vote is expected next week."]


@pytest.fixture
async def server(livecanvas_cache: Path) -> AsyncIterator[LivecanvasServer]:
    config = ServerConfig(
        host="127.0.0.1", port=0, max_frame_bytes=64 * 1024, idle_ms=400, drain_timeout_s=60, asr=False,
        orphan_grace_ms=300,
    )  # fmt: skip
    async with LivecanvasServer(config) as running:
        yield running


async def until_ended(session: CaptionSession) -> list[ServerMessage]:
    """Everything the session receives up to and including ``ended``."""
    messages: list[ServerMessage] = []
    async with asyncio.timeout(TIMEOUT_S):
        async for message in session:
            messages.append(message)
            assert not isinstance(message, Bye), "a viewer is not sent bye when the stream ends"
            if isinstance(message, Ended):
                return messages
    raise AssertionError(f"the connection closed without ended: {messages}")


def finals_of(messages: list[ServerMessage]) -> list[tuple[str, int]]:
    return sorted((m.track, m.window) for m in messages if isinstance(m, FinalMsg))


async def test_a_viewer_gets_ended_after_the_last_final_when_the_publisher_ends(
    server: LivecanvasServer,
) -> None:
    url = url_of(server)
    async with connect(url, stream="talk", role=Role.SUBSCRIBE, tracks=("caption", "pt")) as viewer:
        async with connect(url, stream="talk", tracks=("caption",)) as publisher:
            for sentence in SENTENCES:
                await publisher.send_text(sentence)
            await publisher.end()
            async with asyncio.timeout(TIMEOUT_S):
                told = [m async for m in publisher]
        assert isinstance(told[-1], Bye)
        assert not [m for m in told if isinstance(m, Ended)], "the publisher gets bye, not ended"
        messages = await until_ended(viewer)
        ended = messages[-1]
        assert isinstance(ended, Ended)
        assert (ended.stream, ended.reason, ended.windows) == ("talk", "end", 2)
        assert ended.epoch == viewer.ready.epoch
        assert finals_of(messages) == [("caption", 0), ("caption", 1), ("pt", 0), ("pt", 1)]
        assert viewer.ended == ended

        # the viewer stays: a new publisher on the stream goes on where the last one stopped
        async with connect(url, stream="talk", tracks=("caption",)) as again:
            await again.send_text("One more thing.")
            await again.end()
            async with asyncio.timeout(TIMEOUT_S):
                _ = [m async for m in again]
        async with asyncio.timeout(TIMEOUT_S):
            first = await anext(m async for m in viewer if isinstance(m, FinalMsg))
        assert viewer.ended is None, "the stream went on"
        more = [first, *await until_ended(viewer)]
        assert finals_of(more) == [("caption", 2), ("pt", 2)]
        assert isinstance(more[-1], Ended)
        assert more[-1].windows == 3


async def test_a_viewer_gets_ended_after_the_last_final_when_the_publisher_disconnects(
    server: LivecanvasServer,
) -> None:
    url = url_of(server)
    async with connect(url, stream="drop", role=Role.SUBSCRIBE, tracks=("caption", "pt")) as viewer:
        async with connect(url, stream="drop", tracks=("caption",)) as publisher:
            await publisher.send_text("An unfinished thought without an ending")
        # gone without end: its text is still windowed, translated and finalised, then ended follows
        messages = await until_ended(viewer)
    ended = messages[-1]
    assert isinstance(ended, Ended)
    assert (ended.reason, ended.windows) == ("disconnected", 1)
    assert finals_of(messages) == [("caption", 0), ("pt", 0)]


async def test_a_viewer_that_joins_or_resumes_after_the_end_is_told_after_its_finals(
    server: LivecanvasServer,
) -> None:
    url = url_of(server)
    async with connect(url, stream="late", role=Role.SUBSCRIBE, tracks=("caption",)) as keeper:
        async with connect(url, stream="late", role=Role.SUBSCRIBE, tracks=("caption",)) as dropped:
            point = dropped.resume_point  # it drops before anything was said
        async with connect(url, stream="late", tracks=("caption",)) as publisher:
            for sentence in SENTENCES:
                await publisher.send_text(sentence)
            await publisher.end()
            async with asyncio.timeout(TIMEOUT_S):
                _ = [m async for m in publisher]
        await until_ended(keeper)  # the stream is ended now; the keeper keeps it (and its epoch) alive

        async with connect(url, stream="late", role="subscribe", tracks=("caption",), resume=point) as back:
            replayed = await until_ended(back)
        assert [(type(m), getattr(m, "window", None)) for m in replayed] == [
            (FinalMsg, 0),
            (FinalMsg, 1),
            (Ended, None),
        ]

        async with ws_connect(url) as websocket:  # a browser's view: JSON, right after ready
            hello = {"type": "hello", "protocol": 1, "stream": "late", "role": "subscribe"}
            await websocket.send(json.dumps(hello | {"tracks": ["caption"]}))
            async with asyncio.timeout(TIMEOUT_S):
                ready = json.loads(await websocket.recv())
                ended = json.loads(await websocket.recv())
        assert ready["type"] == "ready"
        assert ended == {
            "type": "ended", "stream": "late", "reason": "end", "windows": 2, "epoch": ready["epoch"],
            "seq": 2,
        }  # fmt: skip
