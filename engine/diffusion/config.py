"""Configs for text-only DiffusionGemma checkpoints: the one place that pairs a text config with the
minimal vision tower the ``DiffusionGemmaConfig`` requires (left unset, it builds Gemma 4's default
tower of about 167M parameters)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MINIMAL_VISION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 16,
}


def text_only_config(
    text_settings: Mapping[str, Any],
    *,
    canvas_length: int,
    image_token_ids: tuple[int, int, int],
    **settings: Any,
) -> Any:
    """A ``DiffusionGemmaConfig`` from ``text_settings`` (``DiffusionGemmaTextConfig`` fields) with a
    minimal vision tower. ``image_token_ids`` are the begin-, end- and image-token ids, which a
    text-only checkpoint never uses (any reserved id will do); ``settings`` go to the config itself."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaTextConfig
    from transformers.models.gemma4 import Gemma4VisionConfig

    begin_image, end_image, image = image_token_ids
    return DiffusionGemmaConfig(
        text_config=DiffusionGemmaTextConfig(**text_settings),
        vision_config=Gemma4VisionConfig(**MINIMAL_VISION),
        canvas_length=canvas_length,
        boi_token_id=begin_image,
        eoi_token_id=end_image,
        image_token_id=image,
        **settings,
    )
