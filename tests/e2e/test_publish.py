"""The publish page in a real browser: Chromium's fake microphone plays read speech into /publish.

Chromium runs with its fake media device fed from a WAV of LibriVox read speech (Debian's
``pocketsphinx-testdata``, known transcripts) and with the microphone permission granted. The page
captures it with getUserMedia and its AudioWorklet, sends 16 kHz PCM16 over the protocol, and shows
what comes back. The tests check the captions' WER against what was spoken, that a translation
track received finals, that drafts came before their finals, that Stop ends the stream cleanly
(every final, then ``bye``), and that a server with tokens refuses the page without one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.auth import Permission, TokenTable
from stream.config import ServerConfig
from stream.server import LivecanvasServer
from stream.wire.messages import Role
from tests.e2e.conftest import RECORDER_JS, require_chromium
from tests.e2e.helpers import drafted_in_place, line_log
from tests.speech import librivox_clips, silence, wer, write_wav_16k

CLIPS = 2  # the first LibriVox clips: about 10 s of read speech
MAX_WER = 0.25  # through the browser's capture and resampling; the service scores ~0.02-0.04 direct


@pytest.fixture
async def guarded_server(livecanvas_cache: Path) -> AsyncIterator[tuple[LivecanvasServer, str]]:
    """A speech server with tokens; yields it and an admin (publish and subscribe) token."""
    table, issued = TokenTable.ephemeral()
    config = ServerConfig(host="127.0.0.1", port=0, idle_ms=400, drain_timeout_s=120, asr=True, auth=table)
    async with LivecanvasServer(config) as running:
        yield running, issued[Permission.ADMIN]


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float]:
    """The fake microphone's WAV (clips, 1 s apart, 3 s of silence at the end), its text and length."""
    clips = librivox_clips()[:CLIPS]
    gap = np.frombuffer(silence(1.0, noise_dbfs=-70), dtype="<i2")
    tail = np.frombuffer(silence(3.0, noise_dbfs=-70), dtype="<i2")
    samples = np.concatenate([part for clip in clips for part in (clip.samples, gap)] + [tail])
    path = write_wav_16k(tmp_path_factory.mktemp("mic") / "speech.wav", samples)
    return path, " ".join(clip.text for clip in clips), len(samples) / 16000


@pytest.fixture
async def microphone_browser(spoken: tuple[Path, str, float]) -> AsyncIterator[Any]:
    """Chromium whose (fake) microphone plays ``spoken`` once, permission granted."""
    from playwright.async_api import async_playwright

    executable = require_chromium()
    flags = [
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={spoken[0]}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(executable), headless=True, args=flags)
        try:
            yield browser
        finally:
            await browser.close()


async def open_publish(browser: Any, url: str, problems: list[str]) -> Any:
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, permissions=["microphone"])
    await context.add_init_script(RECORDER_JS)
    page = await context.new_page()
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    await page.goto(url)
    return page


async def test_speaking_into_the_publish_page_captions_and_translates_live(
    guarded_server: tuple[LivecanvasServer, str],
    microphone_browser: Any,
    spoken: tuple[Path, str, float],
    artifacts: Path,
) -> None:
    server, token = guarded_server
    _, text, seconds = spoken
    problems: list[str] = []
    page = await open_publish(
        microphone_browser,
        f"http://127.0.0.1:{server.port}/publish?stream=mic-e2e&tracks=caption,pt&source_lang=en&token={token}",
        problems,
    )
    assert "token=" not in page.url  # read into the form, kept out of the address bar
    await page.click("#mic")
    await page.wait_for_selector("body[data-state=live]", timeout=30_000)
    await page.wait_for_selector(".line.draft[data-track=caption]", timeout=60_000)
    await page.screenshot(path=str(artifacts / "publish-live.png"))
    await page.wait_for_timeout(int(seconds * 1000) + 1000)  # the fake microphone has played it all
    await page.click("#mic")  # Stop: end after the last samples, then every final and bye
    await page.wait_for_selector("body[data-state=ended]", timeout=180_000)
    await page.screenshot(path=str(artifacts / "publish-ended.png"))

    log = await line_log(page)
    finals: dict[tuple[str, int], str] = {}
    for state in log:
        if state.kind == "final":
            finals[state.key] = state.text
    caption = " ".join(finals[k] for k in sorted(finals) if k[0] == "caption")
    assert wer([text], [caption]) <= MAX_WER, (text, caption)
    translated = [finals[k] for k in sorted(finals) if k[0] == "pt"]
    assert translated, finals
    assert all(translated), finals
    assert len(translated) == sum(1 for k in finals if k[0] == "caption")  # every caption window translated
    states: dict[tuple[str, int], list[Any]] = {}
    for state in log:
        states.setdefault(state.key, []).append(state)
    assert drafted_in_place(states, "caption"), "no caption window showed a draft before its final"
    status = await page.text_content("#status")
    assert status is not None
    assert f"pt: {len(translated)} finals" in status  # the summary line
    rows = await page.eval_on_selector_all(
        "#latency tbody tr", "rs => rs.map(r => [r.dataset.track, r.querySelector('.finals').textContent])"
    )
    assert dict(rows)["pt"] == str(len(translated))
    assert not problems, problems


async def test_the_publish_page_is_refused_without_a_token(
    guarded_server: tuple[LivecanvasServer, str], microphone_browser: Any, artifacts: Path
) -> None:
    server, _ = guarded_server
    problems: list[str] = []
    page = await open_publish(
        microphone_browser, f"http://127.0.0.1:{server.port}/publish?stream=mic-e2e&tracks=caption", problems
    )
    await page.click("#mic")
    await page.wait_for_selector("body[data-state=refused]", timeout=30_000)
    message = await page.text_content("#notice")
    assert message is not None
    assert "unauthorized" in message, message
    assert "token" in message, message
    assert await page.text_content("#mic") == "Start microphone"  # the microphone was released
    await page.screenshot(path=str(artifacts / "publish-refused.png"))
    assert not problems, problems


async def test_the_publish_page_reconnects_and_resumes_after_a_dropped_connection(
    guarded_server: tuple[LivecanvasServer, str],
    microphone_browser: Any,
    spoken: tuple[Path, str, float],
) -> None:
    server, token = guarded_server
    _, _, seconds = spoken
    problems: list[str] = []
    page = await open_publish(
        microphone_browser,
        f"http://127.0.0.1:{server.port}/publish?stream=mic-drop&tracks=caption,pt&token={token}",
        problems,
    )
    await page.click("#mic")
    await page.wait_for_selector(".line.final[data-track=caption]", timeout=60_000)
    publishers = [c for c in server.connections if c.role is Role.PUBLISH]
    assert len(publishers) == 1
    publishers[0].websocket.transport.abort()  # the network drops: no close frame
    await page.wait_for_selector("body[data-state=reconnecting]", timeout=10_000)
    await page.wait_for_selector("body[data-state=live]", timeout=30_000)
    await page.wait_for_timeout(int(seconds * 1000))
    await page.click("#mic")
    await page.wait_for_selector("body[data-state=ended]", timeout=180_000)
    log = await line_log(page)
    finals = [s for s in log if s.kind == "final"]
    assert len({s.key for s in finals}) == len(finals), "a final was shown twice after the resume"
    windows = sorted(s.key[1] for s in finals if s.key[0] == "caption")
    assert windows == list(range(len(windows))), windows  # every window once, none missing
    assert len(windows) >= 3
    assert not problems, problems
