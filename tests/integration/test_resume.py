"""Resume on a real server: a client that comes back with ``resume`` gets every final it missed, in
order and once, then live updates (docs/protocol.md section 5)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from clients.python.client import CaptionSession, connect
from stream.errors import ErrorCode
from stream.messages import ErrorMsg, FinalMsg, Role, ServerMessage
from stream.server import LivecanvasServer
from tests.integration.conftest import url_of

TRACKS = ("caption", "pt")


async def finals_until(session: CaptionSession, seen: list[ServerMessage], count: int) -> None:
    """Read into ``seen`` until ``count`` pt finals have arrived in all."""
    while sum(isinstance(m, FinalMsg) and m.track == "pt" for m in seen) < count:
        async for message in session:
            seen.append(message)
            break


def finals_by_track(messages: list[ServerMessage]) -> dict[str, list[int]]:
    by_track: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        if isinstance(message, FinalMsg):
            by_track[message.track].append(message.window)
    return by_track


async def test_a_resumed_viewer_gets_every_missed_final_once_in_order_then_live(
    server: LivecanvasServer,
) -> None:
    url = url_of(server)
    async with connect(url, stream="talk", tracks=TRACKS) as publisher:
        before: list[ServerMessage] = []
        async with connect(url, stream="talk", role=Role.SUBSCRIBE, tracks=TRACKS) as viewer:
            await publisher.send_text("The first sentence arrives while the viewer is here.")
            await publisher.send_text("So does the second one.")
            await finals_until(viewer, before, 2)
            resume_from = viewer.resume_point
            viewer.websocket.transport.abort()  # the network drops: no close handshake
        for sentence in ("This one is missed.", "And this one too.", "A third one goes by."):
            await publisher.send_text(sentence)
        pub_seen: list[ServerMessage] = []
        await finals_until(publisher, pub_seen, 5)
        after: list[ServerMessage] = []
        async with connect(
            url, stream="talk", role=Role.SUBSCRIBE, tracks=TRACKS, resume=resume_from
        ) as back:
            await finals_until(back, after, 3)  # the replay
            first = next(m for m in after if isinstance(m, FinalMsg))
            assert first.seq == resume_from.last_seq + 1, "numbering continues after the last seq seen"
            await publisher.send_text("Live again.")
            await finals_until(back, after, 4)
    assert not [m for m in after if isinstance(m, ErrorMsg)]
    seen, missed = finals_by_track(before), finals_by_track(after)
    for track in TRACKS:
        assert seen[track] + missed[track] == list(range(6)), f"{track}: every window once, in order"
    assert [m.text for m in after if isinstance(m, FinalMsg) and m.track == "caption"] == [
        "This one is missed.", "And this one too.", "A third one goes by.", "Live again."
    ]  # fmt: skip


async def test_resuming_a_session_that_still_looks_alive_takes_it_over(server: LivecanvasServer) -> None:
    url = url_of(server)
    async with contextlib.AsyncExitStack() as stack:
        publisher = await stack.enter_async_context(connect(url, stream="talk", tracks=("caption",)))
        old = await stack.enter_async_context(
            connect(url, stream="talk", role=Role.SUBSCRIBE, tracks=("caption",))
        )
        await publisher.send_text("Seen by the old connection.")
        seen: list[ServerMessage] = []
        async for message in old:
            seen.append(message)
            break
        point = old.resume_point  # the old socket stays open: the server does not know it is gone
        await publisher.send_text("Not read by the old connection.")
        await asyncio.sleep(0.2)
        async with connect(url, stream="talk", role=Role.SUBSCRIBE, tracks=("caption",), resume=point) as new:
            await old.websocket.wait_closed()
            assert old.websocket.close_code == 1001
            await publisher.send_text("Live on the new one.")
            got: list[FinalMsg] = []
            async for message in new:
                assert isinstance(message, FinalMsg)
                got.append(message)
                if len(got) == 2:
                    break
    assert [m.text for m in seen if isinstance(m, FinalMsg)] == ["Seen by the old connection."]
    assert [m.text for m in got] == ["Not read by the old connection.", "Live on the new one."]


async def test_an_unknown_session_is_an_error_and_live_updates_follow(server: LivecanvasServer) -> None:
    from clients.python.client import ResumePoint

    url = url_of(server)
    async with (
        connect(url, stream="talk", tracks=("caption",)) as publisher,
        connect(
            url, stream="talk", role=Role.SUBSCRIBE, tracks=("caption",), resume=ResumePoint("nobody", 40)
        ) as viewer,
    ):
        await publisher.send_text("Still live.")
        received = []
        async for message in viewer:
            received.append(message)
            if isinstance(message, FinalMsg):
                break
    assert isinstance(received[0], ErrorMsg)
    assert (received[0].code, received[0].ref, received[0].seq) == (ErrorCode.RESUME_UNKNOWN, "resume", 41)
    assert isinstance(received[-1], FinalMsg)
    assert received[-1].text == "Still live."
