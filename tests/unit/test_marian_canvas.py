"""The canvas drafter and verifier of a user's Marian checkpoint (engine/diffusion/marian_canvas.py),
on the tiny Marian made by tests/tiny_marian.py: verified finals are ``generate``'s greedy output
exactly (batched, with its banned tokens and its forced end), the drafter's checkpoint holds its
trained parts alone and refuses another teacher, and mask-predict training lowers its loss."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.diffusion import canvas_denoiser
from engine.diffusion.canvas import MAX_CANVAS
from engine.diffusion.canvas_denoiser import CanvasDenoiser, Direction
from engine.diffusion.marian_canvas import DRAFTER_WEIGHTS, MarianCanvasDrafter, MarianPieces, MarianVerifier
from engine.diffusion.mask_schedule import CanvasSettings
from engine.errors import ModelResolutionError
from engine.marian_greedy import GreedyRules
from engine.training import canvas_train, evaluate
from engine.training.teacher_recipe import Teacher, load_teacher_checkpoint
from engine.types import DiffusionParams, EarlyExitParams
from tests.tiny_marian import sentences

FILL = 4
SERVED = DiffusionParams(max_denoising_steps=FILL + MAX_CANVAS, entropy_bound=0.5)


@pytest.fixture(scope="module")
def teacher(tiny_marian: Path) -> Teacher:
    return load_teacher_checkpoint(str(tiny_marian))


def generate(teacher: Teacher, texts: list[str], **settings: Any) -> list[str]:
    inputs = teacher.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        output = teacher.model.generate(**inputs, num_beams=1, do_sample=False, **settings)
    return [str(t) for t in teacher.tokenizer.batch_decode(output, skip_special_tokens=True)]


def served(teacher: Teacher, drafter: MarianCanvasDrafter, verifier: MarianVerifier) -> CanvasDenoiser:
    direction = Direction("es-en", drafter, teacher.pieces, None, CanvasSettings(fill_steps=FILL), verifier)
    return CanvasDenoiser([direction])


def verifier_of_4(teacher: Teacher, *, forced_end: bool) -> MarianVerifier:
    """The teacher's verifier with an output limit of 4 tokens (``max_length`` 5)."""
    rules = GreedyRules.of(teacher.model.generation_config, teacher.model.config)
    return MarianVerifier(
        teacher.model,
        rules.banned,
        start_token_id=rules.start_token_id,
        max_new_tokens=4,
        forced_end=forced_end,
    )


def translate(denoiser: CanvasDenoiser, texts: list[str]) -> list[evaluate.Translation]:
    early = EarlyExitParams(draft_step=FILL)
    return evaluate.canvas_translate(denoiser, 0, texts, diffusion=SERVED, early_exit=early)


def test_verified_finals_are_generates_greedy_output_in_a_batch(teacher: Teacher) -> None:
    texts = sentences(24, random.Random(7))
    denoiser = served(teacher, teacher.drafter(), teacher.verifier())
    result = translate(denoiser, texts)
    assert [r.final for r in result] == generate(teacher, texts)
    assert all(r.draft_steps == FILL for r in result)  # the first draft at the fill step
    assert all("<pad>" not in r.draft for r in result)  # banned for the drafter too


def test_the_verifier_forces_the_end_where_generate_does(teacher: Teacher) -> None:
    texts = [t for t in sentences(40, random.Random(8)) if len(t.split()) >= 5][:6]
    result = translate(served(teacher, teacher.drafter(), verifier_of_4(teacher, forced_end=True)), texts)
    expected = generate(teacher, texts, max_length=5)  # the start token and 4 more, </s> forced last
    assert [r.final for r in result] == expected
    assert all(len(teacher.pieces.encode(r.final).ids) <= 3 for r in result)


def test_an_output_longer_than_its_canvas_grows_it_and_stays_the_teachers(
    teacher: Teacher, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [t for t in sentences(40, random.Random(10)) if len(t.split()) >= 5][:6]
    monkeypatch.setattr(canvas_denoiser, "canvas_length_for", lambda pieces, maximum=64: 3)
    direction = Direction(
        "es-en",
        teacher.drafter(),
        teacher.pieces,
        None,
        CanvasSettings(fill_steps=FILL),
        teacher.verifier(),
    )
    result = translate(CanvasDenoiser([direction]), texts)
    assert [r.final for r in result] == generate(teacher, texts)  # every canvas started at 3 slots
    assert all(len(teacher.pieces.encode(r.final).ids) > 3 for r in result)


def test_without_a_forced_end_the_output_stops_at_the_length_limit_as_generates(teacher: Teacher) -> None:
    texts = [t for t in sentences(40, random.Random(11)) if len(t.split()) >= 5][:6]
    result = translate(served(teacher, teacher.drafter(), verifier_of_4(teacher, forced_end=False)), texts)
    assert [r.final for r in result] == generate(teacher, texts, max_length=5, forced_eos_token_id=None)


def test_pieces_read_a_source_as_the_checkpoints_tokenizer_does(teacher: Teacher) -> None:
    text = "The house is red."
    ids = teacher.tokenizer(text)["input_ids"]
    assert ids[-1] == teacher.tokenizer.eos_token_id
    assert MarianPieces(teacher.tokenizer).encode(text).ids == ids[:-1]
    assert MarianPieces(teacher.tokenizer).decode(ids) == text


def test_the_checkpoint_holds_the_trained_parts_and_refuses_another_teacher(
    teacher: Teacher, tmp_path: Path
) -> None:
    drafter = teacher.drafter()
    with torch.no_grad():
        drafter.mask_embedding.fill_(0.25)
    drafter.save(tmp_path / DRAFTER_WEIGHTS)
    loaded = MarianCanvasDrafter.load(tmp_path / DRAFTER_WEIGHTS, teacher.model, teacher.rules.banned)
    saved, again = drafter.trained_state(), loaded.trained_state()
    assert set(saved) == set(again)
    assert all(torch.equal(saved[n], again[n]) for n in saved)
    assert not any(name.startswith(("encoder.", "embedding.", "output.")) for name in saved)
    from transformers import MarianConfig, MarianMTModel

    config = MarianConfig(**{**teacher.model.config.to_dict(), "decoder_ffn_dim": 32})
    with pytest.raises(ModelResolutionError, match="not a canvas drafter of this Marian checkpoint"):
        MarianCanvasDrafter.load(tmp_path / DRAFTER_WEIGHTS, MarianMTModel(config).eval())


def test_a_checkpoint_whose_end_token_is_not_zero_is_refused(teacher: Teacher) -> None:
    from transformers import MarianConfig, MarianMTModel

    config = MarianConfig(**{**teacher.model.config.to_dict(), "eos_token_id": 3})
    with pytest.raises(ModelResolutionError, match="</s> is id 3"):
        MarianCanvasDrafter.from_teacher(MarianMTModel(config))


def test_mask_predict_training_over_the_whole_vocabulary_lowers_the_loss(teacher: Teacher) -> None:
    texts = sentences(96, random.Random(9))
    from engine.training.distill import Pair

    pairs = [
        Pair(str(i), text, target, source, ids)
        for i, (text, (source, ids, target)) in enumerate(zip(texts, teacher.translate(texts), strict=True))
    ]
    examples = canvas_train.make_examples(pairs)
    drafter = teacher.drafter()
    settings = canvas_train.TrainSettings(batch_size=32, warmup_steps=2, bf16=False)
    for parameter in drafter.frozen_parameters():
        parameter.requires_grad_(False)

    def loss() -> float:
        with torch.no_grad():
            generator = torch.Generator().manual_seed(0)
            return float(canvas_train.masked_loss(drafter, examples[:64], None, settings, generator))

    before = loss()
    frozen = {n: p.detach().clone() for n, p in drafter.named_parameters() if not p.requires_grad}
    optimiser = torch.optim.AdamW([p for p in drafter.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    rng = random.Random(1)
    batches = canvas_train.batches(examples, settings.batch_size, rng)
    for _ in range(30):
        optimiser.zero_grad()
        canvas_train.masked_loss(drafter, next(batches), None, settings, generator).backward()
        optimiser.step()
    assert loss() < 0.8 * before
    assert all(torch.equal(frozen[n], p) for n, p in drafter.named_parameters() if n in frozen)
