"""Evaluating a translator: translate through the service's own engine, score with sacrebleu.

Sentences go through the same scheduler and batched denoiser as the live service, so the *draft* is
the early-exit result a viewer sees first and the *final* is what the decoding rules settle on.
chrF and BLEU come from sacrebleu.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.batch_round import run_round
from engine.errors import EngineError
from engine.scheduler import Scheduler
from engine.types import CanvasKey, CanvasRequest, DiffusionParams, Draft, EarlyExitParams, Final


@dataclass(frozen=True, slots=True)
class Translation:
    draft: str
    final: str
    steps: int
    draft_steps: int


def run_requests(scheduler: Scheduler, denoiser: Any, count: int) -> list[Translation]:
    """Run the queued canvases (keyed by window ``0..count-1``) to their finals; the first draft and
    the final of each."""
    import torch

    drafts: dict[int, Draft] = {}
    finals: dict[int, Final] = {}
    with torch.inference_mode():
        while not scheduler.idle:
            for event in run_round(scheduler, denoiser).events:
                if isinstance(event, Final):
                    if event.error is not None:
                        raise EngineError(f"window {event.key.window}: {event.error}")
                    finals[event.key.window] = event
                else:
                    drafts.setdefault(event.key.window, event)
    out = []
    for index in range(count):
        final = finals[index]
        draft = drafts.get(index)
        out.append(
            Translation(
                draft=draft.text if draft else final.text,
                final=final.text,
                steps=final.steps,
                draft_steps=draft.steps if draft else final.steps,
            )
        )
    return out


def canvas_translate(
    denoiser: Any,
    direction: int,
    sources: Sequence[str],
    *,
    diffusion: DiffusionParams,
    early_exit: EarlyExitParams,
    max_batch: int = 64,
) -> list[Translation]:
    """Translate through a canvas denoiser (:mod:`engine.diffusion.canvas_denoiser`) and the scheduler."""
    scheduler = Scheduler(
        canvas_length=denoiser.canvas_length,
        eos_token_ids=denoiser.eos_token_ids,
        decode=denoiser.decode,
        max_batch=max_batch,
    )
    name = denoiser.directions[direction].name
    for index, source in enumerate(sources):
        prompt = denoiser.encode_source(direction, source)
        scheduler.add(
            CanvasRequest(
                key=CanvasKey("eval", name, index),
                prompt_ids=prompt,
                max_new_tokens=denoiser.canvas_budget(prompt),
                seed=index,
                diffusion=diffusion,
                early_exit=early_exit,
            )
        )
    return run_requests(scheduler, denoiser, len(sources))


def scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    import sacrebleu

    return {
        "chrf": round(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score, 2),
        "bleu": round(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score, 2),
    }
