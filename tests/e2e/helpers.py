"""What the browser tests share: the recorder's log of caption lines, screenshots, publishing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from clients.python.client import connect
from stream.wire.messages import FinalMsg, ServerMessage

Key = tuple[str, int]


@dataclass(frozen=True)
class LineState:
    """One state of one caption line on the page, as the recorder saw it (``t`` in epoch ms)."""

    node: int
    track: str
    window: int
    kind: str
    text: str
    t: float

    @property
    def key(self) -> Key:
        return (self.track, self.window)


async def line_log(page: Any) -> list[LineState]:
    return [LineState(**entry) for entry in await page.evaluate("window.__lines")]


def check_lines(log: list[LineState], finals: dict[Key, str]) -> dict[Key, list[LineState]]:
    """The page showed every non-empty final of ``finals`` with its text, each in one element only, and
    never a draft of a window after its final. Returns each window's states in order."""
    states: dict[Key, list[LineState]] = defaultdict(list)
    for state in log:
        states[state.key].append(state)
    for key, text in finals.items():
        if not text.strip():
            continue
        shown = states.get(key, [])
        final_states = [s for s in shown if s.kind == "final"]
        assert final_states, f"the final of {key} ({text!r}) never reached the page"
        assert {s.text for s in final_states} == {text}, f"{key}: page {final_states} != server {text!r}"
        assert len({s.node for s in final_states}) == 1, f"{key}: the final was shown twice: {final_states}"
        first_final = shown.index(final_states[0])
        late = [s for s in shown[first_final:] if s.kind == "draft"]
        assert not late, f"{key}: a draft replaced the final: {late}"
    unknown = set(states) - set(finals)
    assert not [k for k in unknown if any(s.kind == "final" for s in states[k])], (
        f"finals not sent: {unknown}"
    )
    return states


def drafted_in_place(states: dict[Key, list[LineState]], track: str) -> list[int]:
    """Windows of ``track`` whose line was a draft first and then, in the same element, the final."""
    windows = []
    for (name, window), shown in states.items():
        kinds = [s.kind for s in shown]
        if name == track and "draft" in kinds and "final" in kinds:
            final = next(s for s in shown if s.kind == "final")
            if any(s.kind == "draft" and s.node == final.node and s.t <= final.t for s in shown):
                windows.append(window)
    return sorted(windows)


def check_transparent_png(path: Path) -> None:
    """A screenshot taken with ``omit_background``: see-through corners, opaque caption pixels. Saves
    ``<name>-on-video.png`` beside it, the overlay composited over a grey ramp."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
        width, height = rgba.size
        for corner in ((0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1)):
            assert rgba.getpixel(corner)[3] == 0, f"{path.name}: corner {corner} is not transparent"
        alpha = rgba.getchannel("A")
        assert alpha.getextrema()[1] >= 200, f"{path.name}: nothing (nearly) opaque was drawn"
        # for people looking at the artifacts: the overlay over a stand-in for video (dark to light)
        ramp = Image.linear_gradient("L").resize((width, height)).convert("RGBA")
        Image.alpha_composite(ramp, rgba).save(path.with_name(f"{path.stem}-on-video.png"))


async def screenshot_when(page: Any, selector: str, path: Path, *, timeout_ms: float = 120_000) -> bool:
    """Screenshot (transparent background) as soon as ``selector`` shows; False if it never did."""
    try:
        await page.wait_for_selector(selector, timeout=timeout_ms)
    except Exception:  # playwright's TimeoutError: the caller decides whether that matters
        return False
    await page.screenshot(path=str(path), omit_background=True)
    return True


async def publish_text(
    url: str,
    stream: str,
    sentences: list[str],
    *,
    pause_s: float = 1.0,
    tracks: tuple[str, ...] = ("caption",),
) -> tuple[list[ServerMessage], list[float]]:
    """Publish ``sentences`` (``pause_s`` apart), end, and return every message until bye and the
    wall-clock time (epoch ms) each sentence was sent."""
    sent: list[float] = []
    async with connect(url, stream=stream, tracks=tracks) as publisher:
        messages: list[ServerMessage] = []

        async def collect() -> None:
            async for message in publisher:
                messages.append(message)

        reader = asyncio.create_task(collect())
        for sentence in sentences:
            sent.append(time.time() * 1000)
            await publisher.send_text(sentence)
            await asyncio.sleep(pause_s)
        await publisher.end()
        await asyncio.wait_for(reader, timeout=180)
    return messages, sent


def finals_of(messages: list[ServerMessage]) -> dict[Key, str]:
    return {(m.track, m.window): m.text for m in messages if isinstance(m, FinalMsg)}


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
