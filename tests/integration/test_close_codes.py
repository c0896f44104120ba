"""The close codes the WebSocket library itself may send (docs/protocol.md section 8): frames our own
decoder never sees. A frame over ``max_frame_bytes`` gets the ``frame_too_large`` error and the
connection goes on; one over 4x that is refused by websockets with 1009; a text frame that is not
UTF-8 is refused with 1007. Both limits count a compressed (permessage-deflate) message as
decompressed (docs/protocol.md section 1)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
from websockets.asyncio.client import connect as ws_connect

from stream.config import ServerConfig
from stream.errors import ErrorCode
from stream.server import FRAME_SIZE_HEADROOM, LivecanvasServer
from tests.integration.rawws import OP_TEXT, RawSocket, client_frame, open_raw

MAX_FRAME = 4096
HELLO = {"type": "hello", "protocol": 1, "stream": "codes", "role": "publish", "tracks": ["caption"]}


@pytest.fixture
async def small_frames(livecanvas_cache: Path) -> AsyncIterator[LivecanvasServer]:
    config = ServerConfig(host="127.0.0.1", port=0, asr=False, max_frame_bytes=MAX_FRAME)
    async with LivecanvasServer(config) as running:
        yield running


@contextlib.asynccontextmanager
async def ready_socket(server: LivecanvasServer) -> AsyncIterator[RawSocket]:
    raw = await open_raw(server.port)
    try:
        await raw.send_msg(HELLO)
        _, payload = await raw.read_frame()
        assert msgpack.unpackb(payload)["type"] == "ready"
        yield raw
    finally:
        raw.close()
        with contextlib.suppress(ConnectionError):
            await raw.writer.wait_closed()


async def test_a_frame_over_the_limit_is_an_error_and_the_session_goes_on(
    small_frames: LivecanvasServer,
) -> None:
    async with ready_socket(small_frames) as raw:
        await raw.send_msg({"type": "text", "segment": "x" * (2 * MAX_FRAME)})
        _, payload = await raw.read_frame()
        error = msgpack.unpackb(payload)
        await raw.send_msg({"type": "end"})
        messages, code, _ = await raw.read_until_close()
    assert (error["type"], error["code"]) == ("error", ErrorCode.FRAME_TOO_LARGE)
    assert messages[-1]["type"] == "bye"
    assert code == 1000


async def test_a_frame_over_four_times_the_limit_closes_with_1009(small_frames: LivecanvasServer) -> None:
    async with ready_socket(small_frames) as raw:
        await raw.send(b"\x00" * (FRAME_SIZE_HEADROOM * MAX_FRAME + 1))
        _, code, _ = await raw.read_until_close()
    assert code == 1009


async def test_a_text_frame_that_is_not_utf8_closes_with_1007(small_frames: LivecanvasServer) -> None:
    async with ready_socket(small_frames) as raw:
        raw.writer.write(client_frame(b'{"type": "text", "segment": "\xff\xfe"}', opcode=OP_TEXT))
        await raw.writer.drain()
        _, code, _ = await raw.read_until_close()
    assert code == 1007


async def test_the_limits_count_a_compressed_message_as_decompressed(small_frames: LivecanvasServer) -> None:
    async with ws_connect(f"ws://127.0.0.1:{small_frames.port}", compression="deflate") as ws:
        assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        await ws.send(msgpack.packb(HELLO))
        assert msgpack.unpackb(await ws.recv())["type"] == "ready"
        # a few dozen bytes on the wire, 2x the limit once inflated
        await ws.send(msgpack.packb({"type": "text", "segment": "x" * (2 * MAX_FRAME)}))
        error = msgpack.unpackb(await ws.recv())
        assert (error["type"], error["code"]) == ("error", ErrorCode.FRAME_TOO_LARGE)
        await ws.send(msgpack.packb({"type": "text", "segment": "x" * (FRAME_SIZE_HEADROOM * MAX_FRAME)}))
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1009
