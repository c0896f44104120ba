"""The README's main job: `livecanvas demo` serves the embedded model and shows drafts, then finals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from stream.server import LivecanvasServer
from tests.integration.conftest import url_of


def test_demo_shows_drafts_then_finals(livecanvas_cache: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "livecanvas.cli", "--log-level", "warning", "demo", "--interval", "0.05"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LIVECANVAS_CACHE": str(livecanvas_cache), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    typed, _, spoken = result.stdout.partition("\nspeech: ")
    assert spoken, "the demo did not go on to speech"
    lines = typed.splitlines()
    translation = [line for line in lines if re.search(r"\b(draft|FINAL)\s+pt #", line)]
    windows = {int(m.group(1)) for line in translation if (m := re.search(r"pt #(\d+)", line))}
    assert windows, result.stdout
    drafted = 0
    for window in windows:
        kinds = [line.split()[3] for line in translation if f"pt #{window} " in line]
        # a window the model settles within its early-exit step goes straight to its final
        assert kinds.count("FINAL") == 1, f"window {window}: {kinds}"
        assert kinds[-1] == "FINAL", f"window {window}: {kinds}"
        drafted += kinds[0] == "draft"
    assert drafted >= len(windows) // 2, result.stdout
    captions = [line for line in lines if re.search(r"FINAL\s+caption #", line)]
    assert "Good evening, and welcome to the live broadcast." in captions[0]
    assert any("summary" in line for line in lines)
    assert "bye" in typed
    thanks = [line for line in translation if "FINAL" in line and "obrigad" in line.lower()]
    assert thanks, "'Thank you for joining us.' did not come out as Portuguese:\n" + "\n".join(translation)
    # the speech part: the LibriVox clip captioned live and translated, then where to speak yourself
    heard = " ".join(line for line in spoken.splitlines() if re.search(r"FINAL\s+caption #", line)).lower()
    assert "dashwood" in heard, spoken
    assert "young" in heard, spoken  # the second sentence (windows may split its phrases)
    assert re.search(r"FINAL\s+pt #\d+", spoken), spoken
    assert any("summary" in line for line in spoken.splitlines())
    assert "/publish" in spoken


def test_version_prints_protocol() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "livecanvas.cli", "version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert re.match(r"livecanvas \S+ \(protocol 1\)", result.stdout)


def test_send_to_a_closed_port_fails_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "livecanvas.cli", "send", "--url", "ws://127.0.0.1:9", "Hello."],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "livecanvas send:" in result.stderr
    assert "Traceback" not in result.stderr


async def send_json(server: LivecanvasServer, stream: str, *args: str) -> list[dict[str, Any]]:
    """``livecanvas send --json`` to ``server`` on tracks caption and pt, run to its end; its messages."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livecanvas.cli", "--log-level", "warning", "send",
        "--url", url_of(server), "--stream", stream, "--tracks", "caption,pt", "--json", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()[-2000:]
    return [json.loads(line) for line in stdout.decode().splitlines()]


async def test_send_publishes_a_file_line_by_line(server: LivecanvasServer, tmp_path: Path) -> None:
    transcript = tmp_path / "transcript.txt"
    transcript.write_text("First line of the talk.\n\nSecond line, and the last one.\n", encoding="utf-8")
    messages = await send_json(server, "file-talk", "--file", str(transcript))
    finals = [(m["track"], m["window"], m["text"]) for m in messages if m["type"] == "final"]
    assert ("caption", 0, "First line of the talk.") in finals
    assert ("caption", 1, "Second line, and the last one.") in finals
    assert sorted(w for t, w, _ in finals if t == "pt") == [0, 1]
    assert messages[-1]["type"] == "bye"


async def test_send_types_lines_as_partials_whose_translation_shows_before_the_line_is_sent(
    server: LivecanvasServer,
) -> None:
    line = "Residents asked the council for more shade at bus stops and for cooling centres."
    messages = await send_json(server, "typed-talk", "--type-wpm", "180", line)
    caption_final = next(
        i for i, m in enumerate(messages) if m["type"] == "final" and m["track"] == "caption"
    )
    assert messages[caption_final]["text"] == line
    caption_drafts = [
        m["text"] for m in messages[:caption_final] if m["type"] == "draft" and m["track"] == "caption"
    ]
    assert caption_drafts[:2] == ["Residents", "Residents asked"]  # the line as it was typed
    assert any(m["type"] == "draft" and m["track"] == "pt" for m in messages[:caption_final])
    assert [m["window"] for m in messages if m["type"] == "final" and m["track"] == "pt"] == [0]
