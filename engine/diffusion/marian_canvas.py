"""A canvas drafter and its verifier for a user's Hugging Face ``MarianMTModel`` (any opus-mt pair).

This module owns the diffusion path of a translator a user brings: the drafter that
``livecanvas train --teacher DIR`` distils (:mod:`engine.training.teacher_recipe`), its checkpoint
file, the teacher as the verifier of its canvases, and the checkpoint's tokenizer as the canvas
denoiser reads one. The three plug into :class:`engine.diffusion.canvas_denoiser.CanvasDenoiser`
exactly where the Bergamot-based parts do, so drafts and finals follow the same rules.

The drafter (:class:`MarianCanvasDrafter`) mirrors :class:`engine.diffusion.canvas.CanvasTranslator`
on a self-attention decoder:

* the teacher's encoder, embeddings, positions, output layer and output bias, unchanged and frozen
  (shared with the teacher, not copied: one set of weights in memory);
* a copy of each of the teacher's decoder layers (self-attention, cross-attention, feed-forward block,
  post-norm), run without the causal mask: every canvas slot reads every other;
* ``[MASK]`` is a learned vector started at zero, in place of a piece's scaled embedding.

The output layer covers the whole vocabulary (opus-mt has no lexical shortlist); tokens the
checkpoint's generation config bans (``<pad>``) get a bias of -inf, for the drafter and the teacher.

The verifier (:class:`MarianVerifier`) reads a filled canvas teacher-forced, causally, from its first
slot: slot ``i`` predicts from the start token and slots ``0..i-1``, so a canvas the teacher accepts up
to ``</s>`` is its greedy translation. Each round settles at least one slot, with the same accept and
correct rule as the Bergamot teacher's verifier (:meth:`TeacherVerifier.judge
<engine.diffusion.verifier.TeacherVerifier.judge>`). A self-attention decoder keeps no small state
between rounds here: each round reads the canvas from its first slot up to the slots it checks.

Checkpoint (:data:`DRAFTER_WEIGHTS`): the trained parts only (decoder layers and ``[MASK]``), float32
safetensors; the frozen parts load from the teacher beside it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeAlias

import torch
from torch import nn

from engine.diffusion.canvas import MASK_ID, MAX_CANVAS, CanvasTranslator, wanted_rows
from engine.diffusion.stacking import Context, Outputs
from engine.diffusion.verifier import FIRST_READ, Reading, TeacherVerifier, Verdict, grown, spans_to_read
from engine.errors import ModelResolutionError
from engine.marian.teacher import EOS_ID

DRAFTER_WEIGHTS = "drafter.safetensors"
TEACHER_DIR = "teacher"  # in an export of ``livecanvas train --teacher``: the checkpoint, copied


@dataclass(frozen=True, slots=True)
class DrafterDims:
    vocab: int
    dim: int
    decoder_depth: int


@dataclass(frozen=True, slots=True)
class Encoding:
    """Piece ids of one text, as ``tokenizers.Encoding`` gives them (``ids``)."""

    ids: list[int]


class MarianPieces:
    """A checkpoint's ``MarianTokenizer`` with the interface the canvas denoiser reads (that of
    ``tokenizers.Tokenizer``: ``encode(text).ids`` without ``</s>``, ``decode(ids)``); a multi-target
    checkpoint's ``>>TGT<<`` token starts every source."""

    def __init__(self, tokenizer: Any, target_prefix: str = "") -> None:
        self.tokenizer = tokenizer
        self.target_prefix = target_prefix

    def encode(self, text: str, add_special_tokens: bool = False) -> Encoding:
        ids = list(self.tokenizer(self.target_prefix + text)["input_ids"])
        if ids and ids[-1] == self.tokenizer.eos_token_id and not add_special_tokens:
            ids = ids[:-1]
        return Encoding(ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))


def check_teacher(teacher: Any) -> None:
    """Refuse a checkpoint whose ``</s>`` is not id 0 (every opus-mt model's): canvases are padded
    with it, as they are for the Bergamot students."""
    eos = teacher.config.eos_token_id
    if eos != EOS_ID:
        raise ModelResolutionError(
            f"this Marian checkpoint's </s> is id {eos}; a canvas drafter needs it at {EOS_ID} "
            "(as every opus-mt checkpoint has it)"
        )


def banned_bias(teacher: Any, banned: Sequence[int]) -> torch.Tensor:
    """The teacher's output bias (V,) with -inf on the ``banned`` tokens (its generation config's)."""
    bias: torch.Tensor = teacher.final_logits_bias[0].detach().float().clone()
    if banned:
        bias[list(banned)] = -torch.inf
    return bias


def keys_values(attention: Any, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``MarianAttention``'s keys and values of states (B, S, D): (B, H, S, D/H) each."""
    shape = (states.shape[0], states.shape[1], -1, attention.head_dim)
    keys = attention.k_proj(states).view(shape).transpose(1, 2)
    values = attention.v_proj(states).view(shape).transpose(1, 2)
    return keys, values


def attend(
    attention: Any, queries: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    """A ``MarianAttention`` of queries (B, W, D) over keys/values ``kv``; ``mask`` is boolean,
    True where a query may attend, broadcastable to (B, H, W, K)."""
    batch, width, dim = queries.shape
    heads = kv[0].shape[1]
    q = attention.q_proj(queries).view(batch, width, heads, -1).transpose(1, 2)
    out = nn.functional.scaled_dot_product_attention(q, *kv, attn_mask=mask, scale=attention.scaling)
    result: torch.Tensor = attention.out_proj(out.transpose(1, 2).reshape(batch, width, dim))
    return result


def decoder_layer(
    layer: Any,
    x: torch.Tensor,
    self_mask: torch.Tensor,
    cross: tuple[torch.Tensor, torch.Tensor],
    cross_mask: torch.Tensor,
    queries: torch.Tensor | None = None,
) -> torch.Tensor:
    """A ``MarianDecoderLayer`` as ``MarianDecoderLayer.forward`` computes it (post-norm, no dropout)
    over states ``x`` (B, T, D), its self-attention masked by ``self_mask``; with ``queries``
    (B, W, D) only those rows' outputs are computed (every row of ``x`` still serves as key/value)."""
    h = x if queries is None else queries
    h = layer.self_attn_layer_norm(h + attend(layer.self_attn, h, keys_values(layer.self_attn, x), self_mask))
    h = layer.encoder_attn_layer_norm(h + attend(layer.encoder_attn, h, cross, cross_mask))
    out: torch.Tensor = layer.final_layer_norm(h + layer.fc2(layer.activation_fn(layer.fc1(h))))
    return out


class SourceEncoder(nn.Module):
    """The teacher's encoder with the canvas translator's call: ``(ids (B, S), mask (B, S))`` -> states."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.marian = encoder

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states: torch.Tensor = self.marian(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return states


class MarianCanvasDrafter(nn.Module):
    """See the module docstring. Build one with :meth:`from_teacher`."""

    output_bias: torch.Tensor

    def __init__(self, teacher: Any, banned: Sequence[int] = ()) -> None:
        super().__init__()
        check_teacher(teacher)
        decoder = teacher.get_decoder()
        config = teacher.config
        self.dims = DrafterDims(int(teacher.lm_head.out_features), int(config.d_model), len(decoder.layers))
        self.encoder = SourceEncoder(teacher.get_encoder())
        self.embedding: nn.Embedding = decoder.embed_tokens
        self.positions: nn.Module = decoder.embed_positions
        self.embed_scale = float(decoder.embed_scale)
        self.output: nn.Linear = teacher.lm_head
        self.register_buffer("output_bias", banned_bias(teacher, banned))
        self.mask_embedding = nn.Parameter(torch.zeros(config.d_model))
        self.layers = nn.ModuleList(copy.deepcopy(layer) for layer in decoder.layers)

    @classmethod
    def from_teacher(cls, teacher: Any, banned: Sequence[int] = ()) -> MarianCanvasDrafter:
        """A drafter started from ``teacher`` (a ``MarianMTModel``): its decoder layers copied."""
        return cls(teacher, banned).eval()

    @property
    def output_weight(self) -> torch.Tensor:
        return self.output.weight

    def frozen_parameters(self) -> list[nn.Parameter]:
        """The teacher's parts: encoder, embeddings, positions and output layer."""
        return [
            *self.encoder.parameters(),
            *self.embedding.parameters(),
            *self.positions.parameters(),
            *self.output.parameters(),
        ]

    def context_keys_values(self, memory: torch.Tensor) -> Context:
        """Each layer's cross-attention keys and values of encoder states (B, S, D)."""
        return [keys_values(layer.encoder_attn, memory) for layer in self.layers]

    def wanted_states(
        self,
        canvas: torch.Tensor,
        canvas_mask: torch.Tensor,
        context: Context,
        source_mask: torch.Tensor,
        wanted: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`engine.diffusion.canvas.CanvasTranslator.wanted_states`: the states of the
        ``wanted`` (B, T) slots, ``(states (B, W, D), real (B, W))``, the last layer run for them only."""
        masked = canvas == MASK_ID
        pieces = self.embedding(canvas.clamp(min=0)) * self.embed_scale  # (B, T, D)
        x = torch.where(masked[..., None], self.mask_embedding.to(pieces.dtype), pieces)
        x = x + self.positions(canvas.shape)
        self_mask = canvas_mask[:, None, None, :]
        cross_mask = source_mask[:, None, None, :]
        layers = list(self.layers)
        for layer, kv in zip(layers[:-1], context[:-1], strict=True):
            x = decoder_layer(layer, x, self_mask, kv, cross_mask)
        picked, real = wanted_rows(x, wanted)
        return decoder_layer(layers[-1], x, self_mask, context[-1], cross_mask, queries=picked), real

    def logits(self, hidden: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        """(..., D) -> (..., C) over ``candidates`` (C,), or over the whole vocabulary."""
        if candidates is None:
            return nn.functional.linear(hidden, self.output.weight, self.output_bias)
        return nn.functional.linear(hidden, self.output.weight[candidates], self.output_bias[candidates])

    # -- checkpoints -------------------------------------------------------------------------------
    def trained_state(self) -> dict[str, torch.Tensor]:
        frozen = {id(p) for p in self.frozen_parameters()}
        return {n: p.detach().float().contiguous() for n, p in self.named_parameters() if id(p) not in frozen}

    def save(self, path: Path) -> None:
        """The trained parts (module docstring) as safetensors."""
        from safetensors.torch import save_file

        save_file(self.trained_state(), str(path), metadata={"dims": json.dumps(asdict(self.dims))})

    @classmethod
    def load(cls, path: Path, teacher: Any, banned: Sequence[int] = ()) -> MarianCanvasDrafter:
        """The drafter saved at ``path`` on top of its ``teacher``; refused when they do not match."""
        from safetensors.torch import load_file

        drafter = cls(teacher, banned)
        state = load_file(str(path))
        expected = drafter.trained_state()
        if set(state) != set(expected) or any(state[n].shape != expected[n].shape for n in expected):
            raise ModelResolutionError(f"{path} is not a canvas drafter of this Marian checkpoint")
        drafter.load_state_dict(state, strict=False)
        return drafter.eval()


Drafter: TypeAlias = CanvasTranslator | MarianCanvasDrafter
"""A canvas drafter: the Bergamot-based one or a Marian checkpoint's (one interface, no common base)."""


class MarianVerifier(nn.Module):
    """See the module docstring: the teacher's decoder reading canvases teacher-forced.

    ``max_new_tokens``: greedy search stops after this many tokens (the checkpoint's ``max_length``
    less its start token), its last one ``</s>`` where ``forced_end`` (``forced_eos_token_id``); so
    does the verifier. A canvas the teacher accepts to its last slot without ending grows
    (:func:`engine.diffusion.verifier.grown`) within :meth:`output_limit`."""

    output_bias: torch.Tensor

    def __init__(
        self,
        teacher: Any,
        banned: Sequence[int] = (),
        *,
        start_token_id: int,
        max_new_tokens: int,
        forced_end: bool,
    ) -> None:
        super().__init__()
        check_teacher(teacher)
        decoder = teacher.get_decoder()
        self.layers = decoder.layers
        self.positions = decoder.embed_positions
        self.embed_scale = float(decoder.embed_scale)
        self.start_token_id = start_token_id
        self.max_new_tokens = max_new_tokens
        self.forced_end = forced_end
        self.register_buffer("output_bias", banned_bias(teacher, banned))
        self.eval()

    @classmethod
    def of(cls, teacher: Any, rules: Any) -> MarianVerifier:
        """The verifier of ``teacher`` under its greedy rules (:class:`engine.marian_greedy.GreedyRules`):
        its banned tokens, and ``generate``'s forced end where the checkpoint forces one."""
        return cls(
            teacher,
            rules.banned,
            start_token_id=rules.start_token_id,
            max_new_tokens=rules.max_new_tokens,
            forced_end=rules.forced_eos_token_id is not None,
        )

    def output_limit(self, source_pieces: int) -> int:
        """The longest output greedy search gives (whatever the source), within :data:`MAX_CANVAS`."""
        return min(self.max_new_tokens, MAX_CANVAS)

    def context_keys_values(self, memory: torch.Tensor) -> Context:
        return [keys_values(layer.encoder_attn, memory) for layer in self.layers]

    def start(self, *, first_read: int | None = FIRST_READ, limit: int | None = None) -> Reading:
        """A reading from the canvas's first slot (``cells`` unused: nothing is carried over); the
        canvas may grow to ``limit`` slots."""
        return Reading(settled=0, cells=[], lookahead=first_read, limit=limit)

    def verify(
        self,
        embedding: nn.Embedding,
        canvases: list[torch.Tensor],
        readings: list[Reading],
        context: Context,
        source_mask: torch.Tensor,
        outputs: Outputs,
    ) -> list[Verdict]:
        """One round for a batch of windows, as :meth:`TeacherVerifier.verify` (same arguments)."""
        canvas, starts, spans = spans_to_read(canvases, readings)
        read = int((starts + spans).max())  # slots read from the first: the longest row's
        # slot i is predicted from the start token and slots 0..i-1
        fed = torch.cat([torch.full((len(canvases), 1), self.start_token_id), canvas[:, : read - 1]], dim=1)
        x = embedding(fed) * self.embed_scale + self.positions(fed.shape)  # (B, R, D)
        causal = torch.ones((read, read), dtype=torch.bool).tril()[None, None]  # (1, 1, R, R)
        cross_mask = source_mask[:, None, None, :]
        for layer, kv in zip(self.layers, context, strict=True):
            x = decoder_layer(layer, x, causal, kv, cross_mask)
        width = int(spans.max())
        position = (starts[:, None] + torch.arange(width)[None, :]).clamp(max=read - 1)  # (B, W)
        real = torch.arange(width)[None, :] < spans[:, None]
        states = x.gather(1, position[..., None].expand(-1, -1, x.shape[-1]))  # (B, W, D)
        taught = outputs.pieces(outputs.logits(states).argmax(dim=-1))  # (B, W)
        # the output ends by its limit: its last token is </s> where forced, else nothing follows it
        end_slot = self.max_new_tokens - 1 if self.forced_end else self.max_new_tokens
        taught = torch.where(position == end_slot, EOS_ID, taught)
        differ = (taught != canvas.gather(1, position)) & real
        wrong = torch.where(differ.any(dim=1), differ.int().argmax(dim=1), spans)
        verdicts = []
        for b, (row, first, span) in enumerate(
            zip(taught.tolist(), wrong.tolist(), spans.tolist(), strict=True)
        ):
            verdicts.append(
                grown(TeacherVerifier.judge(canvases[b], readings[b], row, first, span, []), readings[b])
            )
        return verdicts
