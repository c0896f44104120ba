"""Quality against speed: draft and final chrF of the embedded translator v2 over denoising steps.

Both directions, beside the teacher, on the same sentences and threads. Sentences: Django's strings
with their human translations (the model cards' human set: English -> pt-BR, and reversed), or with
``--references teacher`` the benchmark's caption sentences against the teacher's raw outputs. Each
setting (1, 2, 3, 4, 8 fixed steps; the card's adaptive schedule, denoising alone; the shipped default,
whose filled canvas the teacher verifies; that default without the shortlist, and with int8 layers
in the drafter, as served by default; with ``--fill F:SHARE``, the adaptive schedule whose canvas is
filled by step F and then refined, its first draft at step F) goes through the service's own
scheduler and batched denoiser (:func:`engine.training.canvas_export.run_set`); latency is a lone
window's final, median over the first 40 sentences, next to the teacher's one-sentence calls in its
native engine.

Prints JSON and writes ``bench/results/quality.json`` (``quality_teacher.json``) and the PNG beside.

    python -m bench.quality
    python -m bench.quality --references teacher
    python -m bench.quality --fill 3:0.5 4:0.5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bench.throughput import LANGUAGES, SENTENCES, adaptive_share, native_teacher
from engine.diffusion.mask_schedule import CanvasSettings
from engine.runtime import load_model
from engine.training.canvas_export import (
    FIXED_STEPS,
    MAX_STEPS,
    Decoding,
    fixed,
    lone_latency,
    run_set,
    verified,
)
from engine.training.corpus import human_pairs
from engine.training.evaluate import scores
from engine.translator import CanvasModel, canvas_dirs, load_canvas_model

RESULTS = Path(__file__).resolve().parent / "results"
FILLED = "adaptive, filled by"  # the label of a --fill setting's row, then "F, refine SHARE"


def fill_spec(text: str) -> tuple[int, float]:
    """``F:SHARE`` from the command line: a positive fill step and a refine share in [0, 1]."""
    try:
        fill, share = text.split(":")
        spec = int(fill), float(share)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected F:SHARE such as 3:0.5, got {text!r}") from None
    if spec[0] <= 0 or not 0 <= spec[1] <= 1:
        raise argparse.ArgumentTypeError(f"need F >= 1 and 0 <= SHARE <= 1, got {text!r}")
    return spec


def sets(references: str) -> dict[str, tuple[list[str], list[str]]]:
    if references == "human":
        pairs = human_pairs()
        return {
            "en-pt": ([p.text for p in pairs], [p.reference for p in pairs]),
            "pt-en": ([p.reference for p in pairs], [p.text for p in pairs]),
        }
    english = native_teacher("en-pt")
    portuguese = [str(english.translate(s)) for s in SENTENCES]
    back = native_teacher("pt-en")
    return {
        "en-pt": (SENTENCES, portuguese),
        "pt-en": (portuguese, [str(back.translate(s)) for s in portuguese]),
    }


def teacher_row(direction: str, sources: list[str], references: list[str]) -> dict[str, Any]:
    engine = native_teacher(direction)
    outputs, times = [], []
    for source in sources:
        started = time.perf_counter()
        outputs.append(str(engine.translate(source)))
        times.append(1e3 * (time.perf_counter() - started))
    return {"final": scores(outputs, references), "lone_final_ms": round(statistics.median(times[:40]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None)
    parser.add_argument("--references", choices=("human", "teacher"), default="human")
    parser.add_argument(
        "--fill",
        nargs="*",
        type=fill_spec,
        default=[],
        metavar="F:SHARE",
        help="also the adaptive default filled by step F, then refined re-masking at most SHARE",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = [round(x, 2) for x in os.getloadavg()]
    model = load_model(args.model, int8=False)  # float32 rows, as the cards measure them
    if not isinstance(model, CanvasModel):
        raise SystemExit("bench.quality measures a canvas translator (the embedded v2 or its export)")
    summary: dict[str, Any] = {
        "model": model.card.name,
        "threads": args.threads,
        "references": args.references,
    }
    for direction, (sources, references) in sets(args.references).items():
        source, target = LANGUAGES[direction]
        index = model.route(source, target)
        one = model.denoiser.directions[index]
        card = model.directions[index]
        rows = []
        adaptive = Decoding(
            replace(card.diffusion, max_denoising_steps=MAX_STEPS),
            replace(card.settings, refine_share=adaptive_share(canvas_dirs(model.resolved.path)[index])),
        )
        shipped = Decoding(card.diffusion, card.settings, verify=True) if card.verify else verified(adaptive)
        settings = {str(n): (fixed(n), card.early_exit) for n in FIXED_STEPS}
        settings["adaptive"] = (adaptive, card.early_exit)
        settings["verified"] = (shipped, card.early_exit)
        for fill, share in args.fill:
            filled = Decoding(adaptive.diffusion, CanvasSettings(fill_steps=fill, refine_share=share))
            draft = replace(card.early_exit, draft_step=fill, draft_confidence=None)
            settings[f"{FILLED} {fill}, refine {share}"] = (filled, draft)
        for name, (params, early) in settings.items():
            row = {"steps": name, **run_set(one, sources, references, params, early)}
            row["lone_final_ms"] = lone_latency(one, sources[:40], params, early)
            rows.append(row)
            print(direction, json.dumps(row), flush=True)
        off = replace(one, shortlist=None)
        no_shortlist = {
            "steps": "verified, no shortlist",
            **run_set(off, sources, references, shipped, card.early_exit),
        }
        no_shortlist["lone_final_ms"] = lone_latency(off, sources[:40], shipped, card.early_exit)
        rows.append(no_shortlist)
        quantized = load_canvas_model(model.resolved, int8=True)
        int8 = quantized.denoiser.directions[quantized.route(source, target)]
        int8_row = {
            "steps": "verified, int8 drafter",
            **run_set(int8, sources, references, shipped, card.early_exit),
        }
        int8_row["lone_final_ms"] = lone_latency(int8, sources[:40], shipped, card.early_exit)
        rows.append(int8_row)
        print(direction, json.dumps(int8_row), flush=True)
        summary[direction] = {"rows": rows, "teacher": teacher_row(direction, sources, references)}
    summary["loadavg"] = [load_before, [round(x, 2) for x in os.getloadavg()]]
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(exist_ok=True)
    stem = "quality" if args.references == "human" else "quality_teacher"
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, RESULTS / f"{stem}.png")


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, direction in zip(axes, ("en-pt", "pt-en"), strict=True):
        rows = [
            r
            for r in summary[direction]["rows"]
            if r["steps"] in {str(n) for n in FIXED_STEPS} | {"adaptive", "verified"}
        ]
        xs = [r["lone_final_ms"] for r in rows]
        axis.plot(xs, [r["final"]["chrf"] for r in rows], marker="o", label="final")
        axis.plot(xs, [r["draft"]["chrf"] for r in rows], marker="x", linestyle=":", label="first draft")
        for row, x in zip(rows, xs, strict=True):
            axis.annotate(row["steps"], (x, row["final"]["chrf"]), textcoords="offset points", xytext=(4, 4))
        for row in (r for r in summary[direction]["rows"] if r["steps"].startswith(FILLED)):
            x, label = row["lone_final_ms"], row["steps"].removeprefix("adaptive, ")
            axis.scatter([x], [row["final"]["chrf"]], color="tab:green", marker="D")
            axis.scatter([x], [row["draft"]["chrf"]], color="tab:green", marker="d")
            axis.annotate(
                label, (x, row["draft"]["chrf"]), textcoords="offset points", xytext=(4, -10), fontsize=7
            )
        teacher = summary[direction]["teacher"]
        axis.scatter(
            [teacher["lone_final_ms"]], [teacher["final"]["chrf"]], color="black", marker="s", label="teacher"
        )
        axis.set(xlabel="lone window final, ms", ylabel="chrF", title=direction)
        axis.legend()
    figure.suptitle(f"{summary['model']} ({summary['references']} references), {summary['threads']} threads")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
