"""What one update of an open window costs: editing its canvas in place, against translating the new
source from scratch with the drafter from a blank canvas (verified by the teacher, as the server's
``--open-windows restart`` does) and with the autoregressive teacher itself, side by side in one run.

Each sentence of ``bench.latency.SENTENCES`` (English, the dev set of the latency benchmarks) is fed as
its growing prefixes, ``--step`` words at a time, as a caption draft grows; every prefix is one update.
Per update and way: wall time until its text is out (median and p95 over the updates, one torch
thread, the shipped en -> pt-BR card as served), rounds (forwards) for the two canvas ways; all three
give the teacher's translation of the prefix (checked). ``--repeats`` runs the whole set that many
times per way, alternating, and keeps each update's fastest time.

Writes ``bench/results/open_window_cost.json`` and ``.png``.

    python -m bench.open_window_cost
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.latency import SENTENCES
from bench.server_process import percentile
from engine.batch_round import run_round
from engine.marian.teacher import load_ported, wheel_students
from engine.models import ResolvedModel
from engine.scheduler import Scheduler
from engine.translator import CanvasModel, load_canvas_model
from engine.types import CanvasKey, Draft, WindowJob

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def prefixes(sentence: str, step: int) -> list[str]:
    words = sentence.split()
    return [" ".join(words[:n]) for n in range(min(step, len(words)), len(words) + 1, step)]


def canvas_updates(
    model: CanvasModel, sentence: str, step: int, *, edit: bool
) -> list[tuple[float, int, str]]:
    """(seconds, rounds, text) per update of one window fed ``sentence``'s prefixes."""
    denoiser = model.denoiser
    denoiser.edit_in_place = edit
    scheduler = Scheduler(
        canvas_length=denoiser.canvas_length, eos_token_ids=denoiser.eos_token_ids, decode=denoiser.decode
    )
    key = CanvasKey("cost", "pt-BR", 0)
    out = []
    text = ""
    for source in prefixes(sentence, step):
        started = time.perf_counter()
        scheduler.add(model.request_for(WindowJob(key, source, (), "en", "pt-BR", 0, provisional=True)))
        rounds = 0
        while not scheduler.idle:
            for event in run_round(scheduler, denoiser).events:
                if isinstance(event, Draft):
                    text = event.text
            rounds += 1
        out.append((time.perf_counter() - started, rounds, text))
    scheduler.abort([key])
    run_round(scheduler, denoiser)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--step", type=int, default=2, help="words per update")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_canvas_model(ResolvedModel("embedded", ROOT / "engine" / "models"))
    teacher = load_ported(wheel_students()["en-pt"])
    updates = [p for s in SENTENCES for p in prefixes(s, args.step)]
    expected = teacher.translate(updates)
    best: dict[str, list[float]] = {}
    rounds: dict[str, list[int]] = {}
    agree: dict[str, int] = {}
    for _ in range(args.repeats):
        for way in ("edit", "restart", "teacher"):
            times: list[float] = []
            texts: list[str] = []
            steps: list[int] = []
            for sentence in SENTENCES:
                if way == "teacher":
                    for source in prefixes(sentence, args.step):
                        started = time.perf_counter()
                        texts += teacher.translate([source])
                        times.append(time.perf_counter() - started)
                else:
                    for seconds, count, text in canvas_updates(
                        model, sentence, args.step, edit=way == "edit"
                    ):
                        times.append(seconds)
                        steps.append(count)
                        texts.append(text)
            previous = best.get(way)
            best[way] = (
                times if previous is None else [min(a, b) for a, b in zip(previous, times, strict=True)]
            )
            rounds[way] = steps
            agree[way] = sum(a == b for a, b in zip(texts, expected, strict=True))
    summary: dict[str, Any] = {}
    for way, times in best.items():
        ms = [1e3 * t for t in times]
        summary[way] = {
            "ms_median": round(statistics.median(ms), 2),
            "ms_p95": round(percentile(ms, 0.95), 2),
            "ms_total": round(sum(ms), 1),
            "rounds_mean": round(statistics.mean(rounds[way]), 2) if rounds[way] else None,
            "teachers_text": f"{agree[way]}/{len(updates)}",
        }
    for way in ("restart", "teacher"):
        summary[way]["edit_speedup_total"] = round(summary[way]["ms_total"] / summary["edit"]["ms_total"], 2)
    report = {
        "benchmark": "open_window_cost",
        "updates": len(updates),
        "words_per_update": args.step,
        "torch_threads": 1,
        "summary": summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "open_window_cost.json").write_text(json.dumps(report, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    ways = list(summary)
    axis.bar(ways, [summary[w]["ms_median"] for w in ways], color=["tab:green", "tab:orange", "tab:blue"])
    axis.set_ylabel("ms per update (median, 1 thread)")
    axis.set_title("Open window: one update of its translation")
    figure.tight_layout()
    figure.savefig(args.out / "open_window_cost.png", dpi=110)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
