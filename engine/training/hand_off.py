"""The trained weights of the canvas translator and the *hand-off*: what a training run leaves for
evaluation and export.

This module owns which parameters train (everything but the teacher's frozen encoder and embeddings),
the copy of a model that carries their moving average, and the hand-off files beside each checkpoint:
``averaged.safetensors`` (the averaged trained weights alone) and ``state.json`` (steps, minutes, dev
curve, where it trained and the runs it continued), which is all that evaluation and export need.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from engine.diffusion.marian_canvas import Drafter


def trainable(model: Drafter) -> list[tuple[str, torch.nn.Parameter]]:
    frozen = {id(p) for p in model.frozen_parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) not in frozen]


def averaged(model: Drafter, ema: dict[str, torch.Tensor]) -> Drafter:
    """A copy of ``model`` on the CPU carrying the moving-average weights."""
    import copy

    copied = copy.deepcopy(model).cpu()
    with torch.no_grad():
        for name, parameter in copied.named_parameters():
            if name in ema:
                parameter.copy_(ema[name])
    return copied.eval()


HAND_OFF_WEIGHTS = "averaged.safetensors"
HAND_OFF_STATE = "state.json"


def save_hand_off(work_dir: Path, ema: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """The averaged trained weights and the run's state, beside the checkpoint (module docstring)."""
    from safetensors.torch import save_file

    weights = {name: tensor.detach().float().cpu().contiguous() for name, tensor in ema.items()}
    partial = work_dir / (HAND_OFF_WEIGHTS + ".partial")
    save_file(weights, str(partial))
    partial.replace(work_dir / HAND_OFF_WEIGHTS)
    summary: dict[str, Any] = {
        k: state[k] for k in ("step", "elapsed", "planned", "curve", "earlier", "hardware") if k in state
    }
    summary["restarted_at"] = state.get("restarted_at", 0)
    summary["device"] = state.get("device", "cpu")
    (work_dir / HAND_OFF_STATE).write_text(json.dumps(summary, indent=1))


def load_hand_off(model: Drafter, work_dir: Path) -> dict[str, Any] | None:
    """The final state of a run that left only its hand-off in ``work_dir`` (None if there is none):
    ``model`` (started from the teacher) with the averaged weights, as :func:`train` returns it."""
    handed = read_hand_off(model, work_dir)
    if handed is None:
        return None
    weights, state = handed
    state["averaged"] = averaged(model, weights)
    return state


def read_hand_off(model: Drafter, work_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    from safetensors.torch import load_file

    weights, summary = work_dir / HAND_OFF_WEIGHTS, work_dir / HAND_OFF_STATE
    if not (weights.is_file() and summary.is_file()):
        return None
    loaded = load_file(str(weights))
    if set(loaded) != {name for name, _ in trainable(model)}:
        raise ValueError(f"{weights} does not hold this model's trained weights")
    state: dict[str, Any] = json.loads(summary.read_text())
    return loaded, state
