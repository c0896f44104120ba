"""The fast sampler's decoder forward and logit arithmetic equal DiffusionGemma's decoder and head and
the reference rules to float rounding (bfloat16 self-conditioning: closely), including at extreme logits."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from engine.diffusion.lean import (
    decoder_hidden_states,
    entropy_probs_argmax,
    self_conditioning_weights,
    soft_cap_and_temperature_,
)
from engine.diffusion.rules import entropy_and_probs


def raw_logits(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn((3, 5, 97), generator=generator) * 20.0  # (B, L, V)
    logits[0, 0, 3] = 1e4  # far past the cap: exp(2x / cap) overflows to inf
    logits[1, 2, :] = -1e4
    logits[2, 4, :] = 0.0  # a flat row: entropy log(V), argmax the first token
    return logits


@pytest.mark.parametrize("cap", [30.0, 5.0, None])
def test_soft_cap_and_temperature_matches_the_model_head(cap: float | None) -> None:
    logits = raw_logits(0)
    temperature = torch.tensor([0.5, 1.0, 0.8])
    capped = logits if cap is None else torch.tanh(logits / cap) * cap  # the model's own head
    expected = capped / temperature[:, None, None]
    result = soft_cap_and_temperature_(logits.clone(), cap, temperature)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-4)


def test_soft_cap_works_in_place() -> None:
    logits = raw_logits(1)
    result = soft_cap_and_temperature_(logits, 30.0, torch.ones(3))
    assert result.data_ptr() == logits.data_ptr()


@pytest.mark.parametrize("seed", [2, 3])
def test_entropy_probs_argmax_match_the_reference_rules(seed: int) -> None:
    logits = soft_cap_and_temperature_(raw_logits(seed), 30.0, torch.tensor([0.3, 1.0, 2.0]))
    entropy, probs, argmax = entropy_probs_argmax(logits)
    reference_entropy, reference_probs = entropy_and_probs(logits)
    torch.testing.assert_close(entropy, reference_entropy, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(probs, reference_probs)
    assert torch.equal(argmax, logits.argmax(dim=-1))
    assert entropy[2, 4].item() == pytest.approx(torch.log(torch.tensor(97.0)).item(), abs=1e-4)
    assert entropy.min() >= -1e-4  # a one-hot row has entropy 0, never clearly below


@pytest.mark.parametrize("bfloat16", [False, True])
def test_decoder_forward_from_probabilities_matches_the_models(tiny_model: Any, bfloat16: bool) -> None:
    from transformers import DynamicCache

    model = tiny_model
    config = model.config.get_text_config()
    prompt = torch.tensor([[2, 10, 11, 12, 13, 14]])  # (1, P)
    cache = DynamicCache(config=config)
    with torch.inference_mode():
        model.model.encoder(input_ids=prompt, cache=cache, position_ids=torch.arange(6)[None])
        canvas = torch.randint(
            0, config.vocab_size, (1, model.config.canvas_length), generator=torch.Generator().manual_seed(0)
        )
        previous_logits = torch.randn((1, model.config.canvas_length, config.vocab_size)) * 3.0
        positions = torch.arange(6, 6 + model.config.canvas_length)[None]
        decoder = model.model.decoder
        mask_mapping = decoder.create_diffusion_decoder_attention_mask(
            config=model.config, inputs_embeds=decoder.embed_tokens(canvas), cache=cache
        )
        expected = decoder(
            decoder_input_ids=canvas,
            cache=cache,
            self_conditioning_logits=previous_logits,
            decoder_attention_mask=mask_mapping,
            decoder_position_ids=positions,
        ).last_hidden_state
        weight = decoder.embed_tokens.weight
        hidden = decoder_hidden_states(
            model,
            canvas,
            torch.softmax(previous_logits, dim=-1),
            None,
            weight.to(torch.bfloat16) if bfloat16 else weight,
            cache=cache,
            mask_mapping=mask_mapping,
            position_ids=positions,
        )
        first_step = decoder(
            decoder_input_ids=canvas,
            cache=cache,
            decoder_attention_mask=mask_mapping,
            decoder_position_ids=positions,
        ).last_hidden_state
        no_signal = decoder_hidden_states(
            model, canvas, None, None, weight, cache=cache, mask_mapping=mask_mapping, position_ids=positions
        )
    if bfloat16:
        # about three significant digits in the product, amplified by this random model's layers (1.5%
        # here): close, not equal; a wrong scale or a missing signal would be off by tens of percent
        relative_error = ((hidden - expected).norm() / expected.norm()).item()
        assert relative_error < 0.05
    else:
        torch.testing.assert_close(hidden, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(no_signal, first_step, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first_step, expected, atol=1e-3)  # the signal does matter


def test_self_conditioning_weights_are_bfloat16_only_where_the_cpu_multiplies_it(tiny_model: Any) -> None:
    weights = self_conditioning_weights(tiny_model)
    assert weights.shape == tiny_model.model.decoder.embed_tokens.weight.shape
    expected = torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
    assert weights.dtype == expected
