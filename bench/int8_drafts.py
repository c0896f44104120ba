"""The int8 drafter's first drafts against the windows they share forwards with.

The drafter's dynamic int8 layers scale their input per forward, over every canvas in it, so a
window's first draft depends on which windows it is batched with (finals do not: the teacher verifies
them in float32). This runs the shipped cards as served (int8 drafter, teacher-verified) over the
cards' human set (Django's strings, 208 per direction) in three kinds of batch:

* ``served``: every window queued at once, at most 64 stepping, a window joining as another leaves
  (``bench.quality``'s "verified, int8 drafter" row): the batches depend on when windows end;
* ``alone``: each window alone (a batch of one);
* ``N``: fixed batches of ``N`` consecutive windows started together, nothing else queued. Every
  first draft goes out at the fill step, before any window of its batch can end, so the forwards a
  draft depends on hold the same windows whatever the scheduler does after a draft (checked).

Rows ``alone`` and ``N`` isolate the decoding from the batch composition: two versions of the engine
that decode alike give the same draft texts there. Writes ``bench/results/int8_drafts.json`` (the
draft texts included, to compare two trees text by text).

    python -m bench.int8_drafts
    python -m bench.int8_drafts --batches 4 16 64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from bench.throughput import LANGUAGES
from engine.diffusion.canvas_denoiser import CanvasDenoiser
from engine.runtime import load_model
from engine.training.canvas_export import Decoding
from engine.training.corpus import human_pairs
from engine.training.evaluate import Translation, canvas_translate, scores
from engine.translator import CanvasModel, load_canvas_model
from engine.types import EarlyExitParams

RESULTS = Path(__file__).resolve().parent / "results"
SERVED_BATCH = 64  # canvas_translate's max_batch, as bench.quality runs its rows


def drafts(
    denoiser: CanvasDenoiser,
    sources: list[str],
    decoding: Decoding,
    early: EarlyExitParams,
    size: int | None,
) -> list[Translation]:
    """``sources`` translated all queued at once (``size`` None, as served) or in fixed batches of
    ``size`` consecutive windows, each batch started together with nothing else queued."""
    if size is None:
        return canvas_translate(
            denoiser, 0, sources, diffusion=decoding.diffusion, early_exit=early, max_batch=SERVED_BATCH
        )
    return [
        t
        for i in range(0, len(sources), size)
        for t in canvas_translate(
            denoiser, 0, sources[i : i + size], diffusion=decoding.diffusion, early_exit=early, max_batch=size
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", nargs="*", type=int, default=[4, 16, 64], metavar="N")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8_drafts.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(None, int8=False)  # the cards, to read each direction's decoding
    if not isinstance(model, CanvasModel):
        raise SystemExit("bench.int8_drafts measures the embedded canvas translator")
    quantized = load_canvas_model(model.resolved, int8=True)
    pairs = human_pairs()
    sets = {
        "en-pt": ([p.text for p in pairs], [p.reference for p in pairs]),
        "pt-en": ([p.reference for p in pairs], [p.text for p in pairs]),
    }
    summary: dict[str, Any] = {"model": model.card.name, "threads": args.threads}
    for direction, (sources, references) in sets.items():
        source, target = LANGUAGES[direction]
        card = model.directions[model.route(source, target)]
        shipped = Decoding(card.diffusion, card.settings, verify=True)
        denoiser = shipped.denoiser(quantized.denoiser.directions[quantized.route(source, target)])
        rows: dict[str, Any] = {}
        kinds: list[tuple[str, int | None]] = [("served", None), ("alone", 1)]
        kinds += [(str(n), n) for n in args.batches]
        for name, size in kinds:
            result = drafts(denoiser, sources, shipped, card.early_exit, size)
            if size is not None:
                late = [t for t in result if t.draft_steps != card.early_exit.draft_step]
                if late:
                    raise SystemExit(f"{direction} {name}: {len(late)} drafts not at the fill step")
            rows[name] = {
                "draft": scores([t.draft for t in result], references),
                "final": scores([t.final for t in result], references),
                "mean_steps": round(sum(t.steps for t in result) / len(result), 2),
                "drafts": [t.draft for t in result],
            }
            shown = {k: v for k, v in rows[name].items() if k != "drafts"}
            print(direction, name, json.dumps(shown), flush=True)
        summary[direction] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
