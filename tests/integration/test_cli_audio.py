"""``livecanvas send --audio`` against a real server with speech recognition, and ``--mic`` without a
sound device."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.config import ServerConfig
from stream.server import LivecanvasServer
from tests.integration.conftest import url_of
from tests.speech import read_wav_16k, silence, synthesize, wer, write_wav_16k

SENTENCE = "The library opens at nine o'clock every morning."


def spoken(path: Path, *, trailing_silence_s: float = 1.0) -> Path:
    """``SENTENCE`` as a WAV file, followed by a pause, as a talk would have after it."""
    synthesize(SENTENCE, path)
    if trailing_silence_s:
        pcm = read_wav_16k(path).tobytes() + silence(trailing_silence_s)
        write_wav_16k(path, np.frombuffer(pcm, dtype="<i2"))
    return path


@pytest.fixture
async def asr_server(livecanvas_cache: Path) -> AsyncIterator[LivecanvasServer]:
    config = ServerConfig(host="127.0.0.1", port=0, idle_ms=400, drain_timeout_s=120, asr=True)
    async with LivecanvasServer(config) as running:
        yield running


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livecanvas.cli", "--log-level", "warning", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=240)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_send_audio_captions_and_translates_a_wav(asr_server: LivecanvasServer, tmp_path: Path) -> None:
    wav = spoken(tmp_path / "sentence.wav")
    code, stdout, stderr = await run_cli(
        "send", "--audio", str(wav), "--speed", "4", "--tracks", "caption,pt", "--json",
        "--stream", "cli-audio", "--url", url_of(asr_server),
    )  # fmt: skip
    assert code == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    messages: list[dict[str, Any]] = [json.loads(line) for line in stdout.splitlines()]
    assert messages[-1]["type"] == "bye"
    assert not [m for m in messages if m["type"] == "error"]
    captions = [m for m in messages if m["type"] == "final" and m["track"] == "caption"]
    assert captions, stdout
    heard = " ".join(m["text"] for m in captions)
    assert wer([SENTENCE], [heard]) <= 0.2, heard
    translated = sorted(m["window"] for m in messages if m["type"] == "final" and m["track"] == "pt")
    assert translated == sorted(m["window"] for m in captions)
    first_final = messages.index(captions[0])
    assert any(m["type"] == "draft" and m["track"] == "caption" for m in messages[:first_final])


async def test_send_audio_prints_drafts_finals_and_word_latency(
    asr_server: LivecanvasServer, tmp_path: Path
) -> None:
    wav = spoken(tmp_path / "sentence.wav")
    code, stdout, stderr = await run_cli(
        "send", "--audio", str(wav), "--speed", "4", "--tracks", "caption", "--url", url_of(asr_server)
    )
    assert code == 0, stderr[-2000:]
    assert "FINAL caption #0" in stdout
    assert "caption word latency" in stdout
    assert "p95" in stdout
    assert stdout.index("draft caption #0") < stdout.index("FINAL caption #0")


async def test_the_last_words_survive_audio_that_stops_abruptly(
    asr_server: LivecanvasServer, tmp_path: Path
) -> None:
    wav = spoken(tmp_path / "abrupt.wav", trailing_silence_s=0)
    code, stdout, stderr = await run_cli(
        "send", "--audio", str(wav), "--speed", "4", "--tracks", "caption", "--json",
        "--url", url_of(asr_server),
    )  # fmt: skip
    assert code == 0, stderr[-2000:]
    messages = [json.loads(line) for line in stdout.splitlines()]
    heard = " ".join(m["text"] for m in messages if m["type"] == "final" and m["track"] == "caption")
    assert wer([SENTENCE], [heard]) <= 0.2, heard


def test_mic_without_a_sound_device_fails_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "livecanvas.cli", "send", "--mic", "--url", "ws://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "livecanvas send:" in result.stderr
    assert "no sound input device" in result.stderr or "pip install sounddevice" in result.stderr


def test_audio_and_text_together_are_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "livecanvas.cli", "send", "--audio", str(tmp_path / "x.wav"), "Hello."],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "not both" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_wav_is_refused_before_connecting(tmp_path: Path) -> None:
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "livecanvas.cli", "send", "--audio", str(bad), "--url", "ws://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"{bad}: cannot read as a PCM WAV file" in result.stderr
    assert "Traceback" not in result.stderr
