"""`livecanvas serve` as its own process for tests that need a real process (signals, memory): started
with a token file on a free loopback port, handed over once `/healthz` answers, killed if a test leaves
it running."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

from tests.integration.mosquitto import free_port


def healthz_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def wait_healthy(port: int, process: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        assert process.returncode is None, "the server exited while starting"
        if await asyncio.to_thread(healthz_ok, port):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the server never became healthy")


@contextlib.asynccontextmanager
async def running_serve(
    livecanvas_cache: Path, tmp_path: Path, secret: str, *flags: str
) -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    """`serve --no-asr` with one admin token ``secret`` and ``flags``; yields (port, process)."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\nname = "test"\nsecret = "{secret}"\nroles = ["admin"]\n', encoding="utf-8")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livecanvas.cli", "--log-level", "warning", "serve", "--no-asr",
        "--port", str(port), "--tokens", str(tokens), *flags,
        env={**os.environ, "LIVECANVAS_CACHE": str(livecanvas_cache), "HF_HUB_OFFLINE": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await wait_healthy(port, process)
        yield port, process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
