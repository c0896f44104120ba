"""The speech test data and scoring helpers of tests/speech.py: clips, synthesis, resampling, WER, silence."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from tests.speech import (
    SAMPLE_RATE,
    librivox_clips,
    normalize,
    read_wav_16k,
    resample,
    silence,
    synthesize,
    wer,
    write_wav_16k,
)


def test_librivox_clips_load_with_their_transcripts() -> None:
    clips = librivox_clips()
    assert len(clips) == 5
    assert clips[1].text == "he was not an ill disposed young man"
    total = 0.0
    for clip in clips:
        assert clip.text
        assert clip.text == clip.text.strip()
        assert "<s>" not in clip.text
        assert "(" not in clip.text
        samples = clip.samples
        assert samples.dtype == np.int16
        seconds = len(samples) / SAMPLE_RATE
        assert 1.0 < seconds < 15.0
        assert np.abs(samples).max() > 1000  # speech, not silence
        total += seconds
    assert total == pytest.approx(24.7, abs=0.2)


def test_missing_test_data_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install pocketsphinx-testdata"):
        librivox_clips(tmp_path)


def test_synthesis_writes_16k_mono_pcm16_of_plausible_length(tmp_path: Path) -> None:
    text = "Good evening, and welcome to the live broadcast of the evening news."
    path = synthesize(text, tmp_path / "speech.wav")
    with wave.open(str(path), "rb") as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        seconds = audio.getnframes() / SAMPLE_RATE
    words = len(text.split())
    assert words / 5.0 < seconds < words / 1.2  # between 1.2 and 5 words a second
    samples = read_wav_16k(path)
    assert len(samples) == round(seconds * SAMPLE_RATE)
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 500  # audible speech


def test_resampling_keeps_the_passband_and_removes_what_would_alias() -> None:
    source = np.arange(22_050) / 22_050
    for frequency, expected in ((1_000, 1.0), (7_000, 1.0), (9_000, 0.0), (10_000, 0.0)):
        result = resample(np.sin(2 * np.pi * frequency * source), 22_050, SAMPLE_RATE)
        assert len(result) == SAMPLE_RATE
        amplitude = np.sqrt(2 * np.mean(result[500:-500] ** 2))
        assert amplitude == pytest.approx(expected, abs=1e-2), frequency
    tone = resample(np.sin(2 * np.pi * 440 * source), 22_050, SAMPLE_RATE)
    reference = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    assert np.max(np.abs(tone[500:-500] - reference[500:-500])) < 1e-3


def test_read_wav_converts_rate_and_channels(tmp_path: Path) -> None:
    rate = 44_100
    t = np.arange(rate) / rate
    stereo = np.stack([np.sin(2 * np.pi * 500 * t), np.sin(2 * np.pi * 500 * t)], axis=1) * 0.5
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((stereo * 32767).astype("<i2").tobytes())
    samples = read_wav_16k(path)
    assert samples.dtype == np.int16
    assert len(samples) == SAMPLE_RATE
    assert np.sqrt(2 * np.mean(samples[500:-500].astype(np.float64) ** 2)) == pytest.approx(16_384, rel=0.01)
    same = write_wav_16k(tmp_path / "mono.wav", samples)
    assert np.array_equal(read_wav_16k(same), samples)


def test_wer_of_identical_texts_is_zero_and_of_different_texts_positive() -> None:
    clips = librivox_clips()
    references = [clip.text for clip in clips]
    assert wer(references, references) == 0.0
    assert wer(["he was not an ill disposed young man"], ["he was not an illness those young man"]) == (
        pytest.approx(2 / 8)  # two substitutions
    )
    assert wer(["one two three four"], [""]) == 1.0
    # corpus level: errors over all reference words, not a mean of per-utterance rates
    assert wer(["a b c d e f g h i j", "k"], ["a b c d e f g h i j", "x"]) == pytest.approx(1 / 11)
    with pytest.raises(ValueError, match="hypotheses"):
        wer(["a"], [])


def test_normaliser_treats_titles_numbers_case_and_punctuation_sensibly() -> None:
    assert normalize("Mr. Dashwood") == normalize("mister dashwood") == "mister dashwood"
    assert normalize("He had twenty-one sons.") == normalize("he had 21 sons") == "he had 21 sons"
    assert normalize("Ill-disposed, wasn't he?") == normalize("ill disposed was not he")
    assert wer(["Mr. John Dashwood had 2 sons."], ["mister john dashwood had two sons"]) == 0.0
    assert wer(["It is Tuesday."], ["it is thursday"]) == pytest.approx(1 / 3)


def test_silence_is_pcm16_zeros_or_very_quiet_noise() -> None:
    quiet = silence(0.5)
    assert quiet == bytes(2 * SAMPLE_RATE // 2)
    noisy = np.frombuffer(silence(1.0, noise_dbfs=-70.0), dtype="<i2")
    assert len(noisy) == SAMPLE_RATE
    rms = np.sqrt(np.mean(noisy.astype(np.float64) ** 2)) / 32767
    assert 20 * np.log10(rms) == pytest.approx(-70.0, abs=1.5)
    assert np.abs(noisy).max() < 100
    assert silence(1.0, noise_dbfs=-70.0) == silence(1.0, noise_dbfs=-70.0)  # deterministic
