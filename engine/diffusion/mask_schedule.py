"""The canvas translator's Mask-Predict schedule, as pure functions of a window's request.

This module owns how many of a canvas's slots are masked again after each step (the fill-then-refine
schedule), until when a window may not finish (it has not shown its draft), and how a denoised canvas's
text drops a piece that repeats its left neighbour.
"""

from __future__ import annotations

import math

from engine.types import CanvasRequest, DiffusionParams


def remask_quota(length: int, step: int, params: DiffusionParams) -> int:
    """How many of a canvas's ``length`` slots may be masked again after step ``step`` (1-based).

    Filling by step ``F`` (``params.fill_steps``, at most ``N`` steps): ``floor(T * (F - k) / F)``
    before it, so step ``F``'s canvas is what an ``F``-step decode would finish with (the window's
    draft when its first draft goes out at ``F``); from step ``F`` on, refinement re-masks at most
    ``floor(T * share * (N - k) / (N - F))``, none after the last step. ``F = N`` is the plain linear
    schedule ``floor(T * (N - k) / N)``."""
    last = params.max_denoising_steps
    fill = last if params.fill_steps is None else min(params.fill_steps, last)
    if step < fill:
        return math.floor(length * (fill - step) / fill)
    if step >= last or params.verify:
        return 0
    return math.floor(length * params.refine_share * (last - step) / (last - fill))


def draft_pending(step: int, request: CanvasRequest) -> bool:
    """Whether a window must not finish denoising at ``step``: it has not shown its draft yet."""
    draft = request.early_exit.draft_step
    return step < draft if request.diffusion.verify else step <= draft


def without_repeats(canvas: list[int], eos: int) -> tuple[int, ...]:
    """A denoised canvas with each piece that repeats its left neighbour dropped (``</s>`` padding
    keeps its length)."""
    kept = [t for i, t in enumerate(canvas) if i == 0 or t != canvas[i - 1]]
    return (*kept, *[eos] * (len(canvas) - len(kept)))
