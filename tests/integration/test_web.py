"""Plain HTTP and WebSockets on one port of a real server: pages, the stream list, caption downloads."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from clients.python.client import connect
from stream.server import LivecanvasServer
from stream.wire.messages import FinalMsg
from tests.integration.conftest import url_of


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


async def get(server: LivecanvasServer, path: str) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(fetch, f"http://127.0.0.1:{server.port}{path}")


async def test_pages_and_websockets_share_the_port(server: LivecanvasServer) -> None:
    status, headers, body = await get(server, "/overlay?stream=talk")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    status, headers, body = await get(server, "/static/captions.js")
    assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    assert b"export class CaptionBoard" in body
    assert (await get(server, "/nothing-here"))[0] == 404
    async with connect(url_of(server), stream="same-port", tracks=("caption",)) as session:
        await session.send_text("Sockets still work.")
        await session.end()
        finals = [m.text async for m in session if isinstance(m, FinalMsg)]
    assert finals == ["Sockets still work."]


async def test_finals_are_listed_and_downloadable_after_the_stream_ends(server: LivecanvasServer) -> None:
    async with connect(url_of(server), stream="minutes", tracks=("caption", "pt")) as session:
        status, _, body = await get(server, "/streams")
        [row] = json.loads(body)["streams"]
        assert (row["stream"], row["publishing"], row["tracks"]) == ("minutes", True, ["caption", "pt"])
        for sentence in ("The minutes were approved.", "The next meeting is in May."):
            await session.send_text(sentence)
        await session.end()
        finals = [m async for m in session if isinstance(m, FinalMsg)]
    pt = [m.text for m in finals if m.track == "pt"]
    assert len(pt) == 2
    status, headers, body = await get(server, "/captions/minutes/caption.srt")
    assert status == 200
    assert headers["content-type"] == "application/x-subrip; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    text = body.decode()
    assert "The minutes were approved." in text
    assert "The next meeting is in May." in text
    document = json.loads((await get(server, "/captions/minutes/pt.json"))[2])
    assert [f["text"] for f in document["finals"]] == pt
    [row] = json.loads((await get(server, "/streams"))[2])["streams"]
    assert (row["live"], row["finals"]) == (False, {"caption": 2, "pt": 2})


@pytest.mark.parametrize("path", ["/captions/nobody/caption.vtt", "/static/../README.md"])
async def test_unknown_paths_are_404(server: LivecanvasServer, path: str) -> None:
    status, headers, _ = await get(server, path)
    assert status == 404
    assert headers["x-content-type-options"] == "nosniff"
