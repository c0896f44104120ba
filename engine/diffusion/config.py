"""DiffusionGemma's configuration: the decoding settings its backend reads beyond
:class:`engine.types.DiffusionParams` (from a checkpoint's generation config), and text-only
checkpoint configs, the one place that pairs a text config with the minimal vision tower the
``DiffusionGemmaConfig`` requires (left unset, it builds Gemma 4's default tower of about 167M
parameters). Nothing here imports torch or transformers at import time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class GemmaSettings:
    """DiffusionGemma's own decoding rules (the names of its generation config), one set per loaded
    checkpoint: the temperature falls linearly from ``t_max`` at a block's first step to ``t_min`` at
    its last; a block stops early once its argmax canvas has been the same for
    ``stability_threshold`` steps and the mean token entropy is below ``confidence_threshold``."""

    t_min: float = 0.4
    t_max: float = 0.8
    stability_threshold: int = 1
    confidence_threshold: float = 0.005

    def __post_init__(self) -> None:
        if not 0 <= self.t_min < self.t_max:
            raise ValueError(f"need 0 <= t_min < t_max, got t_min={self.t_min} t_max={self.t_max}")
        if self.stability_threshold < 0:
            raise ValueError(f"stability_threshold must be >= 0, got {self.stability_threshold}")
        if self.confidence_threshold <= 0:
            raise ValueError(f"confidence_threshold must be > 0, got {self.confidence_threshold}")

    @classmethod
    def of(cls, generation_config: Any) -> GemmaSettings:
        """A checkpoint's generation config's settings (these defaults where it sets none)."""
        defaults = cls()

        def pick(name: str) -> Any:
            value = getattr(generation_config, name, None)
            return getattr(defaults, name) if value is None else value

        return cls(
            t_min=float(pick("t_min")),
            t_max=float(pick("t_max")),
            stability_threshold=int(pick("stability_threshold")),
            confidence_threshold=float(pick("confidence_threshold")),
        )


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
