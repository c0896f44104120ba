"""Tests for engine.audio: the rolling AudioBuffer, and the Silero SpeechDetector on real speech."""

from __future__ import annotations

import wave
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from engine.audio import SAMPLE_RATE, AudioBuffer, SpeechDetector, ms_to_samples

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIPS = sorted(LIBRIVOX.glob("*.wav"))


def pcm(values: list[int] | npt.NDArray[np.int16]) -> bytes:
    return np.asarray(values, dtype="<i2").tobytes()


def tone_ms(ms: int, value: int = 1000) -> bytes:
    return pcm(np.full(ms_to_samples(ms), value, dtype=np.int16))


def ramp_ms(ms: int) -> bytes:
    """Sample i holds i % 32768, so a sample's value tells where it came from."""
    return pcm((np.arange(ms_to_samples(ms)) % 32768).astype(np.int16))


# --- AudioBuffer -----------------------------------------------------------------------------------------


def test_empty_buffer() -> None:
    buf = AudioBuffer()
    assert (buf.start_ms, buf.end_ms, buf.duration_ms, buf.dropped_ms) == (0, 0, 0, 0)
    assert buf.samples().dtype == np.float32
    assert buf.samples().shape == (0,)
    assert buf.samples(500).shape == (0,)


def test_append_advances_end_in_absolute_ms() -> None:
    buf = AudioBuffer()
    buf.append(tone_ms(20))
    buf.append(tone_ms(30))
    assert (buf.start_ms, buf.end_ms, buf.duration_ms) == (0, 50, 50)
    buf.append(pcm([1] * 8))  # half a millisecond: end rounds down
    assert buf.end_ms == 50
    buf.append(pcm([1] * 8))
    assert buf.end_ms == 51
    assert buf.samples().shape == (ms_to_samples(51),)


def test_float_conversion_is_in_unit_range() -> None:
    buf = AudioBuffer()
    buf.append(pcm([0, 16384, -16384, 32767, -32768]))
    out = buf.samples()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.5, -0.5, 32767 / 32768, -1.0])
    assert out.min() >= -1.0
    assert out.max() < 1.0


def test_samples_is_a_copy() -> None:
    buf = AudioBuffer()
    buf.append(tone_ms(10))
    out = buf.samples()
    out[:] = 0.0
    assert buf.samples()[0] == pytest.approx(1000 / 32768)
    buf.append(tone_ms(10))  # the buffer can still grow while an earlier result is alive
    assert out.shape == (160,)


def test_odd_length_is_rejected() -> None:
    buf = AudioBuffer()
    with pytest.raises(ValueError, match="even number of bytes"):
        buf.append(b"\x00\x01\x02")
    assert buf.end_ms == 0


def test_samples_from_ms_is_absolute_and_clamped() -> None:
    buf = AudioBuffer()
    buf.append(ramp_ms(100))
    buf.trim_before(40)
    assert buf.start_ms == 40
    from_60 = buf.samples(60)
    assert from_60.shape == (ms_to_samples(40),)
    assert from_60[0] == pytest.approx(ms_to_samples(60) / 32768)
    assert buf.samples(0).shape == (ms_to_samples(60),)  # clamped to the start
    assert buf.samples(None).shape == (ms_to_samples(60),)
    assert buf.samples(100).shape == (0,)
    assert buf.samples(5000).shape == (0,)  # past the end


def test_trim_before_drops_older_audio_and_keeps_times() -> None:
    buf = AudioBuffer()
    buf.append(ramp_ms(1000))
    buf.trim_before(250)
    assert (buf.start_ms, buf.end_ms, buf.duration_ms) == (250, 1000, 750)
    assert buf.samples()[0] == pytest.approx(ms_to_samples(250) / 32768)
    buf.trim_before(100)  # already gone: no change
    assert buf.start_ms == 250
    buf.append(tone_ms(500))
    assert (buf.start_ms, buf.end_ms) == (250, 1500)
    assert buf.dropped_ms == 0


def test_trim_never_goes_past_the_end() -> None:
    buf = AudioBuffer()
    buf.append(tone_ms(300))
    buf.trim_before(10_000)
    assert (buf.start_ms, buf.end_ms, buf.duration_ms) == (300, 300, 0)
    assert buf.samples().shape == (0,)
    buf.append(tone_ms(20))
    assert (buf.start_ms, buf.end_ms) == (300, 320)


def test_bound_drops_oldest_audio_and_counts_it() -> None:
    buf = AudioBuffer(max_ms=1000)
    buf.append(ramp_ms(800))
    assert buf.dropped_ms == 0
    buf.append(ramp_ms(500))
    assert (buf.start_ms, buf.end_ms, buf.duration_ms, buf.dropped_ms) == (300, 1300, 1000, 300)
    assert buf.samples().shape == (ms_to_samples(1000),)
    assert buf.samples()[0] == pytest.approx(ms_to_samples(300) / 32768)
    buf.append(tone_ms(2500))  # one chunk over the bound on its own
    assert (buf.start_ms, buf.end_ms, buf.dropped_ms) == (2800, 3800, 2800)
    assert buf.samples().shape == (ms_to_samples(1000),)


def test_bound_keeps_start_on_a_whole_millisecond() -> None:
    buf = AudioBuffer(max_ms=10)
    buf.append(tone_ms(10))
    buf.append(pcm([7] * 3))  # 3 samples over: a whole ms goes
    assert (buf.start_ms, buf.dropped_ms) == (1, 1)
    assert buf.samples().shape == (ms_to_samples(10) - ms_to_samples(1) + 3,)
    assert buf.samples(1).shape == buf.samples().shape


def test_invalid_bound() -> None:
    with pytest.raises(ValueError, match="max_ms"):
        AudioBuffer(max_ms=0)


# --- SpeechDetector on real audio ------------------------------------------------------------------------


def read_wav(path: Path) -> npt.NDArray[np.float32]:
    """Mono float32 at SAMPLE_RATE (linear resampling when the file has another rate)."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2
        rate, channels = wav.getframerate(), wav.getnchannels()
        ints = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    audio = ints.reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768.0
    if rate != SAMPLE_RATE:
        times = np.arange(round(len(audio) * SAMPLE_RATE / rate)) / SAMPLE_RATE
        audio = np.interp(times, np.arange(len(audio)) / rate, audio).astype(np.float32)
    return audio


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector()


def covered_ms(spans: list[tuple[int, int]]) -> int:
    return sum(end - start for start, end in spans)


needs_clips = pytest.mark.skipif(not CLIPS, reason="pocketsphinx-testdata is not installed")


@needs_clips
@pytest.mark.parametrize("path", CLIPS, ids=lambda p: p.stem[-4:])
def test_real_speech_is_mostly_covered(detector: SpeechDetector, path: Path) -> None:
    audio = read_wav(path)
    duration_ms = len(audio) * 1000 // SAMPLE_RATE
    spans = detector.speech_spans(audio, offset_ms=0)
    assert spans
    assert covered_ms(spans) >= 0.8 * duration_ms
    assert all(0 <= s < e <= duration_ms + 1 for s, e in spans)
    assert all(e1 <= s2 for (_, e1), (s2, _) in pairwise(spans))
    assert detector.has_speech(audio)


@needs_clips
def test_spans_are_absolute_and_silence_between_clips_is_found(detector: SpeechDetector) -> None:
    first, second = read_wav(CLIPS[0]), read_wav(CLIPS[1])
    gap = np.zeros(2 * SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([first, gap, second])
    offset = 60_000
    spans = detector.speech_spans(audio, offset_ms=offset)
    first_end = offset + len(first) * 1000 // SAMPLE_RATE
    second_start = first_end + 2000
    assert len(spans) >= 2
    assert spans[0][0] >= offset
    assert spans[0][0] < offset + 500
    # no span covers the middle of the two-second gap
    assert not any(s <= first_end + 1000 <= e for s, e in spans)
    assert any(s >= second_start - 500 for s, _ in spans)
    assert spans[-1][1] <= second_start + len(second) * 1000 // SAMPLE_RATE + 1


def test_digital_silence_has_no_speech(detector: SpeechDetector) -> None:
    silence = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    assert detector.speech_spans(silence, offset_ms=1000) == []
    assert not detector.has_speech(silence)


def test_low_level_noise_has_no_speech(detector: SpeechDetector) -> None:
    noise = (np.random.default_rng(7).standard_normal(3 * SAMPLE_RATE) * 1e-3).astype(np.float32)
    assert detector.speech_spans(noise, offset_ms=0) == []
    assert not detector.has_speech(noise)


def test_empty_and_tiny_inputs(detector: SpeechDetector) -> None:
    assert detector.speech_spans(np.zeros(0, dtype=np.float32)) == []
    assert detector.speech_spans(np.zeros(100, dtype=np.float32)) == []


def test_input_is_not_modified(detector: SpeechDetector) -> None:
    audio = (np.random.default_rng(1).standard_normal(SAMPLE_RATE) * 0.1).astype(np.float32)
    before = audio.copy()
    detector.speech_spans(audio)
    np.testing.assert_array_equal(audio, before)


def test_rejects_multichannel(detector: SpeechDetector) -> None:
    with pytest.raises(ValueError, match="one-dimensional"):
        detector.speech_spans(np.zeros((2, 100), dtype=np.float32))


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 0.0}, {"threshold": 1.0}, {"neg_threshold": 0.9}, {"min_speech_ms": -1}],
)
def test_invalid_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        SpeechDetector(**kwargs)


@needs_clips
def test_buffer_and_detector_together(detector: SpeechDetector) -> None:
    audio = read_wav(CLIPS[0])
    buf = AudioBuffer(max_ms=5000)
    ints = np.round(audio * 32767).astype(np.int16)
    chunk = ms_to_samples(20)
    for i in range(0, len(ints), chunk):
        buf.append(pcm(ints[i : i + chunk]))
    assert buf.duration_ms == 5000
    assert buf.dropped_ms == len(audio) * 1000 // SAMPLE_RATE - 5000
    spans = detector.speech_spans(buf.samples(), offset_ms=buf.start_ms)
    assert spans
    assert spans[0][0] >= buf.start_ms
    assert spans[-1][1] <= buf.end_ms + 1
