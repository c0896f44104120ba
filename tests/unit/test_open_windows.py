"""Windows translated while they are open, on the shipped translator: a canvas edited in place as its
source grows drafts the teacher's translation of each source, its final is the teacher's translation
of the final source exactly (as a window translated only once closed), and editing costs fewer
rounds than starting each source from a blank canvas."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.batch_round import run_round
from engine.marian.teacher import PortedTeacher, load_ported, wheel_students
from engine.models import ResolvedModel
from engine.scheduler import Scheduler
from engine.translator import CanvasModel, load_canvas_model
from engine.types import CanvasKey, Draft, Final, WindowJob

SHIPPED = Path(__file__).resolve().parents[2] / "engine" / "models"
SPOKEN = [
    "So the committee will publish its report next Tuesday, after the vote.",
    "Turn left at the second traffic light and keep going for two kilometres.",
    "Our next speaker has worked on renewable energy for twenty years, mostly in Brazil.",
]


@pytest.fixture(scope="module")
def teacher() -> PortedTeacher:
    torch.set_num_threads(1)
    return load_ported(wheel_students()["en-pt"])


@pytest.fixture(scope="module")
def model() -> CanvasModel:
    return load_canvas_model(ResolvedModel("embedded", SHIPPED))


def job(window: int, source: str, *, provisional: bool) -> WindowJob:
    key = CanvasKey("s", "pt-BR", window)
    return WindowJob(key, source, (), "en", "pt-BR", 0, provisional=provisional)


def speak(model: CanvasModel, window: int, sentence: str) -> tuple[list[Draft | Final], int, list[str]]:
    """Feed a sentence's growing prefixes (two words at a time) as provisional sources, each run until
    quiet, then the final; returns the events, the rounds run and the sources."""
    denoiser = model.denoiser
    scheduler = Scheduler(
        canvas_length=denoiser.canvas_length, eos_token_ids=denoiser.eos_token_ids, decode=denoiser.decode
    )
    words = sentence.split()
    sources = [" ".join(words[:n]) for n in range(2, len(words), 2)]
    events: list[Draft | Final] = []
    rounds = 0
    for source, provisional in [*((s, True) for s in sources), (sentence, False)]:
        scheduler.add(model.request_for(job(window, source, provisional=provisional)))
        while not scheduler.idle:
            events += run_round(scheduler, denoiser).events
            rounds += 1
    assert scheduler.parked == 0
    return events, rounds, sources


@pytest.mark.parametrize("edit_in_place", [True, False])
def test_each_draft_is_the_teachers_translation_of_its_source_and_the_final_is_unchanged(
    model: CanvasModel, teacher: PortedTeacher, edit_in_place: bool
) -> None:
    model.denoiser.edit_in_place = edit_in_place
    try:
        for window, sentence in enumerate(SPOKEN):
            events, _, sources = speak(model, window, sentence)
            drafts = [e for e in events if isinstance(e, Draft)]
            finals = [e for e in events if isinstance(e, Final)]
            assert len(finals) == 1
            assert events[-1] is finals[0]
            assert finals[0].text == teacher.translate([sentence])[0]
            assert finals[0].error is None
            expected = teacher.translate(sources)
            # one draft per source whose translation differs from the one before, in order
            shown = [t for i, t in enumerate(expected) if i == 0 or t != expected[i - 1]]
            assert [d.text for d in drafts] == shown
            assert [d.rev for d in drafts] == list(range(len(drafts)))
            assert finals[0].rev == len(drafts)
    finally:
        model.denoiser.edit_in_place = True


def test_editing_the_canvas_takes_fewer_rounds_than_starting_each_source_afresh(model: CanvasModel) -> None:
    rounds = {}
    for edit_in_place in (True, False):
        model.denoiser.edit_in_place = edit_in_place
        rounds[edit_in_place] = sum(speak(model, w, s)[1] for w, s in enumerate(SPOKEN))
    model.denoiser.edit_in_place = True
    assert rounds[True] < 0.75 * rounds[False], rounds
