"""One scheduling round on a denoiser: the single round the engine worker, the benchmarks, the
evaluation and the tests all run.

A round is the scheduler's next :class:`~engine.scheduler.Batch` carried out in field order (release,
start, revise, extend, step) and folded back with ``update`` (which also emits the batch's due finals, even
when nothing was stepped). A canvas that fails to start or to take its next
block gets an error final and leaves the batch; a failed step gives every canvas in it an error final.
Either way the failure is logged and the round returns normally, so one bad window never stops the
others, and callers that want a failure to be fatal (offline evaluation) look at ``Final.error``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from engine.diffusion.denoiser import Denoiser, StepResult
from engine.scheduler import Batch, Scheduler
from engine.types import Draft, Final

logger = logging.getLogger("livecanvas.engine")


@dataclass(frozen=True, slots=True)
class Round:
    batch: Batch  # what was stepped (canvases that failed to start or extend left out)
    results: list[StepResult]  # one per stepped canvas (empty when the step failed)
    events: list[Draft | Final]  # drafts and finals, error finals included
    step_seconds: float  # the forward's wall time (0.0 when nothing was stepped)


def run_round(scheduler: Scheduler, denoiser: Denoiser) -> Round:
    """See the module docstring."""
    batch = scheduler.schedule()
    for seq_id in batch.release:
        denoiser.release(seq_id)
    failed: dict[int, str] = {}
    for seq_id, request in batch.start:
        try:
            denoiser.start(seq_id, request)
        except Exception as error:
            logger.exception("canvas %s failed to start", request.key)
            failed[seq_id] = f"engine could not start this window: {error}"
    for seq_id, request in batch.revise:
        try:
            denoiser.revise(seq_id, request)
        except Exception as error:
            logger.exception("canvas %s failed to take its newer source", request.key)
            failed[seq_id] = f"engine could not revise this window: {error}"
    for seq_id, block in batch.extend:
        try:
            denoiser.next_block(seq_id, block)
        except Exception as error:
            logger.exception("canvas %d failed to extend", seq_id)
            failed[seq_id] = f"engine could not continue this window: {error}"
    events: list[Draft | Final] = []
    for seq_id, reason in failed.items():
        events.extend(scheduler.fail([seq_id], reason))
    batch = batch.without(set(failed))
    if not batch.step:
        events.extend(scheduler.update(batch, []))
        return Round(batch, [], events, 0.0)
    started = time.perf_counter()
    try:
        results = denoiser.step(batch.step, batch.steps_remaining)
    except Exception as error:
        logger.exception("denoising step over %d canvases failed", len(batch.step))
        events.extend(scheduler.fail(batch.step, f"denoising step failed: {error}"))
        events.extend(scheduler.update(replace(batch, step=(), steps_remaining=()), []))
        return Round(batch, [], events, time.perf_counter() - started)
    seconds = time.perf_counter() - started
    events.extend(scheduler.update(batch, results))
    return Round(batch, results, events, seconds)
