"""The Bergamot "tiny" transformer's layers in PyTorch, as Marian computes them.

This module owns the building blocks that both the teacher port (:mod:`engine.marian.teacher`) and
the diffusion translator (:mod:`engine.diffusion.canvas`) are made of, with Marian's exact arithmetic:
post-norm residual blocks (``x = LN(x + sublayer(x))``, ``transformer-postprocess: dan``), layer norm
with epsilon 1e-9, attention with the query scaled by ``1/sqrt(head_dim)``, ReLU feed-forward,
embeddings scaled by ``sqrt(dim)`` plus sinusoidal positions laid out as ``[sin | cos]`` halves
(Vaswani et al. 2017, section 3.5, in Marian's ``addPositionalEmbeddings`` layout).

Shapes: ``B`` sentences, ``S`` source positions, ``T`` target positions, ``D`` model dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar, cast

import torch
from torch import nn

LAYER_NORM_EPS = 1e-9  # Marian's layerNorm default
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def members(modules: nn.ModuleList, kind: type[ModuleT]) -> list[ModuleT]:
    """The modules of a ``ModuleList`` with their type (each checked)."""
    found = list(modules)
    if not all(isinstance(m, kind) for m in found):
        raise TypeError(f"not every module is a {kind.__name__}")
    return cast(list[ModuleT], found)


@dataclass(frozen=True, slots=True)
class MarianDims:
    """The sizes of a Bergamot tiny student (``model.yml``)."""

    vocab: int = 32000
    dim: int = 256
    heads: int = 8
    ffn: int = 1536
    encoder_depth: int = 6
    decoder_depth: int = 2

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


def sinusoidal_positions(
    length: int, dim: int, *, start: int = 0, device: torch.device | None = None
) -> torch.Tensor:
    """Marian's positional embeddings (T, D) of positions ``start..start + length - 1``."""
    return positions_at(torch.arange(start, start + length, device=device), dim)


def positions_at(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Marian's positional embeddings of integer ``positions`` (...,) -> (..., D): ``sin`` in the
    first half, ``cos`` in the second, the frequency of channel ``i`` being
    ``exp(-i * ln(10000) / (D/2 - 1))``. A position's embedding does not depend on the others asked
    for with it (the same angles, element by element)."""
    half = dim // 2
    increment = math.log(10000.0) / (half - 1)
    device = positions.device
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32, device=device) * -increment)  # (D/2,)
    angles = positions.to(torch.float32)[..., None] * frequencies  # (..., D/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # (..., D)


def embed_vectors(vectors: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The one embedding rule of the teacher, the canvas translator and the verifier: vectors (B, T, D)
    scaled by ``sqrt(D)`` plus the positional embeddings of ``positions`` ((T,) or (B, T))."""
    dim = vectors.shape[-1]
    return vectors * math.sqrt(dim) + positions_at(positions, dim).to(vectors.dtype)


class Attention(nn.Module):
    """Multi-head attention with its post-norm: ``LN(x + Wo(softmax(q k^T / sqrt(d)) v))``."""

    def __init__(self, dims: MarianDims) -> None:
        super().__init__()
        self.heads = dims.heads
        self.q = nn.Linear(dims.dim, dims.dim)
        self.k = nn.Linear(dims.dim, dims.dim)
        self.v = nn.Linear(dims.dim, dims.dim)
        self.o = nn.Linear(dims.dim, dims.dim)
        self.norm = nn.LayerNorm(dims.dim, eps=LAYER_NORM_EPS)

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head keys and values of ``memory`` (B, S, D) -> 2 x (B, H, S, D/H), computed once per
        source when the memory is an encoder output."""
        return self._split(self.k(memory)), self._split(self.v(memory))

    def forward(
        self,
        x: torch.Tensor,
        keys_values: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """``x`` (B, T, D) attends to precomputed ``keys_values``; ``key_mask`` (B, 1, 1, S) is True
        where a key may be seen (None: all)."""
        query = self._split(self.q(x))  # (B, H, T, D/H)
        keys, values = keys_values
        context = nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=key_mask)
        merged = context.transpose(1, 2).reshape(x.shape)  # (B, T, D)
        out: torch.Tensor = self.norm(x + self.o(merged))
        return out

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)


class FeedForward(nn.Module):
    """``LN(x + W2 relu(W1 x))``."""

    def __init__(self, dims: MarianDims) -> None:
        super().__init__()
        self.w1 = nn.Linear(dims.dim, dims.ffn)
        self.w2 = nn.Linear(dims.ffn, dims.dim)
        self.norm = nn.LayerNorm(dims.dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.norm(x + self.w2(torch.relu(self.w1(x))))
        return out


class EncoderLayer(nn.Module):
    def __init__(self, dims: MarianDims) -> None:
        super().__init__()
        self.attention = Attention(dims)
        self.ffn = FeedForward(dims)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        out: torch.Tensor = self.ffn(self.attention(x, self.attention.keys_values(x), key_mask))
        return out


class Encoder(nn.Module):
    """The teacher's 6-layer encoder over source pieces (``</s>``-terminated, no BOS)."""

    def __init__(self, dims: MarianDims, embedding: nn.Embedding) -> None:
        super().__init__()
        self.dims = dims
        self.embedding = embedding  # shared with the decoder and the output layer
        self.layers = nn.ModuleList(EncoderLayer(dims) for _ in range(dims.encoder_depth))

    def forward(self, source: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        """``source`` (B, S) ids, ``source_mask`` (B, S) True on real pieces -> states (B, S, D)."""
        x = embed(self.embedding, source, start=0)
        key_mask = source_mask[:, None, None, :]  # (B, 1, 1, S)
        for layer in members(self.layers, EncoderLayer):
            x = layer(x, key_mask)
        return x


class TiedEncoderModel(nn.Module):
    """What the teacher and the canvas translator share: embeddings tied to the output layer (plus
    its bias) and the encoder that reads them."""

    def __init__(self, dims: MarianDims) -> None:
        super().__init__()
        self.dims = dims
        self.embedding = nn.Embedding(dims.vocab, dims.dim)
        self.output_bias = nn.Parameter(torch.zeros(dims.vocab))
        self.encoder = Encoder(dims, self.embedding)


def embed(embedding: nn.Embedding, ids: torch.Tensor, *, start: int) -> torch.Tensor:
    """Scaled embeddings plus positions ``start..``: (B, T) -> (B, T, D) (:func:`embed_vectors`)."""
    positions = torch.arange(start, start + ids.shape[1], device=ids.device)
    return embed_vectors(embedding(ids), positions)


def output_logits(
    hidden: torch.Tensor, embedding: nn.Embedding, bias: torch.Tensor, candidates: torch.Tensor | None
) -> torch.Tensor:
    """Tied output layer: ``hidden @ Wemb^T + b`` over every id, or over ``candidates`` (C,) only."""
    if candidates is None:
        return nn.functional.linear(hidden, embedding.weight, bias)
    return nn.functional.linear(hidden, embedding.weight[candidates], bias[candidates])
