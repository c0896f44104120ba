"""A tiny Marian translator made on the spot: a real SentencePiece model, a real ``MarianTokenizer`` and a
small ``MarianMTModel`` saved with ``save_pretrained``, laid out as an opus-mt download is (``source.spm``,
``target.spm``, ``vocab.json``, ``tokenizer_config.json`` naming the languages, a generation config with
opus-mt's settings: four beams, ``<pad>`` banned, ``</s>`` forced at the length limit).

No weights can be downloaded here, so the tests build this one. It is trained for a few seconds to copy
its source (a "translation" from the made-up ``es`` into ``en`` that is the identity), so its greedy
output ends with ``</s>`` after a sentence's length, as a real translator's does, rather than running to
its budget as random weights would.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = (
    *("the", "house", "is", "red", "and", "the", "sky", "is", "blue", "we", "go", "to", "the", "market"),
    *("today", "she", "reads", "a", "book", "tomorrow", "they", "will", "travel", "far", "good"),
    *("evening", "everyone", "thank", "you", "for", "coming", "here", "now"),
)
SEED = 20261127


def sentences(count: int, rng: random.Random) -> list[str]:
    out = []
    for _ in range(count):
        words = rng.choices(WORDS, k=rng.randint(2, 7))
        out.append(" ".join(words).capitalize() + rng.choice((".", "!", "?")))
    return out


def build_tiny_marian(
    directory: Path, *, source_lang: str | None = "es", target_lang: str | None = "en", steps: int = 900
) -> Path:
    """Write the checkpoint into ``directory`` and return it. ``source_lang``/``target_lang`` None: the
    tokenizer config names no languages (a checkpoint whose pair must be given on the command line)."""
    import sentencepiece as spm
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(sentences(400, rng)) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "spm"),
        vocab_size=96,
        model_type="unigram",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        minloglevel=2,
    )
    corpus.unlink()
    model_file = directory / "spm.model"
    for name in ("source.spm", "target.spm"):
        (directory / name).write_bytes(model_file.read_bytes())
    pieces = [line.split("\t")[0] for line in (directory / "spm.vocab").read_text().splitlines()]
    model_file.unlink()
    (directory / "spm.vocab").unlink()
    # opus-mt's layout: </s> 0, <unk> 1, the pieces, <pad> last
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = MarianTokenizer(
        str(directory / "source.spm"),
        str(directory / "target.spm"),
        str(directory / "vocab.json"),
        source_lang=source_lang,
        target_lang=target_lang,
    )
    pad = vocab["<pad>"]
    config = MarianConfig(
        vocab_size=len(vocab),
        decoder_vocab_size=len(vocab),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=256,
        activation_function="swish",
        pad_token_id=pad,
        eos_token_id=0,
        decoder_start_token_id=pad,
        forced_eos_token_id=0,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    torch.manual_seed(SEED)
    model = MarianMTModel(config)
    _train_to_copy(model, tokenizer, rng, steps)
    model.eval()
    model.generation_config = GenerationConfig(
        bad_words_ids=[[pad]],
        bos_token_id=0,
        decoder_start_token_id=pad,
        eos_token_id=0,
        forced_eos_token_id=0,
        max_length=64,
        num_beams=4,
        pad_token_id=pad,
        renormalize_logits=True,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _train_to_copy(model: object, tokenizer: object, rng: random.Random, steps: int) -> None:
    import torch

    model_: torch.nn.Module = model  # type: ignore[assignment]
    optimiser = torch.optim.AdamW(model_.parameters(), lr=3e-3)
    model_.train()
    for _ in range(steps):
        batch = sentences(32, rng)
        inputs = tokenizer(batch, text_target=batch, return_tensors="pt", padding=True)  # type: ignore[operator]
        labels = inputs["labels"]
        labels[labels == tokenizer.pad_token_id] = -100  # type: ignore[attr-defined]
        loss = model_(**inputs).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
