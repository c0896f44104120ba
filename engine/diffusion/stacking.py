"""Right-padding per-window tensors into the batches one denoising step reads.

This module owns how the canvas denoiser stacks its windows: canvases and per-slot figures into
(B, T) rows, and cross-attention keys/values into (B, H, S, D/H)
with a source mask, and output layers restricted to each window's shortlist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

Context = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (B, H, S, D/H) cross-attention keys, values


def stack(rows: list[torch.Tensor], fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D tensors into (B, T) with ``fill``; the mask is True on real entries."""
    stacked = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=fill)
    lengths = torch.tensor([row.shape[0] for row in rows])
    return stacked, torch.arange(stacked.shape[1])[None, :] < lengths[:, None]


def row_of(context: Context, row: int, length: int) -> Context:
    """One window's (1, H, S, D/H) keys/values out of a batch's, without the source padding."""
    return [(keys[row : row + 1, :, :length], values[row : row + 1, :, :length]) for keys, values in context]


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


@dataclass(frozen=True)
class Outputs:
    """The output layers of a batch of windows: per row its shortlist ``candidates`` (B, C) with their
    ``weight`` rows (B, C, D) and ``bias`` (B, C), right-padded (a padding candidate's bias is -inf:
    never chosen); or, without shortlists, one shared ``weight`` (V, D) and ``bias`` (V,)."""

    candidates: torch.Tensor | None
    weight: torch.Tensor
    bias: torch.Tensor

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, W, D) -> (B, W, C): each row over its own candidates."""
        if self.candidates is None:
            return torch.nn.functional.linear(hidden, self.weight, self.bias)
        return torch.baddbmm(self.bias[:, None, :], hidden, self.weight.transpose(1, 2))

    def pieces(self, chosen: torch.Tensor) -> torch.Tensor:
        """Column indices (B, W) of :meth:`logits` -> piece ids."""
        return chosen if self.candidates is None else self.candidates.gather(1, chosen)


def stack_outputs(candidates: list[torch.Tensor | None], weight: torch.Tensor, bias: torch.Tensor) -> Outputs:
    """The output layer ``weight`` (V, D), ``bias`` (V,) restricted to each window's ``candidates``
    ((C_i,) piece ids; None: no shortlist, every row reads the whole layer), gathered in one go."""
    if candidates[0] is None:
        return Outputs(None, weight, bias)
    padded, real = stack([c for c in candidates if c is not None], 0)  # (B, C)
    return Outputs(padded, weight[padded], bias[padded].masked_fill(~real, -math.inf))


@dataclass(frozen=True)
class Batch:
    """What a group of windows stepping together reads, stacked: their context and output layers,
    keyed by the windows' serials (``members``, in row order)."""

    members: tuple[int, ...]
    context: Context
    source_mask: torch.Tensor
    outputs: Outputs


def stack_batch(
    members: tuple[int, ...],
    contexts: list[Context],
    lengths: list[int],
    outputs: tuple[list[torch.Tensor | None], torch.Tensor, torch.Tensor],
) -> Batch:
    """:class:`Batch` of ``contexts`` (sources ``lengths`` long) and ``outputs`` (:func:`stack_outputs`)."""
    return Batch(members, *stack_context(contexts, lengths), stack_outputs(*outputs))
