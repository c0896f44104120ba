"""Shared fixtures: an offline environment, a tiny real DiffusionGemma checkpoint, a tiny Marian translator,
the embedded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def livecanvas_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache for generated checkpoints, unless the caller already provides one."""
    configured = os.environ.get("LIVECANVAS_CACHE")
    if configured:
        return Path(configured)
    path = tmp_path_factory.mktemp("livecanvas-cache")
    os.environ["LIVECANVAS_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A very small random DiffusionGemma, saved with save_pretrained (two layers, canvas 16)."""
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion

    from engine.diffusion.config import text_only_config

    text = dict(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        global_head_dim=32,
        num_experts=2,
        top_k_experts=1,
        moe_intermediate_size=128,
        sliding_window=256,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        initializer_range=0.1,
    )
    config = text_only_config(
        text,
        canvas_length=16,
        image_token_ids=(3, 4, 5),
        # A wider init than the default 0.02 gives peaked, well-separated token entropies like a trained
        # model's; at 0.02 every position's entropy is ~ln(V) within 1e-5, so float noise decides ties.
        initializer_range=0.1,
    )
    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("tiny-diffusiongemma")
    DiffusionGemmaForBlockDiffusion(config).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path):  # type: ignore[no-untyped-def]
    from transformers import DiffusionGemmaForBlockDiffusion

    return DiffusionGemmaForBlockDiffusion.from_pretrained(tiny_checkpoint).eval()


@pytest.fixture(scope="session")
def tiny_marian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Hugging Face Marian checkpoint (``es`` -> ``en``, trained to copy), laid out as an opus-mt
    download (tests/tiny_marian.py)."""
    from tests.tiny_marian import build_tiny_marian

    return build_tiny_marian(tmp_path_factory.mktemp("tiny-marian") / "opus-mt-es-en")
