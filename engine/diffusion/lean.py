"""The ``fast`` sampler's decoder forward and logit arithmetic: the same quantities as DiffusionGemma's
decoder and head and :mod:`engine.diffusion.rules`, with less vocabulary-sized work.

On a CPU a decoding step of a small model is dominated by work over ``(B, L, V)`` tensors, not by the
transformer layers: every out-of-place pass allocates (and page-faults) a fresh ``B * L * V`` buffer,
``torch.tanh`` is several times slower than ``torch.exp`` on float32, and the self-conditioning
signal (the previous step's probabilities times the embedding matrix) is a ``(B*L, V) x (V, H)``
product. So here:

* the decoder takes the previous step's probabilities, which the step computed anyway, instead of
  its logits (which the model would soft-max again), and multiplies them with the embedding matrix in
  bfloat16 where the CPU has bfloat16 instructions (float32 accumulation; about 4x faster);

* the soft cap and the step temperature are applied in place, with ``tanh`` written through ``exp``;
* the entropy comes from one softmax: ``H = logsumexp - sum(p * logits)``, with the log-sum-exp
  recovered from the most likely token (``logsumexp = logit_max - log p_max``) instead of its own
  passes.

The results equal the reference arithmetic to float rounding, and the bfloat16 signal to about three
significant digits (tested), not bit for bit: the ``exact`` sampler, whose promise is ``generate()``'s
results, keeps the model's own path.

Shapes: ``B`` canvases, ``L`` canvas length, ``V`` vocabulary size.
"""

from __future__ import annotations

from typing import Any

import torch


def soft_cap_and_temperature_(
    logits: torch.Tensor, cap: float | None, temperature: torch.Tensor
) -> torch.Tensor:
    """``cap * tanh(logits / cap) / temperature`` in place (``logits / temperature`` without a cap).

    ``logits``: (B, L, V) float32, overwritten and returned; ``temperature``: (B,). ``tanh`` is taken as
    ``1 - 2 / (exp(2x) + 1)``, which stays finite at both ends: ``exp`` overflowing to ``inf`` gives 1.
    """
    scale = temperature.to(logits.dtype).reciprocal()[:, None, None]  # (B, 1, 1)
    if cap is None:
        return logits.mul_(scale)
    logits.mul_(2.0 / cap).exp_().add_(1.0).reciprocal_()  # 1 / (exp(2x / cap) + 1)
    return logits.mul_(-2.0 * cap).add_(cap).mul_(scale)


def entropy_probs_argmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entropy in nats (B, L), probabilities (B, L, V) and most likely token (B, L) of finite logits."""
    probs = torch.softmax(logits, dim=-1)  # (B, L, V)
    argmax = torch.argmax(logits, dim=-1)  # (B, L)
    index = argmax[..., None]  # (B, L, 1)
    # logsumexp = logit_max - log p_max; p_max >= 1 / V, so the log is always finite. The log runs in
    # float64: over a small (B, L) tensor, torch takes a vector path for most elements and a scalar one
    # for the tail, which can differ in the last float32 bit, and would make a row's entropy depend on
    # its place in the batch; rounded back from float64 the two agree.
    log_p_max = probs.gather(-1, index).squeeze(-1).double().log().to(logits.dtype)
    log_sum_exp = logits.gather(-1, index).squeeze(-1) - log_p_max
    expected_logit = (probs * logits).sum(dim=-1)  # (B, L)
    return log_sum_exp - expected_logit, probs, argmax


def self_conditioning_weights(model: Any) -> torch.Tensor:
    """The decoder's embedding matrix (V, H) for the self-conditioning product: a bfloat16 copy where
    the CPU multiplies bfloat16 natively (or on a GPU), else the float32 matrix itself."""
    weight: torch.Tensor = model.model.decoder.embed_tokens.weight
    fast_bf16 = weight.device.type == "cuda" or (
        weight.device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )
    return weight.detach().to(torch.bfloat16) if fast_bf16 and weight.dtype == torch.float32 else weight


def decoder_hidden_states(
    model: Any,
    canvas: torch.Tensor,
    previous_probs: torch.Tensor | None,
    previous_mask: torch.Tensor | None,
    embedding: torch.Tensor,
    *,
    cache: Any,
    mask_mapping: dict[str, Any],
    position_ids: torch.Tensor,
) -> torch.Tensor:
    """DiffusionGemma's canvas decoder (``DiffusionGemmaDecoderModel.forward``) on a stacked batch,
    with the self-conditioning signal made from ``previous_probs`` (B, L, V), the softmax of the
    previous step's logits, instead of the logits. ``previous_mask`` (B,) zeroes rows on their first
    step; ``previous_probs`` None: every row is. Returns the final hidden states (B, L, H)."""
    decoder = model.model.decoder
    text_config = decoder.text_config
    inputs_embeds = decoder.embed_tokens(canvas)  # (B, L, H)
    if previous_probs is None:
        soft_embeddings = torch.zeros_like(inputs_embeds)
    else:
        product = torch.matmul(previous_probs.to(embedding.dtype), embedding)  # (B, L, H)
        scale = decoder.embed_tokens.embed_scale.to(inputs_embeds.dtype)
        soft_embeddings = product.to(inputs_embeds.dtype) * scale
        if previous_mask is not None:
            soft_embeddings = soft_embeddings * previous_mask.to(soft_embeddings.dtype)[:, None, None]
    hidden = decoder.self_conditioning(inputs_embeds, soft_embeddings)
    rotary = {kind: decoder.rotary_emb(hidden, position_ids, kind) for kind in decoder.unique_layer_types}
    for index, layer in enumerate(decoder.layers[: text_config.num_hidden_layers]):
        kind = text_config.layer_types[index]
        hidden = layer(
            hidden,
            position_embeddings=rotary[kind],
            attention_mask=mask_mapping[kind],
            position_ids=position_ids,
            cache=cache,
        )
    result: torch.Tensor = decoder.norm(hidden)
    return result
