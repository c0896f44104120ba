"""Authentication and limits on a real server over real WebSockets and HTTP (docs/operations.md)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from clients.python.client import connect
from stream.auth import TokenTable
from stream.config import ServerConfig
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.limits import Limits
from stream.server import LivecanvasServer
from stream.wire.messages import ErrorMsg, FinalMsg, Role
from tests.integration.conftest import url_of
from tests.integration.rawws import open_raw

STUDIO, VIEWER, OPS = "studio-secret-1", "viewer-secret-2", "ops-secret-3"
TOKENS = f"""
[[token]]
name = "studio"
secret = "{STUDIO}"
roles = ["publish", "subscribe"]
streams = ["talk-*"]
max_sessions = 3

[[token]]
name = "viewer"
secret = "{VIEWER}"
roles = ["subscribe"]

[[token]]
name = "ops"
secret = "{OPS}"
roles = ["admin"]
"""
LIMITS = Limits(
    hello_timeout_s=1.0,
    max_tracks_per_stream=1,
    max_text_chars_per_s=100,
    text_burst_chars=200,
    max_sessions=12,
)


@pytest.fixture
async def secure(livecanvas_cache: Path) -> AsyncIterator[LivecanvasServer]:
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        idle_ms=400,
        asr=False,
        auth=TokenTable.from_toml_text(TOKENS),
        limits=LIMITS,
    )
    async with LivecanvasServer(config) as running:
        yield running


async def refused(url: str, **kwargs: object) -> str:
    with pytest.raises(ProtocolError) as caught:
        async with connect(url, **kwargs):  # type: ignore[arg-type]
            pass
    return caught.value.code


async def test_tokens_grant_roles_per_stream(secure: LivecanvasServer) -> None:
    url = url_of(secure)
    async with connect(url, stream="talk-1", token=STUDIO) as publisher:
        assert publisher.ready.role == Role.PUBLISH
        async with connect(url, stream="talk-1", role=Role.SUBSCRIBE, token=VIEWER) as viewer:
            await publisher.send_text("Only those with a token read this.")
            async for message in viewer:
                if isinstance(message, FinalMsg):
                    assert message.text == "Only those with a token read this."
                    break
    assert await refused(url, stream="keynote", token=STUDIO) == ErrorCode.FORBIDDEN
    assert await refused(url, stream="talk-1", token=VIEWER) == ErrorCode.FORBIDDEN  # subscribe-only
    assert await refused(url, stream="talk-1", token="guess") == ErrorCode.UNAUTHORIZED
    assert await refused(url, stream="talk-1") == ErrorCode.UNAUTHORIZED
    async with connect(url, stream="keynote", token=OPS) as admin:  # admin: any stream, any role
        assert admin.ready.stream == "keynote"


async def test_a_bearer_header_authenticates_a_hello_without_token(secure: LivecanvasServer) -> None:
    async with ws_connect(url_of(secure), additional_headers={"Authorization": f"Bearer {VIEWER}"}) as ws:
        await ws.send(
            json.dumps(
                {"type": "hello", "protocol": 1, "stream": "s", "role": "subscribe", "tracks": ["caption"]}
            )
        )
        assert json.loads(await ws.recv())["type"] == "ready"


async def test_a_refused_hello_gets_an_error_then_close_1008(secure: LivecanvasServer) -> None:
    raw = await open_raw(secure.port)
    await raw.send_msg(
        {
            "type": "hello",
            "protocol": 1,
            "stream": "talk-1",
            "role": "publish",
            "tracks": ["caption"],
            "token": "nope",
        }
    )
    messages, code, reason = await asyncio.wait_for(raw.read_until_close(), 5)
    assert [(m["type"], m["code"], m["ref"]) for m in messages] == [("error", "unauthorized", "hello")]
    assert code == CloseCode.POLICY
    assert reason.startswith("unauthorized")
    raw.close()


async def test_a_client_that_never_says_hello_is_closed_after_the_timeout(secure: LivecanvasServer) -> None:
    raw = await open_raw(secure.port)
    started = asyncio.get_running_loop().time()
    messages, code, reason = await asyncio.wait_for(raw.read_until_close(), 5)
    waited = asyncio.get_running_loop().time() - started
    assert 0.9 <= waited < 3
    assert [m["code"] for m in messages] == [ErrorCode.HELLO_TIMEOUT]
    assert (code, reason.split(":")[0]) == (CloseCode.POLICY, "hello_timeout")
    raw.close()
    async with ws_connect(url_of(secure)) as ws:  # a slow trickle of bad frames does not reset the clock
        for _ in range(3):
            await ws.send(b"\xc1")
            await asyncio.sleep(0.4)
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == CloseCode.POLICY


async def test_sessions_per_token_are_capped(secure: LivecanvasServer) -> None:
    url = url_of(secure)
    async with connect(url, stream="talk-a", token=STUDIO), connect(url, stream="talk-b", token=STUDIO):
        async with connect(url, stream="talk-c", role=Role.SUBSCRIBE, token=STUDIO):
            assert await refused(url, stream="talk-d", token=STUDIO) == ErrorCode.TOO_MANY_SESSIONS
            async with connect(url, stream="talk-d", role=Role.SUBSCRIBE, token=VIEWER):
                pass  # other tokens are not affected
        async with connect(url, stream="talk-d", token=STUDIO):  # one closed: room again
            pass


async def test_sessions_in_total_are_capped_at_the_handshake(secure: LivecanvasServer) -> None:
    sockets = [await open_raw(secure.port) for _ in range(LIMITS.max_sessions)]
    with pytest.raises(InvalidStatus) as caught:
        async with ws_connect(url_of(secure)):
            pass
    assert caught.value.response.status_code == 503
    assert b"too_many_sessions" in caught.value.response.body
    for raw in sockets:
        raw.close()
    deadline = time.monotonic() + 5
    while len(secure.connections) >= LIMITS.max_sessions:  # the server notices the closed sockets
        assert time.monotonic() < deadline, f"{len(secure.connections)} connections still counted after 5 s"
        await asyncio.sleep(0.05)
    async with connect(url_of(secure), stream="s", role=Role.SUBSCRIBE, token=VIEWER):
        pass


async def test_target_tracks_per_stream_are_capped(secure: LivecanvasServer) -> None:
    url = url_of(secure)
    async with connect(url, stream="talk-1", tracks=("caption", "pt"), token=STUDIO):
        assert await refused(url, stream="talk-1", role=Role.SUBSCRIBE, tracks=("pt-BR",), token=VIEWER) == (
            ErrorCode.TOO_MANY_TRACKS
        )
        async with connect(url, stream="talk-1", role=Role.SUBSCRIBE, tracks=("caption", "pt"), token=VIEWER):
            pass  # a track the stream already has costs nothing


async def test_text_over_the_rate_gets_rate_limited_errors_and_nothing_is_silently_lost(
    secure: LivecanvasServer,
) -> None:
    segments = [f"Sentence number {i} is about forty characters." for i in range(12)]
    async with connect(url_of(secure), stream="talk-1", token=STUDIO) as publisher:
        for segment in segments:
            await publisher.send_text(segment)
        await publisher.end()
        messages = [m async for m in publisher]
    captions = [m.text for m in messages if isinstance(m, FinalMsg)]
    limited = [m for m in messages if isinstance(m, ErrorMsg)]
    assert {m.code for m in limited} == {ErrorCode.RATE_LIMITED}
    assert {m.ref for m in limited} == {"text"}
    assert 3 <= len(captions) <= 6  # the 200-character burst, and what 100 characters/s refilled
    assert len(captions) + len(limited) == len(segments)
    assert captions == segments[: len(captions)]


def http_get(url: str, token: str | None = None, header: bool = True) -> tuple[int, bytes]:
    if token and not header:
        url += ("&" if "?" in url else "?") + f"token={token}"
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token and header else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def test_http_data_needs_a_subscribe_token_and_metrics_an_admin_one(secure: LivecanvasServer) -> None:
    base = f"http://127.0.0.1:{secure.port}"
    async with connect(url_of(secure), stream="talk-1", token=STUDIO) as publisher:
        await publisher.send_text("Kept for the downloads.")
        await publisher.end()
        _ = [m async for m in publisher]
    get = asyncio.to_thread
    assert (await get(http_get, f"{base}/streams"))[0] == 401
    assert (await get(http_get, f"{base}/streams", "wrong"))[0] == 401
    for header in (True, False):
        status, body = await get(http_get, f"{base}/streams", VIEWER, header)
        assert status == 200
        assert [s["stream"] for s in json.loads(body)["streams"]] == ["talk-1"]
        status, body = await get(http_get, f"{base}/captions/talk-1/caption.srt", VIEWER, header)
        assert (status, b"Kept for the downloads." in body) == (200, True)
    assert (await get(http_get, f"{base}/captions/talk-1/caption.srt"))[0] == 401
    status, body = await get(http_get, f"{base}/metrics", VIEWER)
    assert (status, body.startswith(b"forbidden")) == (403, True)
    status, body = await get(http_get, f"{base}/metrics", OPS)
    assert status == 200
    assert b'livecanvas_auth_failures_total{reason="unauthorized"}' in body
    assert (await get(http_get, f"{base}/healthz")) == (
        200,
        b'{"status":"ok","pairs":[["en","pt-BR"],["pt-BR","en"]]}',
    )
    assert (await get(http_get, f"{base}/overlay"))[0] == 200  # the pages carry no data: public


async def test_streams_lists_only_what_the_token_may_read(secure: LivecanvasServer) -> None:
    url = url_of(secure)
    async with connect(url, stream="talk-1", token=STUDIO), connect(url, stream="keynote", token=OPS):
        base = f"http://127.0.0.1:{secure.port}"
        status, body = await asyncio.to_thread(http_get, f"{base}/streams", STUDIO)
        assert status == 200
        assert [s["stream"] for s in json.loads(body)["streams"]] == ["talk-1"]
        status, body = await asyncio.to_thread(http_get, f"{base}/streams", VIEWER)
        assert sorted(s["stream"] for s in json.loads(body)["streams"]) == ["keynote", "talk-1"]
        status, _ = await asyncio.to_thread(http_get, f"{base}/captions/keynote/caption.json", STUDIO)
        assert status == 403
