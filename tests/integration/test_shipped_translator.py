"""The shipped translators v2: verified, the default, and really translating in both directions.

A regression guard for the checkpoints in ``engine/models/``: broken weights, a wrong tokenizer or
shortlist, or a decoding change drops their chrF against the teacher far below the measured figure
(the model cards have the full evaluation), and a model that ignores its source scores no better
against the right references than against shuffled ones. The sentences are not in any training set.
"""

from __future__ import annotations

import pytest
import sacrebleu

from bench.parity import handwritten, native
from bench.throughput import denoising_alone
from engine.batch_round import run_round
from engine.models import PACKAGED_MODELS
from engine.runtime import load_model
from engine.scheduler import Scheduler
from engine.translator import CanvasModel
from engine.types import CanvasKey, Final, WindowJob

# against the teacher; measured at export: see the cards. The shipped decoding has the teacher verify
# each final (its port reproduces the native engine's raw output on >= 98% of varied sentences);
# denoising alone is the drafter's own quality.
MIN_CHRF = {"verified": 95.0, "denoising alone": 55.0}
LANGUAGES = {"en-pt": ("en", "pt"), "pt-en": ("pt", "en")}


def translate(model: CanvasModel, sentences: list[str], source: str, target: str) -> list[str]:
    denoiser = model.denoiser
    scheduler = Scheduler(
        canvas_length=denoiser.canvas_length, eos_token_ids=denoiser.eos_token_ids, decode=denoiser.decode
    )
    for index, sentence in enumerate(sentences):
        scheduler.add(
            model.request_for(WindowJob(CanvasKey("t", target, index), sentence, (), source, target, 0))
        )
    finals: dict[int, Final] = {}
    while not scheduler.idle:
        finals.update(
            {e.key.window: e for e in run_round(scheduler, denoiser).events if isinstance(e, Final)}
        )
    return [finals[i].text for i in range(len(sentences))]


@pytest.fixture(scope="module")
def shipped() -> CanvasModel:
    model = load_model(None)
    assert isinstance(model, CanvasModel)
    return model


def test_the_default_model_is_the_pair_of_shipped_translators(shipped: CanvasModel) -> None:
    assert shipped.card.name == " + ".join(PACKAGED_MODELS)
    assert shipped.card.pairs == (("en", "pt-BR"), ("pt-BR", "en"))
    assert shipped.card.serves("en", "pt")
    assert shipped.card.serves("pt", "en")
    assert not shipped.card.serves("en", "en")
    assert not shipped.card.serves("de", "pt")


@pytest.mark.parametrize("mode", ["verified", "denoising alone"])
@pytest.mark.parametrize("direction", ["en-pt", "pt-en"])
def test_each_direction_translates_close_to_its_teacher(
    shipped: CanvasModel, direction: str, mode: str
) -> None:
    sentences = handwritten("en" if direction == "en-pt" else "pt")[1::4]
    model = shipped if mode == "verified" else denoising_alone(shipped)
    assert model is not None
    assert isinstance(model, CanvasModel)
    assert all(c.verify == (mode == "verified") for c in model.directions)
    assert all((d.verifier is not None) == (mode == "verified") for d in model.denoiser.directions)
    outputs = translate(model, sentences, *LANGUAGES[direction])
    assert all(outputs), outputs
    teacher = native(direction)
    references = [str(teacher.translate(s)) for s in sentences]
    chrf = sacrebleu.corpus_chrf(outputs, [references]).score
    assert chrf >= MIN_CHRF[mode], list(zip(outputs, references, strict=True))
    shifted = sacrebleu.corpus_chrf(outputs, [references[3:] + references[:3]]).score
    assert chrf > shifted + 20, (chrf, shifted)
