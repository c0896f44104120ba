"""Operating the server: `serve` refuses to start without tokens unless told it is a development
machine; /healthz and /metrics report what the server does."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from clients.python.client import connect
from stream.server import LivecanvasServer
from stream.wire.messages import FinalMsg
from tests.integration.conftest import url_of


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LIVECANVAS_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "livecanvas.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**environment, **(env or {})},
        check=False,
    )


def test_serve_without_tokens_refuses_to_start_and_says_how_to_fix_it() -> None:
    result = run_cli("serve", "--no-asr", "--port", "0")
    assert result.returncode != 0
    assert "no tokens configured" in result.stderr
    assert "--insecure-dev" in result.stderr


def test_serve_refuses_a_malformed_token_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[token]]\nname = "x"\nsecret = "s"\nroles = ["root"]\n', encoding="utf-8")
    result = run_cli("serve", "--no-asr", "--tokens", str(tokens))
    assert result.returncode != 0
    assert "unknown role 'root'" in result.stderr
    result = run_cli("serve", "--no-asr", "--tokens", str(tmp_path / "missing.toml"))
    assert "cannot read token file" in result.stderr
    result = run_cli("serve", "--no-asr", env={"LIVECANVAS_TOKENS": "publish:*"})
    assert "ROLES:STREAMS:SECRET" in result.stderr


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_metrics_count_sessions_batches_latencies_and_drafts(server: LivecanvasServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    async with connect(url_of(server), stream="m", tracks=("caption", "pt")) as publisher:
        for sentence in ("The first sentence to measure.", "And a second one."):
            await publisher.send_text(sentence)
        _, during = await asyncio.to_thread(fetch, f"{base}/metrics")
        await publisher.end()
        finals = [m async for m in publisher if isinstance(m, FinalMsg)]
    assert len(finals) == 4
    assert 'livecanvas_sessions{role="publish"} 1.0' in during
    status, text = await asyncio.to_thread(fetch, f"{base}/metrics")
    assert status == 200
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['livecanvas_final_latency_seconds_count{kind="translation"}'] == 2
    assert samples['livecanvas_final_latency_seconds_count{kind="caption"}'] == 2
    assert samples["livecanvas_step_batch_size_count"] == samples["livecanvas_engine_forwards_total"] > 0
    assert samples["livecanvas_canvases_in_flight"] == 0
    assert samples["livecanvas_history_finals"] == 4
    assert "livecanvas_drafts_coalesced_total" in samples
    assert 'livecanvas_sessions{role="publish"}' in samples


async def test_healthz_turns_503_while_draining(server: LivecanvasServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    assert await asyncio.to_thread(fetch, f"{base}/healthz") == (
        200,
        '{"status":"ok","pairs":[["en","pt-BR"],["pt-BR","en"]]}',
    )
    server.draining = True  # what shutdown() sets first, before it stops listening
    try:
        assert await asyncio.to_thread(fetch, f"{base}/healthz") == (
            503,
            '{"status":"draining","pairs":[["en","pt-BR"],["pt-BR","en"]]}',
        )
    finally:
        server.draining = False
