"""The translator's training pieces without a training run: corpus filters, examples, the diffusion
objective, the schedule, checksums and the model card."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.embedded import BOS_ID, EOS_ID, PAD_ID
from engine.errors import ModelResolutionError
from engine.models import resolve_model
from engine.training import card, corpus, export, teacher, train


def test_sentences_are_split_and_filtered_like_caption_windows() -> None:
    text = "He came home late.  She said: “Where were you?” Nobody answered. Ok."
    assert corpus.split_sentences(text) == [
        "He came home late.",
        "She said: “Where were you?”",
        "Nobody answered.",
        "Ok.",
    ]
    assert corpus.acceptable("Nobody answered the phone.")
    assert not corpus.acceptable("Ok then")  # under 3 words
    assert not corpus.acceptable(" ".join(["word"] * 41))
    assert not corpus.acceptable("Enter a valid %(value)s please now")
    assert not corpus.acceptable("See https://example.org for more")
    assert not corpus.acceptable("1234 5678 90 12")
    assert corpus.dedup_key("Hello, World!") == corpus.dedup_key("hello world")


def test_a_long_target_becomes_canvas_blocks_closed_by_eos() -> None:
    blocks = train.blocks_of([BOS_ID, 9, 10], list(range(20, 26)), canvas_length=4)
    assert [b.canvas for b in blocks] == [(20, 21, 22, 23), (24, 25, EOS_ID, PAD_ID)]
    # the second block's prompt carries the first block, as the engine's next_block does
    assert blocks[1].prompt == (BOS_ID, 9, 10, 20, 21, 22, 23)
    exact = train.blocks_of([BOS_ID], [20, 21, 22], canvas_length=4)
    assert [b.canvas for b in exact] == [(20, 21, 22, EOS_ID)]


def test_context_pairs_come_from_the_same_document(tmp_path: Path) -> None:
    from engine.training.tokenizer import train_tokenizer

    rows: list[dict[str, Any]] = [
        {"id": "a", "text": "The first line here.", "doc": "d1", "index": 0},
        {"id": "b", "text": "The second line here.", "doc": "d1", "index": 1},
        {"id": "c", "text": "Another document starts.", "doc": "d2", "index": 0},
    ]
    targets = {"a": "A primeira linha.", "b": "A segunda linha.", "c": "Outro documento."}
    tok = train_tokenizer([r["text"] for r in rows] + list(targets.values()), 400, tmp_path)
    examples = train.make_examples(rows, targets, tok, 16, context_rate=1.0, seed=0)
    prompts = [tok.decode(list(e.prompt)) for e in examples]
    assert prompts[0] == "<bos><src>en:The first line here.<tgt>pt-BR:"
    assert (
        prompts[1]
        == "<bos><ctx>The first line here.<sep>A primeira linha.<src>en:The second line here.<tgt>pt-BR:"
    )
    assert "<ctx>" not in prompts[2]
    assert tok.decode([t for t in examples[1].canvas if t not in (EOS_ID, PAD_ID)]) == "A segunda linha."


def test_padded_batches_give_each_row_its_unpadded_logits() -> None:
    model = train.build_model(train.DRY_RUN_SIZE, seed=3).eval()
    long = train.Example(tuple(range(10, 30)), tuple(range(40, 56)))
    short = train.Example(tuple(range(10, 14)), tuple(range(60, 76)))
    with torch.no_grad():
        both = train.collate([long, short])
        batched = train.diffusion_logits(model, both, both["canvas"])
        for row, example in enumerate((long, short)):
            alone = train.collate([example])
            single = train.diffusion_logits(model, alone, alone["canvas"])
            torch.testing.assert_close(batched[row], single[0], atol=1e-5, rtol=1e-5)


def test_uniform_corruption_rate_is_drawn_per_row() -> None:
    canvas = torch.zeros((4000, 32), dtype=torch.long)
    noisy = train.corrupt(canvas, vocab_size=1000, generator=torch.Generator().manual_seed(0))
    changed = (noisy != canvas).float().mean(dim=1)
    assert 0.45 < float(changed.mean()) < 0.55  # E[t] = 1/2 (a draw of the clean token is rare)
    assert float(changed.min()) < 0.05
    assert float(changed.max()) > 0.95
    wide = torch.zeros((2000, 512), dtype=torch.long)  # wide rows: each row's rate is read precisely
    floored = train.corrupt(
        wide, vocab_size=1000, generator=torch.Generator().manual_seed(0), noise_floor=0.5
    )
    floored_rates = (floored != wide).float().mean(dim=1)
    assert float(floored_rates.min()) > 0.35
    assert 0.7 < float(floored_rates.mean()) < 0.8


def test_the_objective_learns_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = train.build_model(train.DRY_RUN_SIZE, seed=4)
    rng = random.Random(0)
    examples = [
        train.Example(
            tuple(rng.randrange(10, 200) for _ in range(8)), tuple(rng.randrange(10, 200) for _ in range(16))
        )
        for _ in range(8)
    ]
    batch = train.collate(examples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for step in range(60):
        loss = train.diffusion_loss(model, batch, generator, self_condition=step % 2 == 0)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10


def test_learning_rate_warms_up_then_decays_to_a_floor() -> None:
    settings = train.TrainSettings(learning_rate=1e-3, warmup_steps=10, max_steps=110)
    assert train.learning_rate(0, settings) == pytest.approx(1e-4)
    assert train.learning_rate(9, settings) == pytest.approx(1e-3)
    assert train.learning_rate(60, settings) < 1e-3
    assert train.learning_rate(110, settings) == pytest.approx(1e-4)
    assert train.learning_rate(500, settings) == pytest.approx(1e-4)


def test_checksums_refuse_a_tampered_checkpoint(tmp_path: Path) -> None:
    model = train.build_model(train.DRY_RUN_SIZE, seed=5)
    from engine.embedded import _byte_level_tokenizer

    target = export.export_checkpoint(
        model,
        _byte_level_tokenizer(),
        {"name": "t", "prompt": "tagged"},
        tmp_path / "ckpt",
        extra_files={"README.md": "x"},
    )
    assert export.verify_checksums(target) == []
    assert resolve_model(str(target)).path == target
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert export.verify_checksums(target) == ["model.safetensors does not match its sha256"]
    with pytest.raises(ModelResolutionError, match="checksum"):
        resolve_model(str(target))
    (target / "tokenizer.json").unlink()
    assert "tokenizer.json is missing" in export.verify_checksums(target)


def test_a_torn_teacher_line_is_dropped_and_translated_again(tmp_path: Path) -> None:
    path = tmp_path / "teacher.jsonl"
    path.write_text(json.dumps({"id": "a", "target": "Olá."}) + "\n" + '{"id": "b", "tar')
    assert teacher.load_teacher(path) == {"a": "Olá."}
    done = teacher.translate_all([("a", "Hello."), ("b", "Good morning.")], path, workers=1)
    assert done["a"] == "Olá."  # kept, not translated again
    assert "bom dia" in done["b"].lower()
    assert teacher.load_teacher(path) == done


def _summary(final: float, draft: float) -> dict[str, Any]:
    scores = {"chrf": final, "bleu": 1.0}
    row = {
        "steps": "adaptive",
        "test_vs_teacher": {
            "final": scores,
            "draft": scores,
            "mean_steps": 3.0,
            "seconds_per_sentence": 0.01,
        },
        "human_refs": {"final": scores, "draft": {"chrf": draft, "bleu": 0.5}, "mean_steps": 3.0},
    }
    return {
        "name": "m",
        "parameters": 2_000_000,
        "text_parameters": 1_000_000,
        "size": {
            "vocab_size": 8000,
            "hidden_size": 256,
            "num_hidden_layers": 4,
            "num_experts": 2,
            "canvas_length": 32,
        },
        "training": {
            "step": 10,
            "tokens": 1e6,
            "seconds": 600.0,
            "epoch": 0,
            "hardware": "cpu",
            "settings": {"batch_size": 64, "learning_rate": 1e-3},
        },
        "quality": [row],
        "teacher": {"human_refs": {"chrf": 60.0, "bleu": 30.0}, "speed": {"seconds_per_sentence": 0.01}},
        "sources": {
            "sources": {"x": {"sentences": 5, "licence": "MIT", "origin": "here"}},
            "splits": {"train": 1, "dev": 1, "test": 1, "human_test": 1},
            "filters": "f",
        },
    }


def test_the_card_reports_the_bars_honestly() -> None:
    met = card.bars(_summary(final=52.0, draft=41.0))
    assert met["final_met"]
    assert met["draft_met"]
    assert met["final_gap"] == 8.0
    missed = card.bars(_summary(final=45.0, draft=30.0))
    assert not missed["final_met"]
    assert not missed["draft_met"]
    text = card.render_card(_summary(final=45.0, draft=30.0), [], notes="tried X")
    assert "**not met**" in text
    assert "tried X" in text
    assert "| adaptive | 45.0 / 1.0 |" in text
