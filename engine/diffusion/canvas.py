"""The canvas translator: the teacher's encoder plus a decoder that fills a whole canvas in parallel.

This module owns the model of the embedded translator v2 and its checkpoint file. It is an
encoder-decoder masked-diffusion model (Mask-Predict, Ghazvininejad et al. 2019, arXiv:1904.09324)
warm-started from a Bergamot tiny student (:mod:`engine.marian.teacher`):

* the encoder, embeddings and output layer are the teacher's, unchanged (frozen in training, so the
  source is read exactly as the teacher reads it, once per window);
* each decoder layer is bidirectional self-attention over the canvas (started as a copy of the
  encoder's last self-attention, with the teacher's SSRU layer norm), then the teacher's
  cross-attention and feed-forward block;
* a canvas slot holds a target piece or ``[MASK]``, a learned vector started at zero, so a masked slot
  first looks like the teacher's step-0 input (a zero embedding plus its position);
* the canvas is the translation followed by ``</s>`` padding up to a length fixed by the source.

Checkpoint: one safetensors file. The frozen matrices are stored as the teacher's own int8 values with
their quantisation multipliers (exact), everything else as float32.

Shapes: ``B`` canvases, ``T`` canvas slots, ``S`` source positions, ``D`` model dimension, ``C``
output candidates.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from engine.marian.layers import (
    Attention,
    EncoderLayer,
    FeedForward,
    MarianDims,
    TiedEncoderModel,
    embed_vectors,
    members,
    output_logits,
)
from engine.marian.teacher import MarianTeacher, TeacherDecoderLayer

MASK_ID = -1  # a canvas slot still to be filled (not a vocabulary id)
MAX_CANVAS = 128  # training canvases hold up to 64 slots; longer windows extrapolate
MULTIPLIER_SUFFIX = ".int8_multiplier"


def canvas_length_for(source_pieces: int, *, maximum: int = 64) -> int:
    """Canvas slots for a source of ``source_pieces`` pieces (its ``</s>`` excluded): room for a
    translation 30% longer than the source plus ``</s>``, within ``maximum``."""
    return min(math.ceil(1.3 * source_pieces) + 4, maximum)


def wanted_rows(x: torch.Tensor, wanted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The states (B, T, D) of the ``wanted`` (B, T) slots, each row's in slot order, right-padded:
    ``(picked (B, W, D), real (B, W))``, ``real`` marking them (W: the most wanted in a row)."""
    counts = wanted.sum(dim=1)  # (B,)
    width = int(counts.max()) if counts.numel() else 0
    order = torch.argsort((~wanted).to(torch.int8), dim=1, stable=True)[:, :width]  # (B, W)
    real = torch.arange(width, device=wanted.device)[None, :] < counts[:, None]  # (B, W)
    return x.gather(1, order[..., None].expand(-1, -1, x.shape[-1])), real


class CanvasDecoderLayer(nn.Module):
    def __init__(self, dims: MarianDims) -> None:
        super().__init__()
        self.self_attention = Attention(dims)
        self.context = Attention(dims)
        self.ffn = FeedForward(dims)

    def forward(
        self,
        x: torch.Tensor,
        canvas_mask: torch.Tensor,
        context_keys_values: tuple[torch.Tensor, torch.Tensor],
        source_key_mask: torch.Tensor,
        queries: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``canvas_mask`` (B, T) is True on real slots: the feed-forward block, most of a layer's
        cost, runs on those alone (padding slots keep their input; nothing reads them).

        ``queries``: ``(states (B, W, D), real (B, W))``, some slots' states taken from ``x``: the
        layer then computes those slots' outputs only (every slot still serves as key and value)."""
        attended, real = (x, canvas_mask) if queries is None else queries
        y = self.self_attention(attended, self.self_attention.keys_values(x), canvas_mask[:, None, None, :])
        y = self.context(y, context_keys_values, source_key_mask)
        out: torch.Tensor = y.masked_scatter(real[..., None], self.ffn(y[real]))
        return out


class CanvasTranslator(TiedEncoderModel):
    """See the module docstring."""

    def __init__(self, dims: MarianDims) -> None:
        super().__init__(dims)
        self.mask_embedding = nn.Parameter(torch.zeros(dims.dim))
        self.layers = nn.ModuleList(CanvasDecoderLayer(dims) for _ in range(dims.decoder_depth))
        self.int8_multipliers: dict[str, float] = {}  # frozen matrices stored as int8 (see save())

    def frozen_parameters(self) -> list[nn.Parameter]:
        """The teacher's parts that training leaves as they are: embeddings (hence the output layer's
        matrix) and the encoder."""
        return [self.embedding.weight, *self.encoder.layers.parameters()]  # type: ignore[list-item]

    def context_keys_values(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's cross-attention keys and values for encoder states (B, S, D): computed once
        per window and reused at every denoising step."""
        return [layer.context.keys_values(memory) for layer in self.decoder_layers]

    @property
    def decoder_layers(self) -> list[CanvasDecoderLayer]:
        return members(self.layers, CanvasDecoderLayer)

    def hidden_states(
        self,
        canvas: torch.Tensor,
        canvas_mask: torch.Tensor,
        context: list[tuple[torch.Tensor, torch.Tensor]],
        source_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Decoder states (B, T, D) of canvases (B, T) (``MASK_ID`` where unfilled); ``canvas_mask``
        (B, T) and ``source_mask`` (B, S) are True on real slots and pieces."""
        x, source_key_mask = self._below_last(canvas, context, source_mask, canvas_mask)
        last: CanvasDecoderLayer = self.decoder_layers[-1]
        out: torch.Tensor = last(x, canvas_mask, context[-1], source_key_mask)
        return out

    def wanted_states(
        self,
        canvas: torch.Tensor,
        canvas_mask: torch.Tensor,
        context: list[tuple[torch.Tensor, torch.Tensor]],
        source_mask: torch.Tensor,
        wanted: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder states of the ``wanted`` (B, T) slots only, the same as
        ``hidden_states(...)[wanted]`` at less cost: the last layer, whose outputs only the logits
        read, runs for those slots alone. Returns ``(states (B, W, D), real (B, W))``: row ``b``
        holds its wanted slots in slot order, ``real`` marks them (W: the most wanted in a row)."""
        x, source_key_mask = self._below_last(canvas, context, source_mask, canvas_mask)
        picked, real = wanted_rows(x, wanted)
        last: CanvasDecoderLayer = self.decoder_layers[-1]
        out: torch.Tensor = last(x, canvas_mask, context[-1], source_key_mask, queries=(picked, real))
        return out, real

    def _below_last(
        self,
        canvas: torch.Tensor,
        context: list[tuple[torch.Tensor, torch.Tensor]],
        source_mask: torch.Tensor,
        canvas_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The canvas embedded and through every decoder layer but the last; the source key mask."""
        masked = canvas == MASK_ID
        pieces = self.embedding(canvas.clamp(min=0))  # (B, T, D)
        tokens = torch.where(masked[..., None], self.mask_embedding.to(pieces.dtype), pieces)
        x = embed_vectors(tokens, torch.arange(tokens.shape[1], device=tokens.device))
        source_key_mask = source_mask[:, None, None, :]  # (B, 1, 1, S)
        for layer, keys_values in zip(self.decoder_layers[:-1], context[:-1], strict=True):
            x = layer(x, canvas_mask, keys_values, source_key_mask)
        return x, source_key_mask

    @property
    def output_weight(self) -> torch.Tensor:
        """The output layer's matrix (V, D): the embeddings (tied)."""
        return self.embedding.weight

    def logits(self, hidden: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        """(..., D) -> (..., C) over ``candidates`` (C,), or over the whole vocabulary."""
        return output_logits(hidden, self.embedding, self.output_bias, candidates)

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the weights as safetensors: frozen int8 matrices exactly, the rest float32."""
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        for name, tensor in self.state_dict().items():
            if name.startswith("encoder.embedding."):
                continue  # the same tensor as ``embedding.weight``
            multiplier = self.int8_multipliers.get(name)
            if multiplier is None:
                tensors[name] = tensor.detach().float().contiguous()
                continue
            values = torch.round(tensor.detach().float() * multiplier)
            if not torch.equal(values / multiplier, tensor.float()) or values.abs().max() > 127:
                raise ValueError(f"{name} no longer holds the teacher's int8 values: it was trained")
            tensors[name] = values.to(torch.int8).contiguous()
            tensors[name + MULTIPLIER_SUFFIX] = torch.tensor([multiplier], dtype=torch.float32)
        save_file(tensors, str(path), metadata={"dims": json.dumps(asdict(self.dims))})

    @classmethod
    def load(cls, path: Path) -> CanvasTranslator:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        model = cls(MarianDims(**json.loads(metadata["dims"])))
        state: dict[str, torch.Tensor] = {}
        for name, tensor in tensors.items():
            if name.endswith(MULTIPLIER_SUFFIX):
                continue
            multiplier = tensors.get(name + MULTIPLIER_SUFFIX)
            if multiplier is not None:
                model.int8_multipliers[name] = float(multiplier[0])
                tensor = tensor.float() / multiplier[0]
            state[name] = tensor
        state["encoder.embedding.weight"] = state["embedding.weight"]
        model.load_state_dict(state)
        return model.eval()


def from_teacher(teacher: MarianTeacher, multipliers: dict[str, float]) -> CanvasTranslator:
    """A canvas translator started from a (ported) teacher; ``multipliers`` are the int8 multipliers
    of the teacher's ``Wemb`` and encoder matrices, by this model's parameter names. The teacher is
    copied, never shared, so training cannot change it."""
    model = CanvasTranslator(teacher.dims)
    with torch.no_grad():
        model.embedding.weight.copy_(teacher.embedding.weight)
        model.output_bias.copy_(teacher.output_bias)
        model.encoder.layers.load_state_dict(teacher.encoder.layers.state_dict())
        last_self_attention = members(teacher.encoder.layers, EncoderLayer)[-1].attention
        teacher_layers = members(teacher.decoder, TeacherDecoderLayer)
        for layer, teacher_layer in zip(model.decoder_layers, teacher_layers, strict=True):
            layer.self_attention.load_state_dict(copy.deepcopy(last_self_attention.state_dict()))
            layer.self_attention.norm.load_state_dict(teacher_layer.ssru.norm.state_dict())
            layer.context.load_state_dict(teacher_layer.context.state_dict())
            layer.ffn.load_state_dict(teacher_layer.ffn.state_dict())
    model.int8_multipliers = dict(multipliers)
    return model
