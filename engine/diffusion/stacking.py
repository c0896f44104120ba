"""Right-padding per-window tensors into the batches one denoising step reads.

This module owns how the canvas denoiser stacks its windows: canvases and per-slot figures into
(B, T) rows, stability histories into (B, S, T), and cross-attention keys/values into (B, H, S, D/H)
with a source mask.
"""

from __future__ import annotations

import numpy as np
import torch

Context = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (B, H, S, D/H) cross-attention keys, values


def stack(rows: list[torch.Tensor], fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D tensors into (B, T) with ``fill``; the mask is True on real entries."""
    stacked = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=fill)
    lengths = torch.tensor([row.shape[0] for row in rows])
    return stacked, torch.arange(stacked.shape[1])[None, :] < lengths[:, None]


def stack_rows(rows: list[torch.Tensor], length: int) -> torch.Tensor:
    """(S, T_i) histories right-padded with -1 to (B, S, ``length``), as :func:`stack` pads canvases."""
    stacked = torch.full((len(rows), rows[0].shape[0], length), -1, dtype=rows[0].dtype)
    for index, row in enumerate(rows):
        stacked[index, :, : row.shape[1]] = row
    return stacked


def stack_context(contexts: list[Context], lengths: list[int]) -> tuple[Context, torch.Tensor]:
    """Every layer's cross-attention keys/values of several windows (each (1, H, S_i, D/H), ``S_i``
    = ``lengths[i]``), right-padded to the longest source; the source mask (B, S)."""
    longest = max(lengths)
    source_mask = torch.tensor(np.arange(longest)[None, :] < np.array(lengths)[:, None])  # (B, S)
    layers: Context = []
    for layer in range(len(contexts[0])):
        keys, values = [], []
        for context, length in zip(contexts, lengths, strict=True):
            key, value = context[layer]
            pad = (0, 0, 0, longest - length)
            keys.append(torch.nn.functional.pad(key, pad))
            values.append(torch.nn.functional.pad(value, pad))
        layers.append((torch.cat(keys), torch.cat(values)))
    return layers, source_mask
