"""Greedy decoding of a Hugging Face ``MarianMTModel`` as a :class:`~engine.diffusion.denoiser.Denoiser`.

This module owns the autoregressive backend behind the engine's contract: one "denoising step" decodes
one more token for every listed sequence, in one batched decoder forward over every live sequence of
every session. The scheduler (:mod:`engine.scheduler`) then treats it as any backend: sequences join
and leave at step boundaries, drafts follow its early-exit policy (the greedy prefix as it grows) and
each window's final goes out once.

How a sequence maps onto the contract:

* ``start`` encodes the source once (the encoder, alone, exactly as ``generate()`` encodes it) and keeps
  its cross-attention keys and values for every decoder layer; decoding starts from the model's
  ``decoder_start_token_id``.
* A canvas block is ``block_length`` tokens. After each step the block reads
  ``generated tokens + </s> filler`` and ``settled`` counts the generated ones: a token, once decoded,
  never changes. The block is done (every position settled) once it is full, once ``</s>`` has been
  decoded, or once the request's ``max_new_tokens`` are used up. The scheduler appends a full block
  with ``next_block`` and the sequence goes on; the filler never reaches a final, since the
  scheduler cuts a window at its first ``</s>``.
* The request's ``max_denoising_steps`` must be at least ``block_length`` (one token per step), which
  :mod:`engine.user_translator` sets.

Batching. The decoder's self-attention caches of the stepping sequences are left-padded to one length
and stacked into one ``EncoderDecoderCache`` with their cross-attention caches; a padding mask and
per-row positions give each row what it would see alone. The stack is kept while the same sequences
step together and rebuilt (each row's cache cut back out, the new set stacked) when one joins or
leaves. Each decoder layer is Marian's own (``MarianDecoderLayer.forward``), run on that cache.

Parity with ``generate()``. Greedy ``generate(num_beams=1, do_sample=False)`` applies the checkpoint's
generation settings as logits processors; the ones that can change a greedy choice are applied here the
same way (:class:`GreedyRules`: banned tokens such as opus-mt's ``<pad>``, ``</s>`` forced as the last
token of the budget); a checkpoint whose settings ask for anything else (a repetition penalty,
n-gram bans) is refused at load rather than decoded differently. A lone sequence gets
``generate()``'s tokens; a batched one the same tokens up to float rounding (the padded sums run in
another order), as for every backend (docs/engine.md, "Batch independence").

Threading: used by the one engine thread that owns the model, like every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import EncoderDecoderCache

from engine.diffusion.denoiser import StepResult
from engine.diffusion.marian_canvas import keys_values
from engine.errors import EngineError, ModelResolutionError
from engine.types import CanvasRequest

BLOCK_LENGTH = 16
"""Tokens per canvas block: how far a sequence decodes before the scheduler appends its block."""

_UNSUPPORTED_SETTINGS = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "min_length": 0,
    "min_new_tokens": 0,
    "forced_bos_token_id": None,
    "forced_decoder_ids": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
}
"""Generation settings that change greedy output and that this backend does not apply, with the value
that means "off"; a checkpoint setting any of them otherwise is refused at load."""


@dataclass(frozen=True, slots=True)
class GreedyRules:
    """What the checkpoint's generation config does to a greedy choice, as ``generate()`` applies it:
    the first token fed to the decoder, the end token(s), tokens never chosen (``bad_words_ids`` of one
    token, ``suppress_tokens``), the token forced as the last one of a budget (``forced_eos_token_id``,
    :class:`transformers.ForcedEOSTokenLogitsProcessor`) and the longest output (``max_length`` less the
    start token)."""

    start_token_id: int
    eos_token_ids: frozenset[int]
    banned: tuple[int, ...] = ()
    forced_eos_token_id: int | None = None
    max_new_tokens: int = 511

    @classmethod
    def of(cls, generation_config: Any, config: Any) -> GreedyRules:
        problems = [
            f"{name}={getattr(generation_config, name)!r}"
            for name, off in _UNSUPPORTED_SETTINGS.items()
            if getattr(generation_config, name, None) not in (None, off)
        ]
        bad_words = getattr(generation_config, "bad_words_ids", None) or []
        problems += [f"bad_words_ids entry {ids} (several tokens)" for ids in bad_words if len(ids) != 1]
        if problems:
            raise ModelResolutionError(
                "this Marian checkpoint's generation config sets what the greedy backend does not apply: "
                + ", ".join(problems)
            )
        eos = getattr(generation_config, "eos_token_id", None)
        if eos is None:
            eos = config.eos_token_id
        start = getattr(generation_config, "decoder_start_token_id", None)
        if start is None:
            start = config.decoder_start_token_id
        banned = [ids[0] for ids in bad_words] + list(
            getattr(generation_config, "suppress_tokens", None) or []
        )
        max_length = getattr(generation_config, "max_length", None) or config.max_position_embeddings
        return cls(
            start_token_id=int(start),
            eos_token_ids=frozenset(int(e) for e in (eos if isinstance(eos, list) else [eos])),
            banned=tuple(sorted(set(banned))),
            forced_eos_token_id=getattr(generation_config, "forced_eos_token_id", None),
            max_new_tokens=min(int(max_length), config.max_position_embeddings) - 1,
        )


@dataclass(eq=False)
class _Sequence:
    budget: int  # tokens this sequence may decode, the request's max_new_tokens within the model's
    cross: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (1, H, S, d)
    last: int  # the token the next step feeds
    fed: int = 0  # tokens fed to the decoder so far (its cache length; the next position)
    generated: list[int] = field(default_factory=list)
    block_start: int = 0  # index in ``generated`` where the current block starts
    ended: bool = False  # </s> decoded or the budget used up
    own: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # self-attention cache when not stacked


@dataclass(eq=False)
class _Stack:
    """The stepping sequences' caches stacked into one batch, kept while the same ones step."""

    seq_ids: tuple[int, ...]
    cache: EncoderDecoderCache
    valid: torch.Tensor  # (B, L) bool: which self-attention cache columns hold a token
    cross_mask: torch.Tensor  # (B, 1, 1, S) additive


class MarianGreedyDenoiser:
    """See the module docstring. ``model`` is a ``MarianMTModel`` in eval mode, ``tokenizer`` its
    tokenizer (decoding only)."""

    def __init__(
        self, model: Any, tokenizer: Any, rules: GreedyRules, *, block_length: int = BLOCK_LENGTH
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.rules = rules
        self._block_length = block_length
        self._sequences: dict[int, _Sequence] = {}
        self._stack: _Stack | None = None
        self._decoder = model.get_decoder()
        self._encoder = model.get_encoder()
        self._filler = min(rules.eos_token_ids)
        banned = torch.zeros(model.config.decoder_vocab_size, dtype=torch.bool)
        banned[list(rules.banned)] = True
        self._banned = banned.to(model.device)  # (V,)

    # -- the Denoiser protocol ---------------------------------------------------------------------
    @property
    def canvas_length(self) -> int:
        return self._block_length

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self.rules.eos_token_ids

    @property
    def max_context_tokens(self) -> int:
        """Positions the encoder and the decoder each have (the source and the output budget each fit)."""
        return int(self.model.config.max_position_embeddings)

    def start(self, seq_id: int, request: CanvasRequest) -> None:
        if len(request.prompt_ids) > self.max_context_tokens:
            raise EngineError(
                f"{len(request.prompt_ids)} source tokens, over this model's {self.max_context_tokens}"
            )
        self.release(seq_id)
        device = self.model.device
        source = torch.tensor([request.prompt_ids], device=device)  # (1, S)
        with torch.inference_mode():
            encoded = self._encoder(input_ids=source).last_hidden_state  # (1, S, D)
            cross = [keys_values(layer.encoder_attn, encoded) for layer in self._decoder.layers]
        self._sequences[seq_id] = _Sequence(
            budget=min(request.max_new_tokens, self.rules.max_new_tokens),
            cross=cross,
            last=self.rules.start_token_id,
            own=[],
        )

    def next_block(self, seq_id: int, block: Sequence[int]) -> None:
        sequence = self._sequences[seq_id]
        produced = tuple(sequence.generated[sequence.block_start :])
        if tuple(block) != produced:
            raise EngineError(f"sequence {seq_id}: block {tuple(block)} is not the decoded {produced}")
        sequence.block_start = len(sequence.generated)

    def step(self, seq_ids: Sequence[int], steps_remaining: Sequence[int]) -> list[StepResult]:
        """Decode one more token of each listed sequence in one forward (``steps_remaining`` is not
        read: a greedy token depends on nothing but the sequence so far)."""
        sequences = [self._sequences[i] for i in seq_ids]
        for seq_id, sequence in zip(seq_ids, sequences, strict=True):
            if sequence.ended or len(sequence.generated) - sequence.block_start >= self._block_length:
                raise EngineError(f"sequence {seq_id} has no position left in its block")
        with torch.inference_mode():
            logits = self._forward(tuple(seq_ids), sequences)  # (B, V)
            logits = self._apply_rules(logits, sequences)
            log_probs = torch.log_softmax(logits, dim=-1)  # (B, V)
            entropy = -(log_probs.exp() * log_probs.nan_to_num(neginf=0.0)).sum(-1)  # (B,)
            chosen = logits.argmax(-1)  # (B,)
        results = []
        for sequence, token, nats in zip(sequences, chosen.tolist(), entropy.tolist(), strict=True):
            sequence.generated.append(token)
            sequence.last = token
            sequence.fed += 1
            sequence.ended = token in self.rules.eos_token_ids or len(sequence.generated) >= sequence.budget
            results.append(self._result(sequence, nats))
        return results

    def release(self, seq_id: int) -> None:
        if self._sequences.pop(seq_id, None) is not None and self._stack and seq_id in self._stack.seq_ids:
            self._unstack()

    def revise(self, seq_id: int, request: CanvasRequest) -> None:
        """Decode this sequence again from its first token, for a new request (a greedy decoder keeps
        nothing of the old one worth reusing)."""
        self.release(seq_id)
        self.start(seq_id, request)

    def decode(self, tokens: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(tokens), skip_special_tokens=True))

    # -- internals ---------------------------------------------------------------------------------
    def _result(self, sequence: _Sequence, mean_entropy: float) -> StepResult:
        block = sequence.generated[sequence.block_start :]
        full = len(block) >= self._block_length
        tokens = (*block, *([self._filler] * (self._block_length - len(block))))
        settled = self._block_length if sequence.ended or full else len(block)
        return StepResult(tokens=tokens, settled=settled, mean_entropy=mean_entropy)

    def _apply_rules(self, logits: torch.Tensor, sequences: list[_Sequence]) -> torch.Tensor:
        """``generate()``'s greedy logits processors that this checkpoint asks for (in its order:
        banned tokens, then the forced end)."""
        logits = logits.masked_fill(self._banned, float("-inf"))  # (B, V)
        forced = self.rules.forced_eos_token_id
        if forced is not None:
            last = [len(s.generated) == s.budget - 1 for s in sequences]
            if any(last):
                rows = torch.tensor(last, device=logits.device)[:, None]  # (B, 1)
                only_eos = torch.full_like(logits, float("-inf"))
                only_eos[:, forced] = 0.0
                logits = torch.where(rows, only_eos, logits)
        return logits

    def _forward(self, seq_ids: tuple[int, ...], sequences: list[_Sequence]) -> torch.Tensor:
        """The decoder's next-token logits of every row, (B, V), appending each row's fed token to
        the stacked cache."""
        stack = self._stack if self._stack is not None and self._stack.seq_ids == seq_ids else None
        if stack is None:
            self._unstack()
            stack = self._stack = self._stacked(seq_ids, sequences)
        device = self.model.device
        decoder = self._decoder
        tokens = torch.tensor([[s.last] for s in sequences], device=device)  # (B, 1)
        positions = torch.tensor([[s.fed] for s in sequences], device=device)  # (B, 1)
        hidden = decoder.embed_tokens(tokens) * decoder.embed_scale  # (B, 1, D)
        hidden = hidden + decoder.embed_positions(tokens.shape, 0, position_ids=positions)
        fed = torch.ones((len(sequences), 1), dtype=torch.bool, device=device)  # (B, 1)
        stack.valid = torch.cat([stack.valid, fed], dim=1)  # (B, L + 1)
        self_mask = _additive(stack.valid, hidden.dtype)  # (B, 1, 1, L + 1)
        # the cross-attention keys and values are cached (is_updated), so the layer reads no encoder
        # states; it only checks that some are given
        no_states = hidden.new_empty((hidden.shape[0], 0, hidden.shape[2]))
        try:
            for layer in decoder.layers:
                hidden = layer(
                    hidden, self_mask, no_states, encoder_attention_mask=stack.cross_mask, cache=stack.cache
                )
        except BaseException:
            self._stack = None  # half updated: its sequences fail (run_round gives them error finals)
            raise
        logits: torch.Tensor = self.model.lm_head(hidden[:, -1]) + self.model.final_logits_bias[0]  # (B, V)
        return logits.float()

    def _stacked(self, seq_ids: tuple[int, ...], sequences: list[_Sequence]) -> _Stack:
        device = self.model.device
        for seq_id, sequence in zip(seq_ids, sequences, strict=True):
            if sequence.own is None:
                raise EngineError(f"sequence {seq_id} lost its cache in a failed step")
        longest = max(s.fed for s in sequences)
        longest_source = max(s.cross[0][0].shape[2] for s in sequences)
        caches = []
        for index in range(len(self._decoder.layers)):
            own = [s.own[index] if s.own else None for s in sequences]
            caches.append(
                (
                    _stack_left([o[0] if o else None for o in own], sequences, longest),
                    _stack_left([o[1] if o else None for o in own], sequences, longest),
                    _stack_right([s.cross[index][0] for s in sequences], longest_source),
                    _stack_right([s.cross[index][1] for s in sequences], longest_source),
                )
            )
        valid = torch.zeros((len(sequences), longest), dtype=torch.bool, device=device)
        source_valid = torch.zeros((len(sequences), longest_source), dtype=torch.bool, device=device)
        for row, sequence in enumerate(sequences):
            valid[row, longest - sequence.fed :] = True
            source_valid[row, : sequence.cross[0][0].shape[2]] = True
            sequence.own = None  # the stack holds it now
        cache = EncoderDecoderCache(tuple(caches))
        return _Stack(seq_ids, cache, valid, _additive(source_valid, self.model.dtype))

    def _unstack(self) -> None:
        """Cut each live row's self-attention cache back out of the stack, and drop the stack."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        layers: list[Any] = stack.cache.self_attention_cache.layers  # DynamicLayer: keys, values
        length = stack.valid.shape[1]
        for row, seq_id in enumerate(stack.seq_ids):
            sequence = self._sequences.get(seq_id)
            if sequence is None:
                continue
            start = length - sequence.fed
            sequence.own = [
                (layer.keys[row : row + 1, :, start:].clone(), layer.values[row : row + 1, :, start:].clone())
                for layer in layers
            ]


def _additive(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A (B, K) validity mask as the additive attention mask the layers take, (B, 1, 1, K)."""
    mask = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
    mask.masked_fill_(~valid, torch.finfo(dtype).min)
    return mask[:, None, None, :]


def _stack_left(own: list[torch.Tensor | None], sequences: list[_Sequence], length: int) -> torch.Tensor:
    """Per-row self-attention caches (1, H, n, d), None for one still empty, left-padded to ``length``
    and stacked: (B, H, L, d)."""
    reference = sequences[0].cross[0][0]  # (1, H, S, d): the heads and head size
    out = reference.new_zeros((len(own), reference.shape[1], length, reference.shape[3]))
    for row, (cache, sequence) in enumerate(zip(own, sequences, strict=True)):
        if cache is not None and sequence.fed:
            out[row, :, length - sequence.fed :] = cache[0]
    return out


def _stack_right(rows: list[torch.Tensor], length: int) -> torch.Tensor:
    """Per-row tensors (1, H, S, d) right-padded to ``length`` and stacked: (B, H, S_max, d)."""
    out = rows[0].new_zeros((len(rows), rows[0].shape[1], length, rows[0].shape[3]))
    for row, tensor in enumerate(rows):
        out[row, :, : tensor.shape[2]] = tensor[0]
    return out
