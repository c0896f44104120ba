"""Browser tests: a real livecanvas server, Debian's headless Chromium driven by Playwright, artifacts.

* ``text_server`` / ``speech_server``: servers on free loopback ports (text only; with recognition).
* ``browser``: Chromium from ``/usr/bin/chromium`` (``LIVECANVAS_CHROMIUM`` overrides); a missing
  browser fails the test with the command that installs it, never a skip.
* ``open_page(url)``: a page whose console errors, uncaught exceptions and failed requests fail the
  test at teardown, with ``RECORDER_JS`` installed: it logs every state of every caption line
  (``window.__lines``) and of ``body[data-state]`` (``window.__states``), so a test can check that a
  draft turned into its final in place, and when.
* ``artifacts``: ``test-artifacts/e2e/<test>/`` at the repository root (git-ignored) for screenshots.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from stream.config import ServerConfig
from stream.server import LivecanvasServer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("LIVECANVAS_CHROMIUM", "/usr/bin/chromium"))

RECORDER_JS = """
(() => {
  window.__lines = [];
  window.__states = [];
  const ids = new WeakMap();
  const last = new WeakMap();
  let next = 0;
  const now = () => performance.timeOrigin + performance.now();
  const scan = () => {
    const state = document.body && document.body.dataset.state;
    if (state && window.__states[window.__states.length - 1]?.state !== state) {
      window.__states.push({ state, t: now() });
    }
    for (const el of document.querySelectorAll(".line")) {
      if (!ids.has(el)) ids.set(el, next++);
      const kind = el.classList.contains("final") ? "final" : "draft";
      const key = kind + "|" + el.textContent;
      if (last.get(el) === key) continue;
      last.set(el, key);
      window.__lines.push({
        node: ids.get(el), track: el.dataset.track, window: Number(el.dataset.window),
        kind, text: el.textContent, t: now(),
      });
    }
  };
  new MutationObserver(scan).observe(document, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
})();
"""


@pytest.fixture
async def text_server(livecanvas_cache: Path) -> AsyncIterator[LivecanvasServer]:
    config = ServerConfig(host="127.0.0.1", port=0, idle_ms=400, drain_timeout_s=60, asr=False)
    async with LivecanvasServer(config) as running:
        yield running


@pytest.fixture
async def speech_server(livecanvas_cache: Path) -> AsyncIterator[LivecanvasServer]:
    config = ServerConfig(host="127.0.0.1", port=0, idle_ms=400, drain_timeout_s=120, asr=True)
    async with LivecanvasServer(config) as running:
        yield running


def http_url(server: LivecanvasServer, path: str = "/") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    path = ROOT / "test-artifacts" / "e2e" / request.node.name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def require_chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: the browser tests need Debian's chromium "
            "(apt-get install chromium, as root or with sudo; LIVECANVAS_CHROMIUM names another binary)",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


OpenPage = Callable[[str], Awaitable[Any]]


@pytest.fixture
async def open_page(browser: Any) -> AsyncIterator[OpenPage]:
    problems: list[str] = []
    contexts: list[Any] = []

    async def open_one(url: str) -> Any:
        context = await browser.new_context(viewport={"width": 1280, "height": 720})
        contexts.append(context)
        await context.add_init_script(RECORDER_JS)
        page = await context.new_page()
        page.on(
            "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
        page.on(
            "response",
            lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
        )
        await page.goto(url)
        return page

    yield open_one
    found = list(problems)  # before closing: a request cut short by the close is no problem of the page
    for context in contexts:
        await context.close()
    assert not found, "the page reported problems:\n" + "\n".join(found)
