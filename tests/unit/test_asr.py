"""The faster-whisper backend on real speech: batching across streams, context prompts, silence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine.asr import PROMPT_TOKENS, AsrRequest, FasterWhisperAsr
from engine.asr_models import ensure_whisper_base
from tests.speech import librivox_clips, read_wav_16k, wer


@pytest.fixture(scope="module")
def asr(livecanvas_cache: object) -> FasterWhisperAsr:
    return FasterWhisperAsr({"final": ensure_whisper_base()}, cpu_threads=2)


def audio(index: int) -> np.ndarray:
    return read_wav_16k(librivox_clips()[index].path).astype(np.float32) / 32768


LONG_CONTEXT = " ".join(f"earlier caption words number {n}." for n in range(40))


def test_rows_with_different_context_lengths_share_a_round(asr: FasterWhisperAsr) -> None:
    clips = librivox_clips()
    requests = [
        AsrRequest(audio(0), 0, "final", prompt=LONG_CONTEXT),
        AsrRequest(audio(1), 5_000, "final", prompt="short"),
        AsrRequest(audio(2), 0, "final", prompt=""),
        AsrRequest(audio(3), 0, "final", prompt=LONG_CONTEXT + " and then some more"),
    ]
    calls_before = asr.calls
    results = asr.transcribe(requests)
    hypotheses = [" ".join(w.text for w in words) for words in results]
    assert wer([c.text for c in clips[:4]], hypotheses) < 0.1
    # both long contexts are cut to the same token budget, so they went through one batched call
    assert asr.calls - calls_before == 3
    assert len(asr._context_tokens(requests[0])) == PROMPT_TOKENS


def test_word_times_are_absolute_and_ordered(asr: FasterWhisperAsr) -> None:
    [words] = asr.transcribe([AsrRequest(audio(1), 12_000, "final")])
    assert words
    assert words[0].t0_ms >= 12_000
    assert all(a.t1_ms <= b.t0_ms + 50 for a, b in itertools.pairwise(words))
    assert all(w.t0_ms <= w.t1_ms for w in words)
    assert words[-1].t1_ms <= 12_000 + len(audio(1)) * 1000 // 16_000 + 200
    assert "ill-disposed" in " ".join(w.text for w in words)  # a hyphenated word stays one word


def test_silence_gives_no_words(asr: FasterWhisperAsr) -> None:
    rng = np.random.default_rng(0)
    quiet = [np.zeros(16_000 * 3, np.float32), (rng.standard_normal(16_000 * 3) * 1e-3).astype(np.float32)]
    assert asr.transcribe([AsrRequest(q, 0, "final") for q in quiet]) == [[], []]
