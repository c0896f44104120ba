"""End to end over real WebSockets: text in, caption finals, translation drafts then finals, bye."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import msgpack
import pytest
from websockets.asyncio.client import connect as ws_connect

from clients.python.client import connect
from stream.errors import ErrorCode, ProtocolError
from stream.server import LivecanvasServer
from stream.wire.messages import Bye, DraftMsg, ErrorMsg, FinalMsg, Role, ServerMessage
from tests.integration.conftest import url_of

SENTENCES = [
    "The council meets again on Monday.",
    "Residents asked for more shade at bus stops,",
    "and for cooling centres that stay open all night.",
    "The vote is expected next week.",
]


async def publish_and_collect(
    url: str, stream: str, sentences: list[str], tracks: tuple[str, ...] = ("caption", "pt")
) -> list[ServerMessage]:
    messages: list[ServerMessage] = []
    async with connect(url, stream=stream, tracks=tracks) as session:
        assert session.ready.stream == stream
        for sentence in sentences:
            await session.send_text(sentence)
        await session.end()
        async for message in session:
            messages.append(message)
    return messages


def check_session(messages: list[ServerMessage], *, expected_windows: int, tracks: tuple[str, ...]) -> None:
    seqs = [m.seq for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq must be gapless"
    assert seqs[0] == 2  # ready was 1
    assert isinstance(messages[-1], Bye)
    assert not [m for m in messages if isinstance(m, ErrorMsg)]
    finals: dict[str, list[int]] = defaultdict(list)
    first_draft: dict[tuple[str, int], int] = {}
    final_at: dict[tuple[str, int], int] = {}
    for position, message in enumerate(messages):
        if isinstance(message, DraftMsg):
            key = (message.track, message.window)
            assert key not in final_at, f"draft after final for {key}"
            first_draft.setdefault(key, position)
        elif isinstance(message, FinalMsg):
            key = (message.track, message.window)
            assert key not in final_at, f"final sent twice for {key}"
            assert message.error is None
            final_at[key] = position
            finals[message.track].append(message.window)
    for track in tracks:
        assert finals[track] == list(range(expected_windows)), f"{track}: finals once each, in window order"
    for (track, window), position in final_at.items():
        if track != "caption":
            assert first_draft[(track, window)] < position, f"no draft before the final of {track}#{window}"


async def test_two_concurrent_sessions_get_drafts_then_finals_exactly_once(server: LivecanvasServer) -> None:
    url = url_of(server)
    first, second = await asyncio.gather(
        publish_and_collect(url, "alpha", SENTENCES),
        publish_and_collect(url, "beta", SENTENCES[:2]),
    )
    check_session(first, expected_windows=3, tracks=("caption", "pt"))  # the comma joins two segments
    check_session(second, expected_windows=2, tracks=("caption", "pt"))
    captions = [m.text for m in first if isinstance(m, FinalMsg) and m.track == "caption"]
    assert captions == [SENTENCES[0], f"{SENTENCES[1]} {SENTENCES[2]}", SENTENCES[3]]
    assert server.worker.stats.max_batch_seen >= 2, "canvases of both sessions should share forwards"


async def test_subscribers_share_one_translation_per_stream_and_language(server: LivecanvasServer) -> None:
    url = url_of(server)
    async with (
        connect(url, stream="shared", role=Role.SUBSCRIBE, tracks=("pt",)) as viewer_one,
        connect(url, stream="shared", role=Role.SUBSCRIBE, tracks=("pt", "caption")) as viewer_two,
    ):
        jobs_before = server.worker.stats.jobs
        published = await publish_and_collect(url, "shared", SENTENCES[:1], tracks=("caption",))
        assert [m.text for m in published if isinstance(m, FinalMsg)] == [SENTENCES[0]]
        seen: list[list[FinalMsg]] = []
        for viewer in (viewer_one, viewer_two):
            finals: list[FinalMsg] = []
            async for message in viewer:
                if isinstance(message, FinalMsg):
                    finals.append(message)
                if any(f.track == "pt" for f in finals):
                    break
            seen.append(finals)
        assert server.worker.stats.jobs - jobs_before == 1  # one pt canvas for two viewers
        pt_one = [f.text for f in seen[0] if f.track == "pt"]
        pt_two = [f.text for f in seen[1] if f.track == "pt"]
        assert pt_one == pt_two
        assert len(pt_one) == 1
        assert [f.text for f in seen[1] if f.track == "caption"] == [SENTENCES[0]]


async def test_bad_frames_get_errors_and_the_connection_keeps_working(server: LivecanvasServer) -> None:
    async with ws_connect(url_of(server)) as websocket:
        await websocket.send(b"\xc1\xff not msgpack")
        error = msgpack.unpackb(await websocket.recv())
        assert (error["type"], error["code"], error["seq"]) == ("error", "bad_frame", 1)
        await websocket.send(msgpack.packb({"type": "text", "segment": "too early"}))
        error = msgpack.unpackb(await websocket.recv())
        assert (error["code"], error["seq"]) == (ErrorCode.NOT_READY, 2)
        hello = {"type": "hello", "protocol": 1, "stream": "raw", "role": "publish", "tracks": ["caption"]}
        await websocket.send(msgpack.packb(hello))
        ready = msgpack.unpackb(await websocket.recv())
        assert (ready["type"], ready["seq"], ready["protocol"]) == ("ready", 3, 1)
        await websocket.send(msgpack.packb({"type": "teleport"}))
        assert msgpack.unpackb(await websocket.recv())["code"] == ErrorCode.UNKNOWN_TYPE
        await websocket.send(msgpack.packb({"type": "text", "segment": 42}))
        assert msgpack.unpackb(await websocket.recv())["code"] == ErrorCode.BAD_FIELD
        await websocket.send(b"\x00" * (server.config.max_frame_bytes + 1))
        assert msgpack.unpackb(await websocket.recv())["code"] == ErrorCode.FRAME_TOO_LARGE
        await websocket.send(msgpack.packb({"type": "audio", "pcm": b"\x00\x00"}))
        assert msgpack.unpackb(await websocket.recv())["code"] == ErrorCode.UNSUPPORTED
        await websocket.send(msgpack.packb({"type": "text", "segment": "Still here."}))
        final = msgpack.unpackb(await websocket.recv())
        assert (final["type"], final["track"], final["text"], final["seq"]) == (
            "final",
            "caption",
            "Still here.",
            8,
        )


async def test_json_text_frames_are_answered_in_json(server: LivecanvasServer) -> None:
    async with ws_connect(url_of(server)) as websocket:
        await websocket.send(
            json.dumps(
                {"type": "hello", "protocol": 1, "stream": "web", "role": "publish", "tracks": ["caption"]}
            )
        )
        ready = await websocket.recv()
        assert isinstance(ready, str)
        assert json.loads(ready)["type"] == "ready"
        await websocket.send(json.dumps({"type": "text", "segment": "Hello from a browser."}))
        final = json.loads(await websocket.recv())
        assert (final["type"], final["text"]) == ("final", "Hello from a browser.")


async def test_second_publisher_on_a_stream_is_refused(server: LivecanvasServer) -> None:
    url = url_of(server)
    async with connect(url, stream="solo"):
        with pytest.raises(ProtocolError) as refused:
            async with connect(url, stream="solo"):
                pass
        assert refused.value.code == ErrorCode.INVALID_STATE


async def test_server_answers_new_clients_while_the_model_works(server: LivecanvasServer) -> None:
    url = url_of(server)
    long_text = [f"Sentence number {n} of a long stretch of speech." for n in range(12)]
    async with connect(url, stream="busy", tracks=("caption", "pt", "pt-BR")) as publisher:
        for sentence in long_text:
            await publisher.send_text(sentence)
        async with connect(url, stream="newcomer", role=Role.SUBSCRIBE, tracks=("caption",)) as late:
            assert late.ready.stream == "newcomer"
            # the handshake completed while canvases of the first stream were still in flight
            assert server.hub.streams["busy"].pending_windows > 0
        await publisher.end()
        finals = [m async for m in publisher if isinstance(m, FinalMsg)]
    assert len(finals) == 3 * len(long_text)


async def test_publisher_disconnect_mid_stream_still_finalises_its_text_for_viewers(
    server: LivecanvasServer,
) -> None:
    url = url_of(server)
    async with connect(url, stream="drop", role=Role.SUBSCRIBE, tracks=("caption", "pt")) as viewer:
        async with connect(url, stream="drop", tracks=("caption",)) as publisher:
            await publisher.send_text("An unfinished thought without an ending")
        # the publisher vanished: its pending text is still windowed and translated for the viewer
        finals: list[FinalMsg] = []
        async for message in viewer:
            if isinstance(message, FinalMsg):
                finals.append(message)
            if len(finals) == 2:
                break
    assert sorted(f.track for f in finals) == ["caption", "pt"]
    assert all(f.window == 0 for f in finals)
