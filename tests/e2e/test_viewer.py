"""The viewer page in headless Chromium: the stream list, a live transcript of two tracks (the history
from before the page subscribed included), the latency readout, the "ended" status once the publisher
is done, and WebVTT/SRT downloads."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import srt
import webvtt

from clients.python.client import connect
from stream.server import LivecanvasServer
from stream.wire.messages import FinalMsg, ServerMessage
from tests.e2e.conftest import OpenPage, http_url

EARLY = ["The meeting is now open.", "First on the agenda is the new bridge."]
LATER = ["The council approved the budget.", "Work starts in the spring.", "Thank you all for coming."]


async def test_viewer_lists_streams_shows_transcript_latency_and_downloads(
    text_server: LivecanvasServer, open_page: OpenPage, artifacts: Path
) -> None:
    url = f"ws://127.0.0.1:{text_server.port}"
    messages: list[ServerMessage] = []
    async with connect(url, stream="e2e-viewer", tracks=("caption", "pt")) as publisher:
        early_translated = asyncio.Event()

        async def collect() -> None:
            async for message in publisher:
                messages.append(message)
                if sum(isinstance(m, FinalMsg) and m.track == "pt" for m in messages) == len(EARLY):
                    early_translated.set()

        reader = asyncio.create_task(collect())
        for sentence in EARLY:
            await publisher.send_text(sentence)
        page = await open_page(http_url(text_server, "/"))
        link = page.locator('#stream-list a[data-stream="e2e-viewer"]')
        await link.wait_for(timeout=15_000)
        assert "live" in await link.inner_text()
        assert "caption, pt" in await link.inner_text()

        # the early finals are on the server before the page subscribes: they come from its history
        await asyncio.wait_for(early_translated.wait(), timeout=120)
        await link.click()
        await page.wait_for_selector("#status[data-state=live]", timeout=15_000)
        assert re.search(r"[?&]stream=e2e-viewer", page.url)
        for sentence in LATER:
            await publisher.send_text(sentence)
            await asyncio.sleep(0.8)
        await publisher.end()
        await asyncio.wait_for(reader, timeout=120)
    finals = [m for m in messages if isinstance(m, FinalMsg)]
    windows = len(EARLY) + len(LATER)
    assert sorted(m.window for m in finals if m.track == "pt") == list(range(windows))
    last_pt = f'#transcript tr[data-window="{windows - 1}"] td[data-track=pt].final'
    await page.wait_for_selector(last_pt, timeout=30_000)
    await page.wait_for_selector("#status[data-state=ended]", timeout=30_000)  # after the last final
    assert await page.inner_text("#status") == "ended (the publisher finished; the transcript is complete)"

    rows = await page.eval_on_selector_all(
        "#transcript tbody tr",
        "rows => rows.map(r => [Number(r.dataset.window), ...[...r.querySelectorAll('td[data-track]')]"
        ".map(td => [td.dataset.track, td.className, td.textContent])])",
    )
    assert [row[0] for row in rows] == list(range(windows)), rows
    for row in rows:
        window, cells = row[0], {track: (kind, text) for track, kind, text in row[1:]}
        for track in ("caption", "pt"):
            [final] = [m for m in finals if m.track == track and m.window == window]
            assert cells[track] == ("final", final.text), (window, track, cells[track])
    assert [m.text for m in finals if m.track == "caption"] == EARLY + LATER

    latency = await page.eval_on_selector_all(
        "#latency tbody tr",
        "rows => rows.map(r => [r.dataset.track, "
        "...[...r.querySelectorAll('td.num')].map(td => td.textContent)])",
    )
    by_track = {row[0]: row[1:] for row in latency}
    draft_lag, final_lag, drafts, finals_seen = by_track["pt"]
    assert re.fullmatch(r"\d+ ms \(median \d+ ms\)", final_lag), final_lag
    assert re.fullmatch(r"\d+ ms \(median \d+ ms\)", draft_lag), draft_lag  # pt drafts came live
    assert int(finals_seen) == len(LATER)  # live ones; the history is not counted as live latency
    assert int(drafts) >= 1
    await page.screenshot(path=str(artifacts / "viewer.png"), full_page=True)

    # the download links serve what the transcript shows
    hrefs = await page.eval_on_selector_all(
        "#latency tr[data-track=caption] a", "links => links.map(a => a.getAttribute('href'))"
    )
    assert hrefs == [
        "/captions/e2e-viewer/caption.vtt?download=1",
        "/captions/e2e-viewer/caption.srt?download=1",
    ]
    vtt_response = await page.request.get(http_url(text_server, hrefs[0]))
    assert vtt_response.headers["content-type"] == "text/vtt; charset=utf-8"
    assert "attachment" in vtt_response.headers["content-disposition"]
    vtt_path = artifacts / "caption.vtt"
    vtt_path.write_bytes(await vtt_response.body())
    cues = webvtt.read(str(vtt_path))
    assert [" ".join(c.text.split()) for c in cues] == EARLY + LATER
    starts = [c.start_in_seconds for c in cues]
    assert starts == sorted(starts)
    srt_response = await page.request.get(http_url(text_server, hrefs[1]))
    subtitles = list(srt.parse((await srt_response.body()).decode()))
    (artifacts / "caption.srt").write_bytes(await srt_response.body())
    assert [" ".join(s.content.split()) for s in subtitles] == EARLY + LATER

    # a track added from the page: the server starts translating it for this stream
    await page.fill("#add-track", "pt-BR")
    await page.click("#track-form button")
    await page.wait_for_selector("#transcript thead th:has-text('pt-BR')", timeout=10_000)
    assert "tracks=caption,pt,pt-BR" in page.url
    # ended again if the page's new connection joined before its old one left, else a fresh stream
    await page.wait_for_selector("#status:is([data-state=live], [data-state=ended])", timeout=15_000)
