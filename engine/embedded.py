"""The placeholder checkpoint (``--model placeholder``): a small DiffusionGemma that needs nothing.

An untrained, deterministically initialised small DiffusionGemma config (text part only, minimal
vision tower) with a byte-level tokenizer, for working on the machinery. It is written with
``save_pretrained`` into the local cache once and then loaded with ``from_pretrained`` through the
same code path as any real DiffusionGemma checkpoint, so batching, drafts, finals and latency are
exercised for real. Its output is not a translation: its weights are random. (The embedded default,
the trained canvas translators, ships in ``engine/models/``.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from engine.diffusion.config import text_only_config

EMBEDDED_NAME = "embedded-dev-v1"
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<ctx>", "<sep>", "<src>", "<tgt>")
PAD_ID, EOS_ID, BOS_ID = 0, 1, 2
_INIT_SEED = 20261127


def cache_root() -> Path:
    """Where livecanvas keeps generated models: ``$LIVECANVAS_CACHE`` or ``~/.cache/livecanvas``."""
    configured = os.environ.get("LIVECANVAS_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "livecanvas"


def ensure_embedded(root: Path | None = None) -> Path:
    """The embedded checkpoint's directory, created on first use (atomically)."""
    target = (root or cache_root()) / "models" / EMBEDDED_NAME
    if (target / "livecanvas.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}-", dir=target.parent))
    try:
        _write_checkpoint(staging)
        try:
            staging.rename(target)
        except OSError:  # another process won the race; use its copy
            if not (target / "livecanvas.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _byte_level_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    fast_tokenizer: Any = PreTrainedTokenizerFast
    return fast_tokenizer(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        additional_special_tokens=list(SPECIAL_TOKENS[3:]),
    )


def _write_checkpoint(directory: Path) -> None:
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        DiffusionGemmaGenerationConfig,
        EntropyBoundSamplerConfig,
    )

    tokenizer = _byte_level_tokenizer()
    vocab_size = 320  # 7 specials + 256 bytes, rounded up
    text_settings: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        global_head_dim=64,
        num_experts=2,
        top_k_experts=1,
        moe_intermediate_size=256,
        sliding_window=1024,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        max_position_embeddings=2048,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
    )
    config = text_only_config(text_settings, canvas_length=48, image_token_ids=(PAD_ID, PAD_ID, PAD_ID))
    torch.manual_seed(_INIT_SEED)
    model: Any = DiffusionGemmaForBlockDiffusion(config)
    model.eval()
    generation_config: Any = DiffusionGemmaGenerationConfig
    model.generation_config = generation_config(
        max_new_tokens=256,
        max_denoising_steps=12,
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=0.1),
        t_min=0.4,
        t_max=0.8,
        stability_threshold=1,
        confidence_threshold=0.005,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    card = {
        "name": EMBEDDED_NAME,
        "prompt": "tagged",
        "trained": False,
        "note": "untrained placeholder: random weights, byte-level tokenizer; output is not a translation",
        "early_exit": {"draft_step": 2, "draft_confidence": 0.5, "redraft_every": 0},
    }
    (directory / "livecanvas.json").write_text(json.dumps(card, indent=2) + "\n")
