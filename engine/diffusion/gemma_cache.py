"""DiffusionGemma's prompt caches: each sequence's context encoded once into its own KV cache, and the
caches of the sequences that step together stacked into one left-padded batch cache, with the
padding mask and per-row position ids that give every row the inputs it would have alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache


@dataclass(frozen=True)
class PromptCache:
    """One sequence's encoded context: its cache, its length in tokens, its stamp (new whenever the
    context changes) and its request's entropy bound."""

    cache: DynamicCache
    length: int
    version: int
    entropy_bound: float


@dataclass(eq=False)
class BatchCache:
    """Stacked prompt caches for one set of sequences, reused while the set stays the same."""

    signature: tuple[int, ...]  # the members' context stamps, in batch order
    cache: DynamicCache
    mask_mapping: dict[str, Any]
    position_ids: torch.Tensor  # (B, L) int32
    entropy_bound: torch.Tensor  # (B,)


def encode_into_cache(model: Any, tokens: torch.Tensor, cache: DynamicCache, *, start_position: int) -> None:
    """Run ``model``'s causal encoder over ``tokens`` (1, T), appending their keys/values to ``cache``
    (which holds ``start_position`` tokens)."""
    device = model.device
    length = tokens.shape[1]
    end = start_position + length
    position_ids = torch.arange(start_position, end, dtype=torch.int32, device=device)[None]  # (1, T)
    attention_mask = torch.ones((1, end), dtype=torch.bool, device=device)  # (1, past + T)
    shape_only = torch.empty((1, length, 0), dtype=model.dtype, device=device)
    encoder = model.model.encoder
    mask_mapping = encoder.create_masks_for_generate(
        config=model.config,
        inputs_embeds=shape_only,
        attention_mask=attention_mask,
        cache=cache,
        position_ids=position_ids,
    )
    encoder(input_ids=tokens, attention_mask=mask_mapping, cache=cache, position_ids=position_ids)


def stack_prompt_caches(model: Any, prompts: list[PromptCache], canvas_length: int) -> BatchCache:
    """The ``prompts``' caches left-padded to the longest and stacked, with the decoder's attention
    mask over (padding, context, canvas) and each row's canvas positions."""
    device = model.device
    context = max(p.length for p in prompts)
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    layers: list[Any] = list(cache.layers)
    for layer_index, layer in enumerate(layers):
        own: list[Any] = [p.cache.layers[layer_index] for p in prompts]
        keys = [layer_cache.keys for layer_cache in own]  # each (1, H, P_i, D)
        values = [layer_cache.values for layer_cache in own]
        layer.update(_left_pad(keys, context), _left_pad(values, context))
    padding = torch.tensor(
        [[i >= context - p.length for i in range(context)] for p in prompts], dtype=torch.bool, device=device
    )  # (B, P) True where real tokens are
    canvas_visible = torch.ones((len(prompts), canvas_length), dtype=torch.bool, device=device)
    attention_mask = torch.cat([padding, canvas_visible], dim=1)  # (B, P + L)
    shape_only = torch.empty((len(prompts), canvas_length, 1), dtype=torch.long, device=device)
    mask_mapping = model.model.decoder.create_diffusion_decoder_attention_mask(
        config=model.config,
        inputs_embeds=shape_only,
        cache=cache,
        decoder_attention_mask=attention_mask,
    )
    offsets = torch.arange(canvas_length, dtype=torch.int32, device=device)
    starts = torch.tensor([p.length for p in prompts], dtype=torch.int32, device=device)
    return BatchCache(
        signature=tuple(p.version for p in prompts),
        cache=cache,
        mask_mapping=mask_mapping,
        position_ids=starts[:, None] + offsets[None, :],  # (B, L)
        entropy_bound=torch.tensor([p.entropy_bound for p in prompts], dtype=torch.float32, device=device),
    )


def _left_pad(tensors: list[torch.Tensor], length: int) -> torch.Tensor:
    """Stack (1, H, T_i, D) tensors into (B, H, length, D), zero-padding each on the left."""
    return torch.cat([torch.nn.functional.pad(t, (0, 0, length - t.shape[-2], 0)) for t in tensors], dim=0)
