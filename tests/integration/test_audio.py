"""Live captions from real speech through a real server: WER, drafts before finals, windows finalised
exactly once, translations of every caption window, and no text from silence."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from clients.python.client import connect
from stream.config import ServerConfig
from stream.server import LivecanvasServer
from stream.wire.messages import Bye, DraftMsg, ErrorMsg, FinalMsg, ServerMessage
from tests.speech import audioeval_clips, cer, librivox_clips, read_wav_16k, silence, synthesize, wer

SPEED = 1.0  # real time, as a live caption service is used
CHUNK_MS = 100
PIPER_SENTENCES = [
    "The library opens at nine o'clock every morning.",
    "Please remember to bring your ticket to the front desk.",
    "Our next speaker has travelled all the way from Lisbon.",
]


@pytest.fixture
async def asr_server(livecanvas_cache: Path) -> AsyncIterator[LivecanvasServer]:
    config = ServerConfig(host="127.0.0.1", port=0, drain_timeout_s=120, asr=True)
    async with LivecanvasServer(config) as running:
        yield running


async def stream_audio(
    url: str, stream: str, pcm: bytes, *, source_lang: str = "en", tracks: tuple[str, ...] = ("caption", "pt")
) -> tuple[list[ServerMessage], int]:
    """Publish ``pcm`` at SPEED x real time, then end. Returns every message until bye, and how many
    had arrived when ``end`` was sent."""
    messages: list[ServerMessage] = []
    ended_at: list[int] = []
    async with connect(url, stream=stream, tracks=tracks, source_lang=source_lang) as session:

        async def publish() -> None:
            step = CHUNK_MS * 32  # bytes per chunk at 16 kHz PCM16
            started = time.monotonic()
            for index, start in enumerate(range(0, len(pcm), step)):
                await session.send_audio(pcm[start : start + step])
                delay = started + (index + 1) * CHUNK_MS / 1000 / SPEED - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            ended_at.append(len(messages))
            await session.end()

        publisher = asyncio.create_task(publish())
        async for message in session:
            messages.append(message)
        await publisher
    return messages, ended_at[0]


def caption_finals(messages: list[ServerMessage]) -> list[FinalMsg]:
    return [m for m in messages if isinstance(m, FinalMsg) and m.track == "caption"]


def check_windows(messages: list[ServerMessage], ended_at: int) -> None:
    """Every caption window is finalised once, in order, with its translation. Windows finalised while
    audio was still arriving were shown as drafts first; the end-of-stream pass may close the last
    ones at once (a draft then would be stale before it was shown)."""
    assert isinstance(messages[-1], Bye)
    assert not [m for m in messages if isinstance(m, ErrorMsg)]
    finals = caption_finals(messages)
    assert [f.window for f in finals] == list(range(len(finals)))
    translated = sorted(m.window for m in messages if isinstance(m, FinalMsg) and m.track == "pt")
    assert translated == list(range(len(finals)))
    live_finals = [f for f in finals if messages.index(f) < ended_at]
    assert live_finals, "no window was finalised while audio was arriving"
    for final in live_finals:
        # an earlier draft already showed this window's speech (its words may since have been corrected)
        position = messages.index(final)
        drafts = [m for m in messages[:position] if isinstance(m, DraftMsg) and m.track == "caption"]
        covering = [d for d in drafts if d.t0_ms < final.t1_ms and d.t1_ms > final.t0_ms]
        assert covering, (
            f"window {final.window} ({final.text!r}) was never drafted: {[d.text for d in drafts]}"
        )
        assert final.t0_ms <= final.t1_ms
    assert [f.t0_ms for f in finals] == sorted(f.t0_ms for f in finals)


@pytest.fixture
def busy_core() -> Iterator[None]:
    """Another process keeps one core busy for the whole test (as on a machine doing something else)."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


async def test_real_speech_is_captioned_accurately_and_translated(
    asr_server: LivecanvasServer, tmp_path: Path, busy_core: None
) -> None:
    """Two real-time streams with one core taken by another process: windows still become final while
    the audio arrives, in order and once each, drafted first, translated, at a low WER. This holds
    because English goes to Moonshine, whose passes cost what they hear (about 0.1 s of one core for
    a few seconds of speech): the recogniser is busy well under half the time even on the free core."""
    url = f"ws://127.0.0.1:{asr_server.port}"
    clips = librivox_clips()
    gap = silence(1.0)
    librivox_pcm = b"".join(read_wav_16k(clip.path).tobytes() + gap for clip in clips)
    piper_pcm = b"".join(
        read_wav_16k(synthesize(sentence, tmp_path / f"s{i}.wav")).tobytes() + gap
        for i, sentence in enumerate(PIPER_SENTENCES)
    )
    (librivox, librivox_end), (piper, piper_end) = await asyncio.gather(
        stream_audio(url, "librivox", librivox_pcm), stream_audio(url, "piper", piper_pcm)
    )
    check_windows(librivox, librivox_end)
    check_windows(piper, piper_end)
    librivox_text = " ".join(f.text for f in caption_finals(librivox))
    piper_text = " ".join(f.text for f in caption_finals(piper))
    references = [" ".join(c.text for c in clips), " ".join(PIPER_SENTENCES)]
    score = wer(references, [librivox_text, piper_text])
    # 99 words: one slip is 1 point. Runs here measured 2-5% (CI once 6.1%: a dropped "them"
    # at a clip's end plus a misheard phrase); a broken commit policy or a lost window costs far more.
    assert score < 0.08, f"WER {score:.3f}\nLibriVox: {librivox_text}\nPiper: {piper_text}"
    assert asr_server.asr_worker is not None
    assert asr_server.asr_worker.stats.rows > 0
    # the headroom the guarantee rests on: one recognition thread kept up with both live streams
    # (busy for less than the audio lasted), with time to spare for the translator on the free core
    programme_s = max(len(librivox_pcm), len(piper_pcm)) / 32_000
    assert asr_server.asr_worker.stats.busy_s < 0.8 * programme_s


async def test_other_languages_are_captioned_in_their_own_language(asr_server: LivecanvasServer) -> None:
    """The stream's source language picks whisper base's language: French speech comes back as
    French, not as an English translation or transliteration (a CER near 0.65 here)."""
    url = f"ws://127.0.0.1:{asr_server.port}"
    picks = {"fr": ("bonjour_monde", "pangrama"), "it": ("ciao_mondo", "pangrama")}
    clips = {lang: [audioeval_clips(lang)[name] for name in names] for lang, names in picks.items()}
    results = await asyncio.gather(
        *(
            stream_audio(
                url,
                f"talk-{lang}",
                b"".join(read_wav_16k(c.path).tobytes() + silence(1.0) for c in chosen),
                source_lang=lang,
                tracks=("caption",),
            )
            for lang, chosen in clips.items()
        )
    )
    for (lang, chosen), (messages, _) in zip(clips.items(), results, strict=True):
        assert isinstance(messages[-1], Bye)
        assert not [m for m in messages if isinstance(m, ErrorMsg)]
        text = " ".join(f.text for f in caption_finals(messages))
        reference = " ".join(c.text for c in chosen)
        assert cer(reference, text) < 0.2, f"{lang}: {text!r} against {reference!r}"


async def test_silence_produces_no_captions(asr_server: LivecanvasServer) -> None:
    url = f"ws://127.0.0.1:{asr_server.port}"
    quiet = silence(4.0) + silence(4.0, noise_dbfs=-60.0)
    messages, _ = await stream_audio(url, "quiet", quiet)
    assert isinstance(messages[-1], Bye)
    texts = [m.text for m in messages if isinstance(m, DraftMsg | FinalMsg) and m.text.strip()]
    assert texts == []
    assert asr_server.asr_worker is not None
    assert asr_server.asr_worker.stats.rows == 0  # silence never reached the recogniser


async def test_bad_audio_frames_get_errors_and_nothing_is_lost(asr_server: LivecanvasServer) -> None:
    url = f"ws://127.0.0.1:{asr_server.port}"
    clip = librivox_clips()[1]
    pcm = read_wav_16k(clip.path).tobytes() + silence(1.0)
    async with connect(url, stream="odd", tracks=("caption",)) as session:
        await session.websocket.send(b"\x82\xa4type\xa5audio\xa3pcm\xc4\x03abc")  # odd byte count
        for start in range(0, len(pcm), 3200):
            await session.send_audio(pcm[start : start + 3200])
        await session.end()
        messages = [m async for m in session]
    errors = [m for m in messages if isinstance(m, ErrorMsg)]
    assert [e.code for e in errors] == ["bad_field"]
    assert wer([clip.text], [" ".join(f.text for f in caption_finals(messages))]) < 0.15
    assert np.all([isinstance(messages[-1], Bye)])
