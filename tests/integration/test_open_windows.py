"""Translating a window while it is open, over real WebSockets on the embedded translator: a
publisher's ``partial`` lines reach a ``pt`` viewer as translated drafts of the open window before the
window closes, numbered per window, and the window's final is the one a stream without partials gets."""

from __future__ import annotations

import asyncio
import itertools

from clients.python.client import connect
from stream.server import LivecanvasServer
from stream.wire.messages import DraftMsg, FinalMsg, Role
from tests.integration.conftest import url_of

SPOKEN = "Residents asked the council for more shade at bus stops and for cooling centres."


async def viewer_until_final(
    url: str, stream: str, ready: asyncio.Event, pt_drafts: asyncio.Event
) -> list[DraftMsg | FinalMsg]:
    seen: list[DraftMsg | FinalMsg] = []
    async with connect(url, stream=stream, role=Role.SUBSCRIBE, tracks=("pt", "caption")) as viewer:
        ready.set()
        async for message in viewer:
            if isinstance(message, DraftMsg | FinalMsg):
                seen.append(message)
            if isinstance(message, DraftMsg) and message.track == "pt":
                pt_drafts.set()
            if isinstance(message, FinalMsg) and message.track == "pt":
                return seen
    raise AssertionError("the viewer's connection ended before the pt final")


async def publish(url: str, stream: str, *, partials: bool, pt_drafts: asyncio.Event | None = None) -> None:
    async with connect(url, stream=stream, role=Role.PUBLISH, tracks=("caption",)) as publisher:
        words = SPOKEN.split()
        if partials:
            for count in range(1, len(words) + 1):
                await publisher.send_partial(" ".join(words[:count]))
                await asyncio.sleep(0.15)  # about a typist's pace
            assert pt_drafts is not None
            await asyncio.wait_for(pt_drafts.wait(), 30)  # the translation showed while the line was open
        await publisher.send_text(SPOKEN)
        await publisher.flush()
        await publisher.end()
        async for _ in publisher:
            pass


async def test_partial_lines_are_translated_while_open_and_the_final_is_unchanged(
    server: LivecanvasServer,
) -> None:
    url = url_of(server)
    results: dict[str, list[DraftMsg | FinalMsg]] = {}
    for stream, partials in (("live", True), ("closed-only", False)):
        ready, pt_drafts = asyncio.Event(), asyncio.Event()
        viewer = asyncio.create_task(viewer_until_final(url, stream, ready, pt_drafts))
        await ready.wait()
        await publish(url, stream, partials=partials, pt_drafts=pt_drafts)
        results[stream] = await asyncio.wait_for(viewer, 60)
    live = results["live"]
    caption_final = next(i for i, m in enumerate(live) if isinstance(m, FinalMsg) and m.track == "caption")
    open_drafts = [m for m in live[:caption_final] if isinstance(m, DraftMsg) and m.track == "pt"]
    assert open_drafts, "no translated draft while the window was open"
    assert all(m.window == 0 for m in open_drafts)
    pt_drafts_all = [m for m in live if isinstance(m, DraftMsg) and m.track == "pt"]
    revs = [m.rev for m in pt_drafts_all]  # rising; one queued behind a newer may be skipped
    assert revs == sorted(set(revs))
    assert revs[0] >= 0
    live_final = live[-1]
    assert isinstance(live_final, FinalMsg)
    assert live_final.rev > revs[-1]
    reference = results["closed-only"][-1]
    assert isinstance(reference, FinalMsg)
    assert live_final.text == reference.text
    assert live_final.error is None
    # every draft shown is a real start of a translation: no word run repeated
    for draft in pt_drafts_all:
        words = draft.text.lower().split()
        assert all(a != b for a, b in itertools.pairwise(words)), draft.text
