"""``livecanvas train --teacher DIR``: a canvas drafter distilled from a user's Hugging Face Marian model.

The same recipe as the shipped directions (:mod:`engine.training.recipe`), on a teacher the user
brings (any opus-mt pair, a ``save_pretrained`` directory or a local hub cache entry, offline). Stages
under the work directory, each skipped when its output exists, so an interrupted run resumes:

* sources: the English corpus (:mod:`engine.training.corpus`) for a teacher that translates from
  English; for any other source language the user's ``--sources FILE`` (sentences in that language,
  one per line), as no corpus of every language ships here. The dev split (:data:`DEV_SENTENCES`) is a
  stable sample by sentence id;
* ``<teacher>/teacher.jsonl`` (``<teacher>``: the pair and a digest of the weights, :func:`work_name`):
  the teacher's greedy translations (``generate`` with one beam, its
  generation config's banned tokens and forced end applied), :mod:`engine.training.distill`;
* ``<teacher>/train/``: mask-predict distillation of :class:`engine.diffusion.marian_canvas.
  MarianCanvasDrafter` (:mod:`engine.training.canvas_train`: the same objective, schedule, averaging
  and checkpoints), the softmax over the whole vocabulary;
* evaluation on dev, then the export: a directory that ``serve --translator`` and ``livecanvas models``
  take as they take the checkpoint itself, holding ``teacher/`` (a copy of the checkpoint),
  ``drafter.safetensors``, ``livecanvas.json`` (languages and decoding defaults, the shipped
  directions' card format), ``README.md``, ``evaluation.json`` and ``SHA256SUMS``.

Served, the drafter fills each window's canvas in parallel and its first draft goes out at the fill
step; the teacher then verifies the canvas, so every final is the teacher's own greedy translation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.diffusion.canvas import MAX_CANVAS
from engine.diffusion.canvas_denoiser import CanvasDenoiser, Direction
from engine.diffusion.marian_canvas import (
    DRAFTER_WEIGHTS,
    TEACHER_DIR,
    Drafter,
    MarianCanvasDrafter,
    MarianPieces,
    MarianVerifier,
)
from engine.diffusion.mask_schedule import CanvasSettings
from engine.errors import ModelResolutionError
from engine.models import match_language
from engine.training import canvas_train, corpus, distill, evaluate, export
from engine.training.recipe import DEFAULT_MINUTES, DRY_RUN_STEPS, hardware, train_settings
from engine.translator import CARD_FILE
from engine.types import DiffusionParams, EarlyExitParams

log = logging.getLogger("livecanvas.train")

DEV_SENTENCES = 200
DRY_RUN_SENTENCES = 120
FILL_STEPS = 4
"""The drafter fills its canvas by this step, where the first draft goes out (as the shipped cards)."""
ENTROPY_BOUND = 0.5
DRAFT_STEPS = (1, 2, 4)
OBJECTIVE = (
    "mask-predict (absorbing) diffusion: per canvas t ~ U(0, 1], each slot masked with probability t, "
    "cross-entropy on the masked slots over the whole vocabulary, </s> padding weighted 0.2; AdamW, "
    "linear warm-up then linear decay in time, weights averaged (EMA 0.999), bf16 autocast; teacher "
    "encoder, embeddings and output layer frozen, decoder layers started from the teacher's"
)


@dataclass(frozen=True, slots=True)
class TeacherRecipe:
    teacher: str  # a --translator spec: DIR or DIR:SRC:TGT
    work_dir: Path
    sources: Path | None = None  # sentences in the teacher's source language, one per line
    dry_run: bool = False
    minutes: float | None = None
    threads: int = 2
    device: str = "cpu"

    @property
    def settings(self) -> canvas_train.TrainSettings:
        return train_settings(self.device, dry_run=self.dry_run)


@dataclass
class Teacher:
    """The loaded teacher: its model, tokenizer, greedy rules, pair and name."""

    path: Path
    model: Any
    tokenizer: Any
    pieces: MarianPieces
    rules: Any  # engine.marian_greedy.GreedyRules
    pair: tuple[str, str]
    name: str

    @property
    def label(self) -> str:
        return f"{self.pair[0]}-{self.pair[1]}"

    def translate(self, texts: Sequence[str]) -> list[tuple[tuple[int, ...], tuple[int, ...], str]]:
        """Greedy translations as ``generate`` makes them, with one beam (:data:`distill.Translate`)."""
        prefix = self.pieces.target_prefix
        inputs = self.tokenizer([prefix + t for t in texts], return_tensors="pt", padding=True)
        inputs = {name: value.to(self.model.device) for name, value in inputs.items()}
        with torch.inference_mode():
            output = self.model.generate(**inputs, num_beams=1, do_sample=False)
        ends = self.rules.eos_token_ids | {self.tokenizer.pad_token_id}
        rows = []
        for ids, mask, generated in zip(inputs["input_ids"], inputs["attention_mask"], output, strict=True):
            source = tuple(int(i) for i, real in zip(ids.tolist(), mask.tolist(), strict=True) if real)
            target: list[int] = []
            for token in generated.tolist()[1:]:  # the first is the decoder's start token
                if token in ends:
                    break
                target.append(int(token))
            rows.append((source, tuple(target), self.pieces.decode(target)))
        return rows

    def drafter(self) -> MarianCanvasDrafter:
        return MarianCanvasDrafter.from_teacher(self.model, self.rules.banned)

    def verifier(self) -> MarianVerifier:
        return MarianVerifier.of(self.model, self.rules)


def load_teacher_checkpoint(spec: str, device: str = "cpu") -> Teacher:
    """The teacher ``spec`` names (as ``serve --translator`` resolves it), loaded in float32."""
    from transformers import AutoTokenizer, MarianMTModel

    from engine.marian_greedy import GreedyRules
    from engine.user_translator import TranslatorSpec, describe_spec, name_of, target_prefix_of

    parsed = TranslatorSpec.parse(spec)
    path, pair = describe_spec(parsed)
    model: Any = MarianMTModel.from_pretrained(path, local_files_only=True)
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    pieces = MarianPieces(tokenizer, target_prefix_of(tokenizer, pair[1]))
    rules = GreedyRules.of(model.generation_config, model.config)
    return Teacher(path, model, tokenizer, pieces, rules, pair, name_of(path, parsed))


def sentences(recipe: TeacherRecipe, teacher: Teacher) -> dict[str, list[tuple[str, str]]]:
    """``(id, text)`` items of the ``train`` and ``dev`` splits (see the module docstring)."""
    limit = DRY_RUN_SENTENCES if recipe.dry_run else None
    if recipe.sources is not None:
        lines = recipe.sources.read_text(encoding="utf-8").splitlines()
        texts = list(dict.fromkeys(line.strip() for line in lines if line.strip()))[:limit]
        items = [("s" + hashlib.sha256(text.encode()).hexdigest()[:16], text) for text in texts]
    elif match_language(teacher.pair[0], ("en",)):
        data = recipe.work_dir / "corpus"
        if not (data / "sources.json").is_file():
            corpus.build_corpus(data, limit=limit)
        rows = corpus.read_jsonl(data / "train.jsonl") + corpus.read_jsonl(data / "dev.jsonl")
        items = [(str(r["id"]), str(r["text"])) for r in rows]
    else:
        raise ModelResolutionError(
            f"livecanvas train --teacher: {teacher.name} translates from {teacher.pair[0]!r}, and the corpus "
            f"that ships is English; give sentences in {teacher.pair[0]!r}: --sources FILE (one per line)"
        )
    if len(items) < 4:
        raise ModelResolutionError(f"livecanvas train --teacher: {len(items)} source sentences are too few")
    ordered = sorted(items, key=lambda item: corpus.stable_fraction(item[0]))
    dev_size = min(DEV_SENTENCES, len(ordered) // 8 or 1)
    return {"dev": ordered[:dev_size], "train": ordered[dev_size:]}


def run_teacher(recipe: TeacherRecipe, out: Path | None) -> dict[str, Any]:
    """Every stage; returns the evaluation summary written beside the export."""
    torch.set_num_threads(recipe.threads)
    teacher = load_teacher_checkpoint(recipe.teacher, recipe.device)
    work = recipe.work_dir / work_name(recipe, teacher)
    parts = sentences(recipe, teacher)
    items = parts["dev"] + parts["train"]
    pairs = distill.distil(
        teacher.translate, items, work / "teacher.jsonl", desc=f"teacher {teacher.label}", batch=distill.BATCH
    )
    teacher.model.cpu()
    train_pairs = [pairs[i] for i, _ in parts["train"]]
    dev_pairs = [pairs[i] for i, _ in parts["dev"]]
    examples = canvas_train.make_examples(train_pairs)
    if not examples:
        raise ModelResolutionError(
            f"none of the teacher's {len(train_pairs)} training translations fits its canvas "
            "(a translation over 1.3 times its source's pieces): give other sentences"
        )
    log.info("%s: %d training canvases of %d pairs", teacher.label, len(examples), len(train_pairs))
    train_dir = work / "train"
    minutes = training_minutes(recipe, train_dir)

    def dev_eval(current: Drafter) -> dict[str, float]:
        return {"draft_chrf": draft_chrf(teacher, current, dev_pairs[:DEV_SENTENCES], FILL_STEPS)}

    state = canvas_train.train(
        teacher.drafter(),
        examples,
        None,
        recipe.settings,
        train_dir,
        minutes=minutes,
        steps=DRY_RUN_STEPS if recipe.dry_run else None,
        evaluate=dev_eval,
        desc=f"train {teacher.label}",
        device=recipe.device,
    )
    teacher.model.cpu()  # training moved the parts it shares with the drafter to the device
    drafter: MarianCanvasDrafter = state["averaged"]
    summary = evaluate_drafter(teacher, drafter, dev_pairs[: 16 if recipe.dry_run else DEV_SENTENCES])
    summary["training"] = {
        "pairs": len(train_pairs),
        "canvases": len(examples),
        "sources": str(recipe.sources) if recipe.sources else "the English corpus of the shipped recipe",
        "step": state["step"],
        "minutes": state["elapsed"] / 60,
        "hardware": hardware(recipe.threads, state.get("device", "cpu")),
        "objective": OBJECTIVE,
        "curve": state["curve"],
    }
    summary["dry_run"] = recipe.dry_run
    target = out or recipe.work_dir / "export" / f"{teacher.label}-drafter"
    export_drafter(teacher, drafter, summary, target)
    summary["exported"] = str(target)
    return summary


def work_name(recipe: TeacherRecipe, teacher: Teacher) -> str:
    """The teacher's directory under the work directory: its pair and a digest of its weight files
    (another teacher of the same pair never resumes this one's checkpoint), a dry run apart."""
    digest = hashlib.sha256()
    for path in sorted(teacher.path.glob("*")):
        if path.suffix in (".safetensors", ".bin") and path.is_file():
            digest.update(export.sha256_of(path).encode())
    return f"{teacher.label}-{digest.hexdigest()[:12]}" + ("-dry-run" if recipe.dry_run else "")


def training_minutes(recipe: TeacherRecipe, train_dir: Path) -> float | None:
    """This run's training minutes, as the embedded recipe counts them: as asked; else 60 for a new
    run and none for a resumed one (it evaluates and exports the last weights); the dry run counts
    steps."""
    if recipe.minutes is not None or recipe.dry_run:
        return recipe.minutes
    return 0.0 if (train_dir / "checkpoint.pt").is_file() else DEFAULT_MINUTES


def denoiser_for(teacher: Teacher, drafter: Drafter, *, verify: bool) -> CanvasDenoiser:
    direction = Direction(
        teacher.label,
        drafter,
        teacher.pieces,
        None,
        CanvasSettings(fill_steps=FILL_STEPS) if verify else CanvasSettings(),
        verifier=teacher.verifier() if verify else None,
    )
    return CanvasDenoiser([direction])


def draft_chrf(teacher: Teacher, drafter: Drafter, dev: Sequence[distill.Pair], steps: int) -> float:
    """chrF against the teacher of the drafter's canvas after ``steps`` steps (every step runs)."""
    result = evaluate.canvas_translate(
        denoiser_for(teacher, drafter, verify=False),
        0,
        [p.source for p in dev],
        diffusion=DiffusionParams(max_denoising_steps=steps, entropy_bound=1e-30),
        early_exit=EarlyExitParams(draft_step=steps),
    )
    return evaluate.scores([r.final for r in result], [p.target for p in dev])["chrf"]


SHIPPED_DIFFUSION = DiffusionParams(max_denoising_steps=FILL_STEPS + MAX_CANVAS, entropy_bound=ENTROPY_BOUND)
SHIPPED_EARLY_EXIT = EarlyExitParams(draft_step=FILL_STEPS)


def evaluate_drafter(teacher: Teacher, drafter: Drafter, dev: Sequence[distill.Pair]) -> dict[str, Any]:
    """The export's figures on dev: the drafter's canvas at 1, 2 and 4 steps, and the served decoding
    (first draft at the fill step, the teacher verifying) against the teacher's own translations, with
    its rounds per window and the time per sentence, batched and alone, beside the teacher's."""
    sources, references = [p.source for p in dev], [p.target for p in dev]
    drafts = {str(steps): draft_chrf(teacher, drafter, dev, steps) for steps in DRAFT_STEPS}
    served = denoiser_for(teacher, drafter, verify=True)
    started = time.perf_counter()
    result = evaluate.canvas_translate(
        served, 0, sources, diffusion=SHIPPED_DIFFUSION, early_exit=SHIPPED_EARLY_EXIT
    )
    batched = 1e3 * (time.perf_counter() - started) / len(dev)
    lone = []
    for source in sources[:20]:
        started = time.perf_counter()
        evaluate.canvas_translate(
            served, 0, [source], diffusion=SHIPPED_DIFFUSION, early_exit=SHIPPED_EARLY_EXIT
        )
        lone.append(1e3 * (time.perf_counter() - started))
    teacher_lone = []
    for source in sources[:20]:
        started = time.perf_counter()
        teacher.translate([source])
        teacher_lone.append(1e3 * (time.perf_counter() - started))
    finals = [r.final for r in result]
    return {
        "pair": list(teacher.pair),
        "teacher": teacher.name,
        "dev_sentences": len(dev),
        "draft_chrf_by_steps": drafts,
        "served": {
            "draft": evaluate.scores([r.draft for r in result], references),
            "final": evaluate.scores(finals, references),
            "finals_identical_to_teacher": round(
                sum(f == r for f, r in zip(finals, references, strict=True)) / len(dev), 4
            ),
            "mean_steps": round(sum(r.steps for r in result) / len(result), 2),
            "ms_per_sentence_batched": round(batched, 2),
            "lone_final_ms": round(sorted(lone)[len(lone) // 2], 2),
            "teacher_lone_ms": round(sorted(teacher_lone)[len(teacher_lone) // 2], 2),
        },
    }


def export_drafter(
    teacher: Teacher, drafter: MarianCanvasDrafter, summary: dict[str, Any], target: Path
) -> Path:
    """Write the export (module docstring) atomically."""
    source, target_lang = teacher.pair
    card = {
        "name": f"{teacher.name} + canvas drafter",
        "direction": teacher.label,
        "languages": {"source": source, "target": target_lang},
        "diffusion": {
            "max_denoising_steps": SHIPPED_DIFFUSION.max_denoising_steps,
            "entropy_bound": ENTROPY_BOUND,
        },
        "canvas": {"fill_steps": FILL_STEPS, "verify": True, "shortlist": False},
        "early_exit": {"draft_step": FILL_STEPS},
        "note": f"canvas drafter distilled from {teacher.name} by livecanvas train --teacher; see README.md",
    }

    def write(staging: Path) -> None:
        shutil.copytree(teacher.path, staging / TEACHER_DIR)  # links followed: a hub snapshot's blobs
        drafter.save(staging / DRAFTER_WEIGHTS)
        (staging / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        (staging / "README.md").write_text(render_card(summary))
        (staging / "evaluation.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")

    with torch.no_grad():
        return export.write_directory(target, write)


def render_card(summary: dict[str, Any]) -> str:
    """The export's ``README.md``: what it is, how it was trained, what it measured."""
    training, served = summary["training"], summary["served"]
    source, target = summary["pair"]
    drafts = ", ".join(
        f"{steps} step(s) {chrf:.1f}" for steps, chrf in summary["draft_chrf_by_steps"].items()
    )
    lines = [
        f"# {summary['teacher']} + canvas drafter ({source} -> {target})",
        "",
        f"A canvas drafter distilled from the Marian checkpoint `{summary['teacher']}` (copied unchanged in",
        "`teacher/`, under its own licence: keep its credits when redistributing) by `livecanvas train",
        "--teacher`. Serve it with `livecanvas serve --translator THIS_DIRECTORY`: the drafter fills each",
        "window's canvas in parallel and sends the first draft; the teacher then verifies the canvas, so",
        "every final is the teacher's own greedy translation.",
        "",
        "## Training",
        f"- {training['pairs']} sentence pairs ({training['canvases']} canvases) from {training['sources']},",
        "  translated by the teacher (greedy, one beam).",
        f"- {training['step']} steps, {training['minutes']:.1f} min on {training['hardware']}.",
        f"- Objective: {training['objective']}.",
        "",
        f"## Measured on {summary['dev_sentences']} dev sentences (chrF against the teacher's translations)",
        f"- The drafter's canvas after {drafts}.",
        f"- Served: first draft chrF {served['draft']['chrf']:.1f}, "
        f"final chrF {served['final']['chrf']:.1f}; "
        f"{100 * served['finals_identical_to_teacher']:.1f}% of finals identical to the teacher's.",
        f"- {served['mean_steps']} steps per window; {served['ms_per_sentence_batched']} ms per sentence "
        f"batched, {served['lone_final_ms']} ms for one sentence alone (the teacher alone: "
        f"{served['teacher_lone_ms']} ms).",
    ]
    if summary.get("dry_run"):
        lines += ["", "**A dry run**: a few steps on a few sentences; the drafts are not meant to be good."]
    return "\n".join(lines) + "\n"
