"""``livecanvas train --dry-run`` end to end: every stage on real offline sources, resumable, and an
export that loads through the service's own model resolution and translates through the engine."""

from __future__ import annotations

import json

import pytest

from engine.runtime import WindowJob, load_model
from engine.training.corpus import read_jsonl
from engine.training.pipeline import Recipe, run
from engine.types import CanvasKey
from tests.engine_driver import drive


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> Recipe:
    work = tmp_path_factory.mktemp("train")
    recipe = Recipe(work_dir=work, export_dir=work / "export", dry_run=True, max_steps=12, threads=1)
    run(recipe)
    return recipe


def test_the_corpus_records_sources_and_keeps_splits_apart(dry_run: Recipe) -> None:
    data = dry_run.work_dir / "corpus"
    sources = json.loads((data / "sources.json").read_text())
    assert set(sources["sources"]) == {"web-bible", "fortunes", "wordnet", "django-po"}
    assert all(info["licence"] and info["sentences"] > 0 for info in sources["sources"].values())
    splits = {name: read_jsonl(data / f"{name}.jsonl") for name in ("train", "dev", "test", "human_test")}
    ids = [str(row["id"]) for rows in splits.values() for row in rows]
    assert len(ids) == len(set(ids))
    train_texts = {str(row["text"]).lower() for row in splits["train"]}
    assert not train_texts & {str(row["text"]).lower() for row in splits["human_test"]}
    docs = {name: {str(row["doc"]) for row in splits[name]} for name in ("train", "dev", "test")}
    assert not docs["train"] & docs["test"]
    assert not docs["train"] & docs["dev"]
    for row in splits["train"]:
        assert 3 <= len(str(row["text"]).split()) <= 40


def test_every_stage_left_its_output(dry_run: Recipe) -> None:
    work = dry_run.work_dir
    teacher_rows = [json.loads(line) for line in (work / "teacher.jsonl").read_text().splitlines()]
    assert teacher_rows
    assert all(row["target"] for row in teacher_rows)
    assert (work / "tokenizer" / "tokenizer.json").is_file()
    assert (work / "examples.pt").is_file()
    assert (work / "train" / "checkpoint.pt").is_file()
    evaluation = json.loads((work / "evaluation.json").read_text())
    assert [row["steps"] for row in evaluation["quality"]] == ["1", "2", "4", "8", "16", "adaptive"]
    for row in evaluation["quality"][:-1]:
        assert row["test_vs_teacher"]["mean_steps"] >= int(row["steps"])  # fixed: every step runs
    assert evaluation["teacher"]["human_refs"]["chrf"] > 40  # the teacher itself is a real translator
    assert evaluation["training"]["step"] == 12
    for name in ("README.md", "evaluation.json", "livecanvas.json", "SHA256SUMS", "model.safetensors"):
        assert (dry_run.export_dir / name).is_file(), name


def test_the_export_loads_and_translates_through_the_engine(dry_run: Recipe) -> None:
    loaded = load_model(str(dry_run.export_dir))
    assert loaded.card.trained
    assert loaded.card.prompt_kind == "tagged"
    request = loaded.request_for(
        WindowJob(
            key=CanvasKey("s", "pt-BR", 0),
            source="Good evening and welcome.",
            context=(),
            source_lang="en",
            target_lang="pt-BR",
            submitted_ns=0,
        )
    )
    result = drive(loaded.denoiser, {0: [request]})
    assert list(result.finals) == [request.key]


def test_a_second_run_resumes_training_where_the_first_stopped(dry_run: Recipe) -> None:
    log_path = dry_run.work_dir / "train" / "log.jsonl"
    summary = run(Recipe(work_dir=dry_run.work_dir, export_dir=dry_run.export_dir, dry_run=True, threads=1))
    assert summary["training"]["step"] == 30
    steps = [json.loads(line)["step"] for line in log_path.read_text().splitlines() if "loss" in line]
    assert steps == sorted(set(steps))
    assert steps[-1] == 30
    again = run(Recipe(work_dir=dry_run.work_dir, export_dir=dry_run.export_dir, dry_run=True, threads=1))
    assert again == summary  # nothing left to do: no retraining, no re-export
