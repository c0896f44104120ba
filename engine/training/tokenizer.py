"""The translator's tokenizer: a byte-level BPE trained on the corpus's English and teacher Portuguese.

This module owns the vocabulary: livecanvas's special tokens first (the ids the prompt template and
the engine rely on, shared with the embedded placeholder), then merges learned from the training
split. A vocabulary fitted to our two languages is far smaller than the teacher's 32k, which keeps
the embedding matrix and the output layer cheap on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.embedded import SPECIAL_TOKENS


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path) -> Any:
    """Train, save to ``out_dir`` (``save_pretrained`` layout) and return a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    for index, token in enumerate(SPECIAL_TOKENS):
        if core.token_to_id(token) != index:
            raise RuntimeError(f"special token {token} did not get id {index}")
    fast_tokenizer: Any = PreTrainedTokenizerFast
    tokenizer = fast_tokenizer(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        additional_special_tokens=list(SPECIAL_TOKENS[3:]),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)
