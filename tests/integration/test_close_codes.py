"""The close codes the WebSocket library itself may send (docs/protocol.md section 8): frames our own
decoder never sees. A frame over ``max_frame_bytes`` gets the ``frame_too_large`` error and the
connection goes on; one over 4x that is refused by websockets with 1009; a text frame that is not
UTF-8 is refused with 1007."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest

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
