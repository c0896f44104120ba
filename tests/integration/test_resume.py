"""Resume on a real server: a client that comes back with ``resume`` gets every final it missed, in
order and once, then live updates (docs/protocol.md section 5), also when the stream ended and started
again under its name while the client was away (a new epoch)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from clients.python.client import CaptionSession, Received, connect
from stream.config import ServerConfig
from stream.errors import ErrorCode
from stream.limits import Limits
from stream.server import LivecanvasServer
from stream.wire.messages import Bye, ErrorMsg, FinalMsg, Role, ServerMessage
from tests.integration.conftest import url_of

TRACKS = ("caption", "pt")
SHORT_HISTORY_S = 1.5  # finals (and parked sessions) kept for resume on ``short_history_server``
STREAM = "show"
FIRST = ("The first programme starts.", "It ends here.")
SECOND = ("A new programme under the old name.", "Its second sentence.", "And its third one.")
LIVE = "Live again."


@pytest.fixture
async def short_history_server(livecanvas_cache: Path) -> AsyncIterator[LivecanvasServer]:
    config = ServerConfig(
        host="127.0.0.1", port=0, idle_ms=400, drain_timeout_s=60, asr=False,
        limits=Limits(history_s=SHORT_HISTORY_S),
    )  # fmt: skip
    async with LivecanvasServer(config) as running:
        yield running


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
            last_words = [m async for m in old]  # what the old socket still gets: bye, then 1001
            await old.websocket.wait_closed()
            assert old.websocket.close_code == 1001
            assert isinstance(last_words[-1], Bye), last_words
            assert last_words[-1].reason == "session resumed on another connection"
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


# -- a stream that ends and starts again under its name while a viewer is away ------------------------


async def read_until(session: CaptionSession, seen: list[Received], text: str) -> None:
    """Read into ``seen`` up to the final whose text is ``text``."""
    async for item in session.received():
        seen.append(item)
        if isinstance(item.message, FinalMsg) and item.message.text == text:
            return
    raise AssertionError(f"the connection ended before the final {text!r}: {seen}")


async def wait_until(server: LivecanvasServer, condition: Callable[[], bool]) -> None:
    """Wait until ``condition`` on the server's state holds, which no message tells: it is checked after
    each of the server's ticks (every 0.1 s; the resume window expires on them too)."""
    reached = asyncio.Event()
    hub = server.hub
    tick = hub.tick

    def tick_and_check() -> None:
        tick()
        if condition():
            reached.set()

    hub.tick = tick_and_check  # type: ignore[method-assign]
    try:
        async with asyncio.timeout(30):
            await reached.wait()
    finally:
        del hub.tick  # the hub's own method again


def finals_kept_for_resume(server: LivecanvasServer) -> float:
    for line in server.metrics.render().decode().splitlines():
        if line.startswith("livecanvas_history_finals "):
            return float(line.split()[1])
    raise AssertionError("no livecanvas_history_finals in /metrics")


def finals(items: list[Received]) -> list[FinalMsg]:
    return [item.message for item in items if isinstance(item.message, FinalMsg)]


async def first_programme(
    server: LivecanvasServer, *, then: Callable[[], bool] | None = None
) -> tuple[list[Received], CaptionSession]:
    """A viewer subscribes; a publisher says FIRST and ends; once the viewer has its finals and ``then``
    holds, its network drops. Returns once the server has forgotten the stream (nobody is left)."""
    url = url_of(server)
    seen: list[Received] = []
    async with connect(url, stream=STREAM, role=Role.SUBSCRIBE, tracks=("caption",)) as viewer:
        async with connect(url, stream=STREAM, tracks=("caption",)) as publisher:
            for sentence in FIRST:
                await publisher.send_text(sentence)
            await publisher.end()
            assert [m.text for m in [m async for m in publisher] if isinstance(m, FinalMsg)] == list(FIRST)
        await read_until(viewer, seen, FIRST[-1])
        if then is not None:
            await wait_until(server, then)
        viewer.websocket.transport.abort()  # no close handshake
    await wait_until(server, lambda: STREAM not in server.hub.streams)
    return seen, viewer


async def second_programme_and_resume(server: LivecanvasServer, old: CaptionSession) -> list[Received]:
    """A new publisher says SECOND on the same stream name; the viewer comes back with its old resume
    point; the publisher says LIVE. What the resumed viewer got, up to LIVE."""
    url = url_of(server)
    async with connect(url, stream=STREAM, tracks=("caption",)) as publisher:
        for sentence in SECOND:
            await publisher.send_text(sentence)
        await read_until(publisher, [], SECOND[-1])
        resume = old.resume_point
        async with connect(
            url, stream=STREAM, role=Role.SUBSCRIBE, tracks=("caption",), resume=resume
        ) as back:
            await publisher.send_text(LIVE)
            got: list[Received] = []
            await read_until(back, got, LIVE)
    assert not [item.message for item in got if isinstance(item.message, ErrorMsg)], "no resume_gap"
    return got


async def test_a_resume_after_the_kept_finals_expired_misses_no_new_final(
    short_history_server: LivecanvasServer,
) -> None:
    """Once every kept final of a stream had expired, the server numbered its next finals from 1 again,
    so a resumed viewer was sent only those numbered above the last one it saw, and told that was all."""
    server = short_history_server
    before, viewer = await first_programme(server, then=lambda: finals_kept_for_resume(server) == 0)
    assert [m.text for m in finals(before)] == list(FIRST)
    after = await second_programme_and_resume(server, viewer)
    assert [m.text for m in finals(after)] == [*SECOND, LIVE]


async def test_a_resume_across_a_restart_of_the_stream_gets_the_new_programme_under_its_epoch(
    server: LivecanvasServer,
) -> None:
    """The hub forgets a stream nobody uses and numbers its windows from 0 when the name comes back: a
    viewer resuming across that must not get a second, different final for a window it already has;
    the new epoch tells it this is a new programme."""
    before, viewer = await first_programme(server)
    after = await second_programme_and_resume(server, viewer)
    old, new = finals(before), finals(after)
    assert [m.text for m in new] == [*SECOND, LIVE]
    canvases = [(m.epoch, m.track, m.window) for m in old + new]
    assert len(set(canvases)) == len(canvases), f"a canvas got a second final: {canvases}"
    assert [m.window for m in new] == [0, 1, 2, 3]  # windows count from 0 again ...
    assert {m.epoch for m in old} == {viewer.ready.epoch}
    assert {m.epoch for m in new} == {new[0].epoch} != {viewer.ready.epoch}  # ... in a new epoch
    assert [item.new_epoch for item in after if isinstance(item.message, FinalMsg)] == [
        True, False, False, False
    ]  # fmt: skip
