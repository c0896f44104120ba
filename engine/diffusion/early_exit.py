"""The early-exit policy: when a canvas still being denoised shows a draft.

A live caption wants something on screen at once and the refined text soon after. The model keeps
denoising until its own adaptive stop (or the step budget); this policy only decides when an
intermediate argmax canvas is worth sending as a draft. Pure functions of the step's numbers.
"""

from __future__ import annotations

from engine.types import EarlyExitParams


def draft_due(
    params: EarlyExitParams,
    *,
    block_step: int,
    mean_entropy: float,
    last_draft_step: int | None,
    changed: bool,
) -> bool:
    """Whether to emit a draft after step ``block_step`` (1-based) of the current block.

    The first draft of a block goes out after ``draft_step`` steps, or earlier as soon as the mean token
    entropy is below ``draft_confidence`` (when set). Later drafts of the same block go out every
    ``redraft_every`` steps, and only when the text changed since the last one.
    """
    if last_draft_step is None:
        confident = params.draft_confidence is not None and mean_entropy < params.draft_confidence
        return block_step >= params.draft_step or confident
    if params.redraft_every == 0 or not changed:
        return False
    return block_step - last_draft_step >= params.redraft_every
