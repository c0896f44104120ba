"""The DiffusionGemma backend: ``Denoiser`` over ``transformers.DiffusionGemmaForBlockDiffusion``.

It runs the model's own block-diffusion loop, taken apart so that one decoder forward advances many
independent canvases at once:

* each sequence's prompt is encoded once by the causal encoder into its own KV cache, and each finished
  block is appended to it, exactly as ``generate()`` does;
* for a step, the prompt caches of the stepping sequences are left-padded to a common length and stacked
  (rebuilt only when the set of sequences or a context changes); a padding mask and per-row position
  ids give every row the inputs it would have alone (bit-identical results on one thread and equal
  context lengths; otherwise the attention's sums may round differently in the last bit);
* canvases at different steps share the forward: rows on their first step get a zeroed
  self-conditioning signal through the decoder's ``self_conditioning_mask``;
* sampling, acceptance, renoising and stopping follow :mod:`engine.diffusion.rules`, each row drawing
  from its own ``torch.Generator`` in the same order as ``generate()`` draws from the global one.

So a sequence stepped here with seed ``s`` yields the same canvases as ``torch.manual_seed(s)`` followed
by ``model.generate(...)`` with the same schedule (tested). That holds for the ``exact``
sampler; the ``fast`` sampler (the service's default) draws only the accepted positions (same
distributions, another random stream, still independent of the batch) and runs a leaner decoder step
(:mod:`engine.diffusion.lean`). A step reads its results back to the host once per
quantity for the whole batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache

from engine.diffusion.config import GemmaSettings
from engine.diffusion.denoiser import StepResult
from engine.diffusion.gemma_cache import BatchCache, PromptCache, encode_into_cache, stack_prompt_caches
from engine.diffusion.lean import (
    decoder_hidden_states,
    entropy_probs_argmax,
    self_conditioning_weights,
    soft_cap_and_temperature_,
)
from engine.diffusion.rules import (
    accept_by_entropy_bound,
    acceptance_mask,
    entropy_and_probs,
    renoise,
    stable_and_confident,
    step_temperature,
)
from engine.errors import EngineError
from engine.types import SAMPLERS, CanvasRequest, Sampler


@dataclass(eq=False)
class _SequenceState:
    """Tensor state of one live sequence (batch dimension 1 throughout)."""

    request: CanvasRequest
    generator: torch.Generator
    cache: DynamicCache  # prompt and finished blocks, read-only for the decoder
    context_length: int  # tokens in ``cache``; the canvas starts at this position
    canvas: torch.Tensor  # (1, L) current (noisy) canvas
    # (1, L, V) the previous step's tempered logits (exact sampler) or their softmax (fast)
    self_conditioning: torch.Tensor | None
    argmax_history: torch.Tensor  # (1, S, L) last S argmax canvases, -1 where none
    version: int  # unique stamp of this context (new on start and on every appended block)


class DiffusionGemmaDenoiser:
    """Batched step-level decoding on a ``DiffusionGemmaForBlockDiffusion`` model (any checkpoint).

    ``settings``: the checkpoint's own decoding rules (temperature schedule, adaptive stop).
    ``sampler``: ``exact`` (default) draws a token at every canvas position from the canvas's generator
    exactly as ``generate()`` does, so results equal ``generate()``'s; ``fast`` samples only the
    positions the entropy bound accepts (the others are renoised anyway): the same distributions and
    still one generator per canvas, but another random stream, and several times cheaper per canvas.
    """

    def __init__(
        self,
        model: DiffusionGemmaForBlockDiffusion,
        tokenizer: Any,
        *,
        eos_token_ids: Sequence[int],
        settings: GemmaSettings | None = None,
        sampler: Sampler = "exact",
    ) -> None:
        if sampler not in SAMPLERS:
            raise EngineError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        self.sampler: Sampler = sampler
        self.settings = settings or GemmaSettings()
        self._temperatures: dict[tuple[int, int, float, float], torch.Tensor] = {}
        self._last_logits: tuple[tuple[int, ...], torch.Tensor] | None = None
        self.model: Any = model
        self.model.train(False)
        self.tokenizer = tokenizer
        self._text_config: Any = model.config.get_text_config(decoder=True)
        self._vocab_size: int = int(self._text_config.vocab_size)
        cap = model.config.get_text_config().final_logit_softcapping
        self._soft_cap: float | None = None if cap is None else float(cap)
        if model.config.canvas_length is None:
            raise EngineError("the checkpoint's config sets no canvas_length")
        self._canvas_length = int(model.config.canvas_length)
        self._eos = frozenset(int(t) for t in eos_token_ids)
        self._device = model.device
        self._embedding_dtype = model.model.decoder.embed_tokens.weight.dtype
        self._self_conditioning_weights = self_conditioning_weights(model) if sampler == "fast" else None
        self._sequences: dict[int, _SequenceState] = {}
        self._batch: BatchCache | None = None
        self._stamps = itertools.count()

    # -- Denoiser protocol -------------------------------------------------------------------------
    @property
    def canvas_length(self) -> int:
        return self._canvas_length

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos

    @property
    def max_context_tokens(self) -> int:
        limit = int(self._text_config.max_position_embeddings)
        if "sliding_attention" in self._text_config.layer_types:
            # Sliding layers keep the last ``window - 1`` tokens; staying inside keeps every layer's
            # cache the same length, which the stacked batch cache relies on.
            limit = min(limit, int(self._text_config.sliding_window) - 1)
        return limit

    def start(self, seq_id: int, request: CanvasRequest) -> None:
        if seq_id in self._sequences:
            raise EngineError(f"sequence {seq_id} is already live")
        prompt_length = len(request.prompt_ids)
        if prompt_length + request.max_new_tokens > self.max_context_tokens:
            raise EngineError(
                f"prompt ({prompt_length} tokens) plus max_new_tokens ({request.max_new_tokens}) exceeds "
                f"the model's context of {self.max_context_tokens} tokens"
            )
        if any(not 0 <= t < self._vocab_size for t in request.prompt_ids):
            raise EngineError(f"prompt has token ids outside the vocabulary of {self._vocab_size}")
        generator = torch.Generator(device=self._device).manual_seed(request.seed)
        cache = DynamicCache(config=self._text_config)
        with torch.inference_mode():
            prompt = torch.tensor([request.prompt_ids], dtype=torch.long, device=self._device)  # (1, P)
            encode_into_cache(self.model, prompt, cache, start_position=0)
            state = _SequenceState(
                request=request,
                generator=generator,
                cache=cache,
                context_length=prompt_length,
                canvas=self._fresh_canvas(generator),
                self_conditioning=None,
                argmax_history=self._empty_history(),
                version=next(self._stamps),
            )
        self._sequences[seq_id] = state

    def revise(self, seq_id: int, request: CanvasRequest) -> None:
        """DiffusionGemma keeps nothing of a canvas whose prompt changed (its prompt cache is the
        prompt's): the sequence starts afresh under the newer request."""
        self.release(seq_id)
        self.start(seq_id, request)

    def next_block(self, seq_id: int, block: Sequence[int]) -> None:
        state = self._sequences[seq_id]
        if len(block) != self._canvas_length:
            raise EngineError(f"a block has {self._canvas_length} tokens, got {len(block)}")
        with torch.inference_mode():
            tokens = torch.tensor([list(block)], dtype=torch.long, device=self._device)  # (1, L)
            encode_into_cache(self.model, tokens, state.cache, start_position=state.context_length)
            state.context_length += self._canvas_length
            state.canvas = self._fresh_canvas(state.generator)
            state.self_conditioning = None
            state.argmax_history = self._empty_history()
            state.version = next(self._stamps)

    def release(self, seq_id: int) -> None:
        state = self._sequences.pop(seq_id, None)
        if state is not None and self._batch is not None and state.version in self._batch.signature:
            self._batch = None  # free the stacked cache now rather than at the next step

    def decode(self, tokens: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(tokens), skip_special_tokens=True))

    def step(self, seq_ids: Sequence[int], steps_remaining: Sequence[int]) -> list[StepResult]:
        if not seq_ids:
            return []
        if len(seq_ids) != len(steps_remaining):
            raise EngineError("seq_ids and steps_remaining differ in length")
        states = [self._sequences[i] for i in seq_ids]
        with torch.inference_mode():
            return self._step(states, steps_remaining)

    # -- internals ---------------------------------------------------------------------------------
    def _step(self, states: list[_SequenceState], steps_remaining: Sequence[int]) -> list[StepResult]:
        batch = self._batch_cache(states)
        canvas = torch.cat([s.canvas for s in states])  # (B, L)
        self_conditioning, self_conditioning_mask = self._stack_self_conditioning(states)
        temperature = torch.stack(
            [self._temperature(n, s.request) for n, s in zip(steps_remaining, states, strict=True)]
        )  # (B,)
        logits = self._logits(canvas, batch, self_conditioning, self_conditioning_mask, temperature)
        if self.sampler == "exact":
            entropy, _ = entropy_and_probs(logits)  # (B, L)
            argmax = torch.argmax(logits, dim=-1)  # (B, L)
            probs = torch.softmax(logits, dim=-1, dtype=torch.float32)  # (B, L, V)
            proposed = self._sample_every_position(probs, states)  # (B, L)
            accepted, accepted_mask = accept_by_entropy_bound(canvas, proposed, entropy, batch.entropy_bound)
        else:
            entropy, probs, argmax = entropy_probs_argmax(logits)
            # The acceptance mask depends on the entropies only, so only accepted positions are sampled.
            accepted_mask = acceptance_mask(entropy, batch.entropy_bound)  # (B, L)
            accepted = self._sample_accepted(probs, canvas, accepted_mask, states)  # (B, L)
        noise = torch.cat([self._fresh_canvas(s.generator) for s in states])  # (B, L)
        next_canvas = renoise(accepted, accepted_mask, noise)
        mean_entropy = entropy.mean(dim=-1)  # (B,)
        stop, histories = self._stop(states, argmax, mean_entropy)
        # the next step's self-conditioning input: exact hands the model its logits, as generate() does
        # (a view when the dtypes match); fast hands its own decoder forward the probabilities
        self_conditioning_out = logits.to(self._embedding_dtype) if self.sampler == "exact" else probs
        self._last_logits = (tuple(id(s) for s in states), self_conditioning_out)
        # one host transfer per quantity for the whole batch, not one per row
        argmax_rows: list[list[int]] = argmax.tolist()
        stop_rows: list[bool] = stop.tolist()
        entropy_rows: list[float] = mean_entropy.tolist()
        results: list[StepResult] = []
        for row, state in enumerate(states):
            state.argmax_history = histories[row]
            state.canvas = next_canvas[row : row + 1]
            state.self_conditioning = self_conditioning_out[row : row + 1]
            settled = self._canvas_length if stop_rows[row] else 0  # the adaptive stop settles the block
            results.append(
                StepResult(tokens=tuple(argmax_rows[row]), settled=settled, mean_entropy=entropy_rows[row])
            )
        return results

    def _logits(
        self,
        canvas: torch.Tensor,
        batch: BatchCache,
        self_conditioning: torch.Tensor | None,
        self_conditioning_mask: torch.Tensor | None,
        temperature: torch.Tensor,
    ) -> torch.Tensor:
        """One decoder forward: the step's tempered logits (B, L, V) float32.

        ``exact`` takes them from the model's own forward, as ``generate()`` does. ``fast`` runs the
        decoder with the previous step's probabilities as its self-conditioning input, then the head,
        capping and tempering in place (:mod:`engine.diffusion.lean`).
        """
        if self.sampler == "exact":
            logits: torch.Tensor = self.model(
                decoder_input_ids=canvas,
                cache=batch.cache,
                self_conditioning_logits=self_conditioning,
                self_conditioning_mask=self_conditioning_mask,
                decoder_attention_mask=batch.mask_mapping,
                decoder_position_ids=batch.position_ids,
            ).logits
            return logits.div_(temperature[:, None, None])  # in place
        weights = self._self_conditioning_weights
        assert weights is not None  # made in __init__ for the fast sampler
        hidden = decoder_hidden_states(
            self.model,
            canvas,
            self_conditioning,
            self_conditioning_mask,
            weights,
            cache=batch.cache,
            mask_mapping=batch.mask_mapping,
            position_ids=batch.position_ids,
        )  # (B, L, H)
        logits = self.model.lm_head(hidden).to(torch.float32)
        return soft_cap_and_temperature_(logits, self._soft_cap, temperature)

    def _temperature(self, steps_remaining: int, request: CanvasRequest) -> torch.Tensor:
        """The schedule's temperature, memoised: a handful of distinct values serve every step."""
        key = (
            steps_remaining,
            request.diffusion.max_denoising_steps,
            self.settings.t_min,
            self.settings.t_max,
        )
        value = self._temperatures.get(key)
        if value is None:
            value = step_temperature(*key).to(self._device)
            self._temperatures[key] = value
        return value

    def _sample_every_position(self, probs: torch.Tensor, states: list[_SequenceState]) -> torch.Tensor:
        """``generate()``'s draw: one multinomial sample per position from each row's own generator.

        Each draw consumes a generator for all ``L * V`` probabilities (torch samples by exponential
        races), which dominates a step. (B, L, V) -> (B, L).
        """
        return torch.stack(
            [
                torch.multinomial(probs[row], num_samples=1, generator=state.generator).squeeze(-1)
                for row, state in enumerate(states)
            ]
        )

    def _sample_accepted(
        self,
        probs: torch.Tensor,
        canvas: torch.Tensor,
        accepted_mask: torch.Tensor,
        states: list[_SequenceState],
    ) -> torch.Tensor:
        """The ``fast`` sampler: the current canvas with each accepted position replaced by a token
        drawn from its distribution by inverse CDF, one uniform number per position from the row's own
        generator (so a canvas's result does not depend on its batch). Same distributions as
        ``exact``, which needs ``V`` random numbers per position; another random stream."""
        uniform = torch.cat(
            [torch.rand((1, self._canvas_length), generator=s.generator, device=self._device) for s in states]
        )  # (B, L)
        accepted = canvas.clone()  # (B, L)
        rows, columns = accepted_mask.nonzero(as_tuple=True)  # (K,), (K,)
        if rows.numel() == 0:
            return accepted
        cdf = probs[rows, columns].cumsum_(dim=-1)  # (K, V)
        target = uniform[rows, columns, None] * cdf[:, -1:]  # (K, 1)
        tokens = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=self._vocab_size - 1)
        accepted[rows, columns] = tokens
        return accepted

    def _stop(
        self, states: list[_SequenceState], argmax: torch.Tensor, mean_entropy: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The adaptive stop for every row at once (every history is ``stability_threshold`` long)."""
        confidence_threshold = torch.full(
            (len(states),), self.settings.confidence_threshold, dtype=torch.float32, device=self._device
        )
        histories = torch.cat([s.argmax_history for s in states])  # (B, S, L)
        stop, stacked = stable_and_confident(histories, argmax, mean_entropy, confidence_threshold)
        return stop, list(torch.split(stacked, 1))

    def _fresh_canvas(self, generator: torch.Generator) -> torch.Tensor:
        """A canvas of uniformly drawn tokens (1, L): the diffusion prior and the renoising source."""
        return torch.randint(
            low=0,
            high=self._vocab_size,
            size=(1, self._canvas_length),
            generator=generator,
            device=self._device,
        )

    def _empty_history(self) -> torch.Tensor:
        threshold = self.settings.stability_threshold
        return torch.full((1, threshold, self._canvas_length), -1, dtype=torch.long, device=self._device)

    def _stack_self_conditioning(
        self, states: list[_SequenceState]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        signals = [s.self_conditioning for s in states]
        present = [signal is not None for signal in signals]
        if not any(present):
            return None, None  # every row is on its first step
        if all(present):
            if self._last_logits is not None and self._last_logits[0] == tuple(id(s) for s in states):
                return self._last_logits[1], None  # the same rows as the last step: no copy
            return torch.cat([s for s in signals if s is not None]), None
        shape = (1, self._canvas_length, self._vocab_size)
        dtype = next(s for s in signals if s is not None).dtype
        zeros = torch.zeros(shape, dtype=dtype, device=self._device)
        stacked = torch.cat([s if s is not None else zeros for s in signals])  # (B, L, V)
        return stacked, torch.tensor(present, dtype=torch.bool, device=self._device)

    def _batch_cache(self, states: list[_SequenceState]) -> BatchCache:
        signature = tuple(s.version for s in states)
        if self._batch is None or self._batch.signature != signature:
            self._batch = stack_prompt_caches(
                self.model,
                [
                    PromptCache(s.cache, s.context_length, s.version, s.request.diffusion.entropy_bound)
                    for s in states
                ],
                self._canvas_length,
            )
        return self._batch
