"""Which diffusion objective for the canvas translator: mask-predict against uniform-state renoising.

The decision the model cards cite, measured at equal training time: the same warm start from the
teacher, the same distillation pairs (a sample of a ``livecanvas train`` work directory's ``en-pt``
pairs), the same settings except :attr:`TrainSettings.noise`, trained side by side (one process per
objective, one torch thread each, started together so both see the same machine load). Every
``--eval-minutes`` the moving-average weights translate the dev split through the service's engine
(4 fixed steps, each objective decoded with its own noise: ``[MASK]`` slots, or random shortlist
pieces as DiffusionGemma's uniform-state renoising does), scored by chrF against the teacher.

Prints JSON and writes ``bench/results/objective.json`` and ``objective.png``.

    python -m bench.objective --work-dir train-work --minutes 6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
OBJECTIVES = ("mask", "uniform")


def train_one(work_dir: Path, noise: str, minutes: float, eval_minutes: float, pairs: int) -> dict[str, Any]:
    """One objective's run (in this process): its dev curve and training speed."""
    import torch

    from engine.diffusion.canvas import from_teacher
    from engine.diffusion.canvas_denoiser import CanvasDenoiser, Direction
    from engine.training import canvas_train, distill, evaluate
    from engine.training.recipe import DEV_EARLY_EXIT, DEV_SENTENCES, DEV_STEPS, Recipe, _teacher, splits

    torch.set_num_threads(1)
    parts = splits(Recipe(work_dir=work_dir, directions=("en-pt",)))
    known = distill.read_pairs(work_dir / "en-pt" / "teacher.jsonl")  # read only: never distils here
    if not all(str(r["id"]) in known for r in parts["dev"][:DEV_SENTENCES]):
        raise SystemExit(f"{work_dir}: the en-pt teacher outputs are not there yet (run `livecanvas train`)")
    train_pairs = [known[str(r["id"])] for r in parts["train"][:pairs] if str(r["id"]) in known]
    dev = [known[str(r["id"])] for r in parts["dev"][:DEV_SENTENCES]]
    teacher = _teacher("en-pt")
    model = from_teacher(teacher.model, teacher.multipliers)

    def dev_eval(current: Any) -> dict[str, float]:
        denoiser = CanvasDenoiser([Direction("en-pt", current, teacher.tokenizer, teacher.shortlist, noise)])
        result = evaluate.canvas_translate(
            denoiser, 0, [p.source for p in dev], diffusion=DEV_STEPS, early_exit=DEV_EARLY_EXIT
        )
        return {"final_chrf": evaluate.scores([r.final for r in result], [p.target for p in dev])["chrf"]}

    settings = replace(canvas_train.TrainSettings(), noise=noise, eval_minutes=eval_minutes)
    with tempfile.TemporaryDirectory() as scratch:
        state = canvas_train.train(
            model,
            canvas_train.make_examples(train_pairs),
            teacher.shortlist,
            settings,
            Path(scratch),
            minutes=minutes,
            evaluate=dev_eval,
            desc=f"train {noise}",
        )
    last = dev_eval(state["averaged"])
    curve = [*state["curve"], {"step": state["step"], "minutes": state["elapsed"] / 60, **last}]
    return {"noise": noise, "steps": state["step"], "minutes": state["elapsed"] / 60, "curve": curve}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for run in results["runs"]:
        points = run["curve"]
        axis.plot([p["minutes"] for p in points], [p["final_chrf"] for p in points], "o-", label=run["noise"])
    axis.set_xlabel("training minutes (1 thread)")
    axis.set_ylabel("dev chrF vs teacher (4 steps)")
    axis.set_title("Diffusion objective at equal training time (en->pt-BR)")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="a `livecanvas train` work directory")
    parser.add_argument("--minutes", type=float, default=6.0, help="training minutes per objective")
    parser.add_argument("--eval-minutes", type=float, default=2.0)
    parser.add_argument("--pairs", type=int, default=30000, help="training pairs sampled from the corpus")
    parser.add_argument("--one", choices=OBJECTIVES, help=argparse.SUPPRESS)  # a child process's objective
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.one:
        run = train_one(args.work_dir, args.one, args.minutes, args.eval_minutes, args.pairs)
        print(json.dumps(run))
        return
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.objective", "--one", noise, *sys.argv[1:]],
            stdout=subprocess.PIPE,
            text=True,
        )
        for noise in OBJECTIVES
    ]
    runs = []
    for child in children:
        output, _ = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"an objective's run failed (exit {child.returncode})")
        runs.append(json.loads(output.strip().splitlines()[-1]))
    results = {
        "direction": "en-pt",
        "minutes_per_objective": args.minutes,
        "pairs": args.pairs,
        "loadavg_after": os.getloadavg(),
        "runs": runs,
        "final_dev_chrf": {run["noise"]: run["curve"][-1]["final_chrf"] for run in runs},
    }
    print(json.dumps(results, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "objective.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "objective.png")


if __name__ == "__main__":
    main()
