"""The canvas translator's settings and its Mask-Predict schedule, as pure functions of them.

This module owns the canvas translator's own decoding settings (:class:`CanvasSettings`, one per
direction, from its card), how many of a canvas's slots are masked again after each step (the
fill-then-refine schedule), and how a denoised canvas's text drops a piece that repeats its left
neighbour. Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CanvasSettings:
    """How one direction of the canvas translator fills a canvas (DiffusionGemma does not read these).

    The canvas is filled at step ``fill_steps`` (None: at the request's last step, Mask-Predict's
    linear schedule), not before: until then at least one slot stays masked, however confident the
    rest (:func:`fill_step`). Without a verifier, later steps then re-mask at most ``refine_share`` of it
    (None: all of it), falling linearly to none at the last step. A direction whose teacher verifies
    re-masks nothing after the fill (its filled canvas goes to the teacher), so a direction with a
    verifier refuses a ``refine_share`` (:class:`engine.diffusion.canvas_denoiser.Direction`).
    """

    fill_steps: int | None = None
    refine_share: float | None = None

    def __post_init__(self) -> None:
        if self.fill_steps is not None and self.fill_steps <= 0:
            raise ValueError(f"fill_steps must be positive, got {self.fill_steps}")
        if self.refine_share is not None and not 0 <= self.refine_share <= 1:
            raise ValueError(f"refine_share must be in [0, 1], got {self.refine_share}")


def fill_step(last: int, settings: CanvasSettings) -> int:
    """The step ``F`` at which a canvas of a ``last``-step budget is filled: ``fill_steps``, at most
    ``last``. Before it, at least one slot is masked again after every step (the least probable
    when the entropy bound accepts every slot), so a canvas is never filled early: its ``F``-th step
    is always a filling step, and a card's first draft at step ``F`` is always the filled canvas."""
    return last if settings.fill_steps is None else min(settings.fill_steps, last)


def remask_quota(length: int, step: int, last: int, settings: CanvasSettings, *, verify: bool) -> int:
    """How many of a canvas's ``length`` slots may be masked again after step ``step`` (1-based) of
    ``last``.

    Filling by step ``F`` (``settings.fill_steps``, at most ``N = last``): ``floor(T * (F - k) / F)``
    before it, so step ``F``'s canvas is what an ``F``-step decode would finish with; from step ``F``
    on, refinement re-masks at most ``floor(T * share * (N - k) / (N - F))``, none after the last step
    and none when the teacher verifies. ``F = N`` is the plain linear schedule ``floor(T * (N - k) / N)``."""
    fill = fill_step(last, settings)
    if step < fill:
        return math.floor(length * (fill - step) / fill)
    if step >= last or verify:
        return 0
    share = 1.0 if settings.refine_share is None else settings.refine_share
    return math.floor(length * share * (last - step) / (last - fill))


def without_repeats(canvas: list[int], eos: int) -> tuple[int, ...]:
    """A denoised canvas with each piece that repeats its left neighbour dropped (``</s>`` padding
    keeps its length)."""
    kept = [t for i, t in enumerate(canvas) if i == 0 or t != canvas[i - 1]]
    return (*kept, *[eos] * (len(canvas) - len(kept)))
