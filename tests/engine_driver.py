"""A synchronous driver for tests: runs a Scheduler over a real Denoiser, with canvases joining late."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.batch_round import run_round
from engine.diffusion.denoiser import Denoiser, StepResult
from engine.scheduler import Scheduler
from engine.types import CanvasKey, CanvasRequest, Draft, Final


@dataclass
class Run:
    finals: dict[CanvasKey, Final] = field(default_factory=dict)
    drafts: dict[CanvasKey, list[Draft]] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    argmax_per_step: dict[CanvasKey, list[tuple[int, ...]]] = field(default_factory=dict)
    results_per_step: dict[CanvasKey, list[StepResult]] = field(default_factory=dict)


def drive(
    denoiser: Denoiser,
    joins: dict[int, Sequence[CanvasRequest]],
    *,
    max_batch: int = 64,
) -> Run:
    """Step until every canvas has its final; ``joins[k]`` are added before the k-th schedule()."""
    scheduler = Scheduler(
        canvas_length=denoiser.canvas_length,
        eos_token_ids=denoiser.eos_token_ids,
        decode=lambda tokens: " ".join(str(t) for t in tokens),
        max_batch=max_batch,
    )
    run = Run()
    keys: dict[int, CanvasKey] = {}
    tick = 0
    while tick <= max(joins, default=0) or not scheduler.idle:
        for request in joins.get(tick, ()):
            keys[scheduler.add(request)] = request.key
        done = run_round(scheduler, denoiser)
        batch, results, events = done.batch, done.results, done.events
        if batch.step:
            run.batch_sizes.append(len(batch.step))
        for seq_id, result in zip(batch.step, results, strict=True):
            run.argmax_per_step.setdefault(keys[seq_id], []).append(result.tokens)
            run.results_per_step.setdefault(keys[seq_id], []).append(result)
        for event in events:
            if isinstance(event, Final):
                assert event.key not in run.finals, "a final was emitted twice"
                run.finals[event.key] = event
            else:
                run.drafts.setdefault(event.key, []).append(event)
        tick += 1
    return run
