"""clients.python.audio_source: WAV files to 16 kHz mono PCM16, streaming resampling, pacing, the mic."""

from __future__ import annotations

import asyncio
import math
import time
import wave
from itertools import pairwise
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from clients.python import audio_source
from clients.python.audio_source import (
    SAMPLE_RATE,
    StreamResampler,
    paced_chunks,
    read_wav_pcm16_16k,
    resample,
)


def write_wav(path: Path, samples: npt.NDArray[np.float64], *, rate: int, width: int = 2) -> Path:
    """Float samples in [-1, 1], shape (frames,) or (frames, channels), as integer PCM of ``width`` bytes."""
    frames = samples.reshape(len(samples), -1)
    if width == 1:
        data = np.round(frames * 127 + 128).astype(np.uint8).tobytes()
    else:
        scale = float(2 ** (8 * width - 1) - 1)
        data = np.round(frames * scale).astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(data)
    return path


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> npt.NDArray[np.float64]:
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)


def dominant_hz(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[int(np.argmax(spectrum))])


# -- WAV files -------------------------------------------------------------------------------------------


def test_stereo_44k1_16_bit_becomes_mono_16k_and_keeps_a_tone(tmp_path: Path) -> None:
    left = tone(440, 1.0, 44_100)
    stereo = np.stack([left, 0.5 * left], axis=1)
    pcm = read_wav_pcm16_16k(write_wav(tmp_path / "stereo.wav", stereo, rate=44_100))
    assert len(pcm) == 2 * SAMPLE_RATE  # 1 s of 16-bit samples
    assert dominant_hz(pcm) == pytest.approx(440, abs=2)
    samples = np.frombuffer(pcm, dtype="<i2")
    middle = samples[4000:12000].astype(np.float64) / 32767
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.75 * 0.5 / math.sqrt(2), rel=0.02)  # channel mean


def test_8k_mono_is_upsampled(tmp_path: Path) -> None:
    pcm = read_wav_pcm16_16k(write_wav(tmp_path / "phone.wav", tone(440, 0.5, 8_000), rate=8_000))
    assert len(pcm) == 2 * SAMPLE_RATE // 2
    assert dominant_hz(pcm) == pytest.approx(440, abs=2)


@pytest.mark.parametrize("width", [1, 3, 4])
def test_8_24_and_32_bit_samples(tmp_path: Path, width: int) -> None:
    if width == 3:  # the wave module writes any width; build 24-bit frames by hand
        values = np.round(tone(440, 0.5, SAMPLE_RATE) * (2**23 - 1)).astype("<i4")
        data = values.tobytes()
        data = b"".join(data[i : i + 3] for i in range(0, len(data), 4))
        path = tmp_path / "24.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(3)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(data)
    else:
        path = write_wav(
            tmp_path / f"{width}.wav", tone(440, 0.5, SAMPLE_RATE), rate=SAMPLE_RATE, width=width
        )
    samples = np.frombuffer(read_wav_pcm16_16k(path), dtype="<i2").astype(np.float64) / 32767
    expected = tone(440, 0.5, SAMPLE_RATE)
    assert len(samples) == len(expected)
    assert np.max(np.abs(samples - expected)) < (0.02 if width == 1 else 1e-3)


def test_16k_mono_16_bit_is_passed_through(tmp_path: Path) -> None:
    raw = np.arange(-800, 800, dtype="<i2")
    path = tmp_path / "plain.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(raw.tobytes())
    assert read_wav_pcm16_16k(path) == raw.tobytes()


def test_float_wav_is_decoded_like_its_integer_twin(tmp_path: Path) -> None:
    signal = tone(440, 0.5, 22_050)
    data = signal.astype("<f4").tobytes()
    rate = 22_050
    header = (
        b"RIFF" + (36 + len(data)).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
        + (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
        + (4 * rate).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
        + b"data" + len(data).to_bytes(4, "little")
    )  # fmt: skip
    path = tmp_path / "float.wav"
    path.write_bytes(header + data)
    as_float = np.frombuffer(read_wav_pcm16_16k(path), dtype="<i2").astype(np.float64)
    as_int = np.frombuffer(
        read_wav_pcm16_16k(write_wav(tmp_path / "int.wav", signal, rate=rate)), dtype="<i2"
    ).astype(np.float64)
    assert abs(len(as_float) - len(as_int)) <= 32  # the two resamplers may differ by a few samples
    n = min(len(as_float), len(as_int))
    # same level and same tone: the difference is small against the signal (0.5 of full scale)
    assert np.sqrt(np.mean(as_float[:n] ** 2)) == pytest.approx(np.sqrt(np.mean(as_int[:n] ** 2)), rel=0.05)
    assert dominant_hz(read_wav_pcm16_16k(path)) == pytest.approx(440, abs=5)
    assert len(read_wav_pcm16_16k(path)) // 32 == pytest.approx(500, abs=5)  # ms at 16 kHz PCM16


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"this is not audio", "RIFF"), (b"", "truncated or empty"), (None, "No such file")],
)
def test_unreadable_files_are_refused_with_the_path_and_reason(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.wav: cannot read") as caught:
        read_wav_pcm16_16k(path)
    assert reason in str(caught.value)


# -- resampling ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "target"), [(44_100, 16_000), (48_000, 16_000), (8_000, 16_000)])
def test_stream_resampler_matches_whole_signal_resampling(source: int, target: int) -> None:
    rng = np.random.default_rng(7)
    signal = rng.normal(size=10_007)
    resampler = StreamResampler(source, target)
    pieces, start = [], 0
    while start < len(signal):
        size = int(rng.integers(1, 2_500))
        pieces.append(resampler.push(signal[start : start + size]))
        start += size
    pieces.append(resampler.finish())
    streamed = np.concatenate(pieces)
    whole = resample(signal, source, target)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-12)


# -- pacing ----------------------------------------------------------------------------------------------


async def collect(pcm: bytes, **kwargs: float) -> tuple[list[tuple[int, bytes]], float]:
    started = time.monotonic()
    chunks = [item async for item in paced_chunks(pcm, **kwargs)]  # type: ignore[arg-type]
    return chunks, time.monotonic() - started


async def test_speed_10_sends_one_second_in_a_tenth() -> None:
    pcm = np.arange(SAMPLE_RATE, dtype="<i2").tobytes()
    chunks, elapsed = await collect(pcm, chunk_ms=100, speed=10)
    assert 0.09 <= elapsed < 0.3
    assert b"".join(chunk for _, chunk in chunks) == pcm
    times = [t for t, _ in chunks]
    assert times == list(range(100, 1001, 100))
    assert all(a < b for a, b in pairwise(times))


async def test_chunks_are_released_on_a_drift_free_schedule() -> None:
    pcm = bytes(2 * SAMPLE_RATE // 2)  # 0.5 s in 20 ms chunks at 5x: 25 chunks due every 4 ms
    started = time.monotonic()
    released = []
    async for end_ms, _ in paced_chunks(pcm, chunk_ms=20, speed=5):
        released.append((end_ms, time.monotonic() - started))
        await asyncio.sleep(0.002)  # slow consumer work must not push the schedule back
    for end_ms, at in released:
        assert at >= end_ms / 1000 / 5 - 0.001
    assert released[-1][1] < 0.1 + 0.05


@pytest.mark.parametrize("speed", [0, math.inf])
async def test_no_pacing_does_not_sleep(speed: float, monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(delay: float) -> None:
        raise AssertionError(f"slept {delay}")

    monkeypatch.setattr(audio_source.asyncio, "sleep", no_sleep)
    pcm = bytes(2 * SAMPLE_RATE * 3)  # 3 s
    chunks, elapsed = await collect(pcm, chunk_ms=100, speed=speed)
    assert len(chunks) == 30
    assert elapsed < 0.1


async def test_a_short_last_chunk_and_odd_lengths() -> None:
    pcm = bytes(2 * 1_000)  # 62.5 ms: three 20 ms chunks and a 2.5 ms one
    chunks, _ = await collect(pcm, chunk_ms=20, speed=0)
    assert [len(c) for _, c in chunks] == [640, 640, 640, 80]
    assert [t for t, _ in chunks] == [20, 40, 60, 62]
    with pytest.raises(ValueError, match="even"):
        await collect(b"\x00", speed=0)
    with pytest.raises(ValueError, match="speed"):
        await collect(pcm, speed=-1)
    with pytest.raises(ValueError, match="chunk_ms"):
        await collect(pcm, chunk_ms=0)


# -- microphone ------------------------------------------------------------------------------------------


async def test_microphone_without_sounddevice_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def refuse(name: str, *args: object, **kwargs: object) -> object:
        if name == "sounddevice":
            raise ImportError("No module named 'sounddevice'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(RuntimeError, match=r"pip install sounddevice"):
        audio_source.require_microphone()
    with pytest.raises(RuntimeError, match=r"pip install sounddevice"):
        await anext(audio_source.microphone_chunks())
