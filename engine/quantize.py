"""Dynamic int8 quantisation, the one way both translator backends (DiffusionGemma and the canvas
translator) are served with ``--int8`` (and the canvas translator's drafter by default when its card
verifies: :func:`engine.translator.load_canvas_model`)."""

from __future__ import annotations

from typing import Any


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of every ``nn.Linear`` (the LM head and the attention and dense MLP
    projections; the MoE experts' grouped weights stay float). Weights are quantised once, activations
    per forward. About a quarter off a batched step on a 2-core CPU (bench/README.md)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        # torch.ao's eager quantisation is deprecated in favour of torchao, which this build lacks
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings(
            "ignore", message=".*quantized tensor creation functions", category=UserWarning
        )
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
