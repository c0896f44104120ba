"""The README's main job: `livecanvas demo` serves the embedded model and shows drafts, then finals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_demo_shows_drafts_then_finals(livecanvas_cache: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "--log-level", "warning", "demo", "--interval", "0.05"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LIVECANVAS_CACHE": str(livecanvas_cache), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    translation = [line for line in lines if re.search(r"\b(draft|FINAL)\s+pt #", line)]
    windows = {int(m.group(1)) for line in translation if (m := re.search(r"pt #(\d+)", line))}
    assert windows, result.stdout
    for window in windows:
        kinds = [line.split()[3] for line in translation if f"pt #{window} " in line]
        assert kinds[0] == "draft", f"window {window}: {kinds}"
        assert kinds.count("FINAL") == 1, f"window {window}: {kinds}"
        assert kinds[-1] == "FINAL", f"window {window}: {kinds}"
    captions = [line for line in lines if re.search(r"FINAL\s+caption #", line)]
    assert "Good evening, and welcome to the live broadcast." in captions[0]
    assert any("summary" in line for line in lines)
    assert "bye" in result.stdout


def test_version_prints_protocol() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert re.match(r"livecanvas \S+ \(protocol 1\)", result.stdout)


def test_send_to_a_closed_port_fails_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "send", "--url", "ws://127.0.0.1:9", "Hello."],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "livecanvas send:" in result.stderr
    assert "Traceback" not in result.stderr
