"""The teacher as verifier (engine/diffusion/verifier.py): verified finals are the teacher's exact greedy
output whatever the draft, every round settles a slot, and the verifier ships and loads with the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.diffusion import canvas_denoiser
from engine.diffusion.canvas import MAX_CANVAS, CanvasTranslator, from_teacher
from engine.diffusion.canvas_denoiser import CanvasDenoiser, Direction
from engine.diffusion.mask_schedule import CanvasSettings
from engine.diffusion.stacking import stack_outputs
from engine.diffusion.verifier import VERIFIER_WEIGHTS, TeacherVerifier
from engine.errors import EngineError, ModelResolutionError
from engine.marian.teacher import EOS_ID, PortedTeacher, load_ported, wheel_students
from engine.models import ResolvedModel
from engine.scheduler import Scheduler
from engine.training import evaluate
from engine.training.export import write_checksums
from engine.translator import CARD_FILE, DirectionCard, load_canvas_model, no_op_fields
from engine.types import CanvasKey, CanvasRequest, DiffusionParams, EarlyExitParams

SHIPPED = Path(__file__).resolve().parents[2] / "engine" / "models" / "livecanvas-en-ptbr-v2"
SENTENCES = [
    "Thank you for joining us.",
    "The committee will publish its report next Tuesday, after the vote.",
    "Why didn't anyone tell me the train was cancelled?",
    "Turn left at the second traffic light and keep going for two kilometres.",
    "She said: 'I'll be there at 7:30, maybe earlier.'",
    "Our next speaker has worked on renewable energy for twenty years.",
    "ok",
    "The the the weather is is nice.",
]
FILL = 4


@pytest.fixture(scope="module")
def teacher() -> PortedTeacher:
    torch.set_num_threads(1)
    return load_ported(wheel_students()["en-pt"])


@pytest.fixture(scope="module")
def verifier(teacher: PortedTeacher) -> TeacherVerifier:
    return TeacherVerifier.from_teacher(teacher.model)


def verifying(steps: int = FILL + MAX_CANVAS) -> DiffusionParams:
    return DiffusionParams(max_denoising_steps=steps, entropy_bound=1.0)


def verified_direction(
    teacher: PortedTeacher, drafter: CanvasTranslator, verifier: TeacherVerifier
) -> Direction:
    fill = CanvasSettings(fill_steps=FILL)
    return Direction("en-pt", drafter, teacher.tokenizer, teacher.shortlist, fill, verifier=verifier)


def denoiser(teacher: PortedTeacher, drafter: CanvasTranslator, verifier: TeacherVerifier) -> CanvasDenoiser:
    return CanvasDenoiser([verified_direction(teacher, drafter, verifier)])


def request(den: CanvasDenoiser, text: str, diffusion: DiffusionParams, window: int = 0) -> CanvasRequest:
    prompt = den.encode_source(0, text)
    return CanvasRequest(
        key=CanvasKey("s", "pt", window),
        prompt_ids=prompt,
        max_new_tokens=den.canvas_budget(prompt),
        seed=window,
        diffusion=diffusion,
        early_exit=EarlyExitParams(draft_step=FILL),
    )


def greedy(teacher: PortedTeacher, text: str) -> list[int]:
    source = teacher.encode(text)
    return teacher.model.greedy([source], [teacher.shortlist.candidates(source)])[0]


@pytest.mark.parametrize("drafter_kind", ["shipped", "untrained"])
def test_verified_finals_are_the_teachers_greedy_translations_whatever_the_draft(
    teacher: PortedTeacher, verifier: TeacherVerifier, drafter_kind: str
) -> None:
    # the shipped drafter, and a drafter that never learned to fill canvases (its drafts are junk)
    drafter = (
        CanvasTranslator.load(SHIPPED / "canvas.safetensors")
        if drafter_kind == "shipped"
        else from_teacher(teacher.model, teacher.multipliers)
    )
    translated = evaluate.canvas_translate(
        denoiser(teacher, drafter, verifier),
        0,
        SENTENCES,
        diffusion=verifying(),
        early_exit=EarlyExitParams(draft_step=FILL),
    )
    expected = teacher.translate(SENTENCES)
    assert [t.final for t in translated] == expected
    for text, result in zip(SENTENCES, translated, strict=True):
        # the fill steps, then one round per corrected slot at most (plus the one that accepts </s>)
        assert result.steps <= FILL + len(greedy(teacher, text)) + 1
    # every canvas is filled at step FILL, its first draft (with the teacher's first round), and its
    # final comes after it, even one the teacher accepts in that first round (the scheduler's rule)
    assert all(t.draft_steps == FILL <= t.steps for t in translated)
    if drafter_kind == "shipped":  # a drafter that translates saves rounds: fewer than one per piece
        pieces = sum(len(greedy(teacher, text)) for text in SENTENCES)
        assert sum(t.steps - FILL for t in translated) < pieces


def test_a_translation_longer_than_its_canvas_grows_it_and_stays_the_teachers(
    teacher: PortedTeacher, verifier: TeacherVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every canvas starts at 3 slots, shorter than any of these translations but "ok"'s
    monkeypatch.setattr(canvas_denoiser, "canvas_length_for", lambda pieces, maximum=64: 3)
    drafter = CanvasTranslator.load(SHIPPED / "canvas.safetensors")
    den = denoiser(teacher, drafter, verifier)
    translated = evaluate.canvas_translate(
        den, 0, SENTENCES, diffusion=verifying(), early_exit=EarlyExitParams(draft_step=FILL)
    )
    assert [t.final for t in translated] == teacher.translate(SENTENCES)
    prompt = den.encode_source(0, SENTENCES[3])
    assert den.canvas_budget(prompt) == min(int(2.5 * len(prompt)), MAX_CANVAS)  # greedy search's limit


def test_a_budget_that_ends_mid_verification_keeps_the_teachers_prefix(
    teacher: PortedTeacher, verifier: TeacherVerifier
) -> None:
    drafter = from_teacher(teacher.model, teacher.multipliers)  # junk drafts: many rounds needed
    den = denoiser(teacher, drafter, verifier)
    text = SENTENCES[3]
    budget = FILL + 3
    den.start(0, request(den, text, verifying(budget)))
    for step in range(1, budget + 1):
        result = den.step([0], [budget - step + 1])[0]
    assert not result.done  # the scheduler ends it at the budget with this canvas as the final
    settled = result.settled  # the teacher's accepted prefix
    assert settled >= 3  # the fill step's round and two more, at least one slot each
    assert list(result.tokens[:settled]) == greedy(teacher, text)[:settled]


def test_a_draft_with_one_piece_too_many_is_realigned_in_one_round(
    teacher: PortedTeacher, verifier: TeacherVerifier
) -> None:
    text = SENTENCES[1]
    source = teacher.encode(text)
    candidates = torch.from_numpy(teacher.shortlist.candidates(source))
    expected = greedy(teacher, text)
    extra = int(next(c for c in candidates.tolist() if c not in expected[2:4] and c != EOS_ID))
    canvas = torch.tensor([*expected[:2], extra, *expected[2:], EOS_ID, EOS_ID])
    drafter = CanvasTranslator.load(SHIPPED / "canvas.safetensors")
    memory = drafter.encoder(torch.tensor([source]), torch.ones(1, len(source), dtype=torch.bool))
    context = verifier.context_keys_values(memory)
    outputs = stack_outputs([candidates], drafter.embedding.weight, verifier.output_bias)
    reading = verifier.start()
    mask = torch.ones(1, len(source), dtype=torch.bool)
    with torch.inference_mode():
        first = verifier.verify(drafter.embedding, [canvas], [reading], context, mask, outputs)[0]
        assert not first.final
        assert reading.settled == 3
        assert first.tokens.tolist()[: len(expected)] == expected  # extra piece dropped, rest moved left
        rounds = 0
        verdict = first
        while not verdict.final:  # the rest is the teacher's: every read is accepted in full
            before = verdict.tokens
            verdict = verifier.verify(drafter.embedding, [before], [reading], context, mask, outputs)[0]
            assert torch.equal(verdict.tokens, before)  # nothing corrected
            rounds += 1
    assert verdict.tokens.tolist()[: len(expected) + 1] == [*expected, EOS_ID]
    # reads after a correction are capped (max(4, 2 (a + 1)), a = 2 accepted) and then double
    assert rounds <= 3
    assert reading.settled == len(expected) + 1


def test_a_refinement_share_is_refused_where_the_teacher_verifies(
    teacher: PortedTeacher, verifier: TeacherVerifier
) -> None:
    drafter = from_teacher(teacher.model, teacher.multipliers)
    refining = CanvasSettings(fill_steps=FILL, refine_share=0.5)
    with pytest.raises(EngineError, match="refine_share does nothing"):
        Direction("en-pt", drafter, teacher.tokenizer, None, refining, verifier=verifier)
    assert Direction("en-pt", drafter, teacher.tokenizer, None, refining).verifier is None  # fine alone


def test_the_verifier_round_trips_and_ships_with_the_model(tmp_path: Path, verifier: TeacherVerifier) -> None:
    verifier.save(tmp_path / VERIFIER_WEIGHTS)
    loaded = TeacherVerifier.load(tmp_path / VERIFIER_WEIGHTS)
    for name, tensor in verifier.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    shipped = SHIPPED / VERIFIER_WEIGHTS
    assert VERIFIER_WEIGHTS in (SHIPPED / "SHA256SUMS").read_text()
    shipped_state = TeacherVerifier.load(shipped).state_dict()
    assert all(torch.equal(t, shipped_state[n]) for n, t in verifier.state_dict().items())
    assert DirectionCard.read(SHIPPED).verify  # the shipped default verifies


def test_a_card_that_verifies_without_its_verifier_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "en-pt"
    shutil.copytree(SHIPPED, copy)
    (copy / VERIFIER_WEIGHTS).unlink()
    write_checksums(copy)
    card = json.loads((copy / CARD_FILE).read_text())
    assert card["canvas"]["verify"]
    with pytest.raises(ModelResolutionError, match=r"no verifier\.safetensors"):
        load_canvas_model(ResolvedModel("en-pt", copy))
    card["canvas"] = {"fill_steps": FILL, "shortlist": True}  # denoising alone, float32 drafter
    (copy / CARD_FILE).write_text(json.dumps(card))
    write_checksums(copy)
    unverified = load_canvas_model(ResolvedModel("en-pt", copy)).denoiser.directions[0]
    assert unverified.verifier is None
    # a card without int8 keeps its drafter float32 (int8 would change an unverified final)
    assert torch.nn.Linear in {type(m) for m in unverified.model.layers.modules()}


@pytest.mark.parametrize(
    ("section", "fields", "message"),
    [
        ("canvas", {"refine_share": 0.5}, "refine_share does nothing when the teacher verifies"),
        ("diffusion", {"t_min": 0.4}, "t_min in 'diffusion': not a setting of the canvas translator"),
        ("diffusion", {"confidence_threshold": 0.005}, "confidence_threshold in 'diffusion'"),
        ("early_exit", {"redraft_every": 0}, "redraft_every 0 does nothing"),
        ("early_exit", {"draft_confidence": 0.0}, "draft_confidence must be > 0"),
        ("", {"shortlist": True}, "shortlist at the top level"),
    ],
)
def test_a_card_with_a_field_that_does_nothing_is_refused_at_load(
    tmp_path: Path, section: str, fields: dict[str, Any], message: str
) -> None:
    copy = tmp_path / "en-pt"
    shutil.copytree(SHIPPED, copy)
    card = json.loads((copy / CARD_FILE).read_text())
    (card.setdefault(section, {}) if section else card).update(fields)
    (copy / CARD_FILE).write_text(json.dumps(card))
    write_checksums(copy)
    with pytest.raises(ModelResolutionError, match=message):
        load_canvas_model(ResolvedModel("en-pt", copy))


def test_the_shipped_cards_set_only_fields_that_act() -> None:
    for directory in sorted(SHIPPED.parent.iterdir()):
        card = json.loads((directory / CARD_FILE).read_text())
        assert no_op_fields(card) == [], directory.name
        assert set(card["diffusion"]) == {"max_denoising_steps", "entropy_bound"}
        assert card["canvas"] == {"fill_steps": FILL, "verify": True, "shortlist": True, "int8": True}
        assert card["early_exit"] == {"draft_step": FILL}


def test_verifying_and_denoising_windows_share_steps_without_changing_each_other(
    teacher: PortedTeacher, verifier: TeacherVerifier
) -> None:
    drafter = CanvasTranslator.load(SHIPPED / "canvas.safetensors")
    alone = DiffusionParams(max_denoising_steps=8, entropy_bound=1.0)
    refining = CanvasSettings(fill_steps=FILL, refine_share=0.5)
    denoising = Direction("en-pt-alone", drafter, teacher.tokenizer, teacher.shortlist, refining)
    den = CanvasDenoiser([verified_direction(teacher, drafter, verifier), denoising])
    scheduler = Scheduler(canvas_length=den.canvas_length, eos_token_ids=den.eos_token_ids, decode=den.decode)
    for index, text in enumerate(SENTENCES[:4]):
        direction = 0 if index % 2 else 1
        prompt = den.encode_source(direction, text)
        scheduler.add(
            CanvasRequest(
                key=CanvasKey("s", "pt", index),
                prompt_ids=prompt,
                max_new_tokens=den.canvas_budget(prompt),
                seed=index,
                diffusion=verifying() if index % 2 else alone,
                early_exit=EarlyExitParams(draft_step=FILL),
            )
        )
    mixed = evaluate.run_requests(scheduler, den, 4)
    separate = evaluate.canvas_translate(
        CanvasDenoiser([denoising]), 0, SENTENCES[:4:2], diffusion=alone, early_exit=EarlyExitParams(FILL)
    )
    assert [mixed[1].final, mixed[3].final] == teacher.translate(SENTENCES[1:4:2])
    assert [mixed[0].final, mixed[2].final] == [t.final for t in separate]


@pytest.mark.parametrize("int8", [True, None])  # None: the default for a card that verifies
def test_int8_quantises_the_drafter_only_and_verified_finals_stay_exact(
    teacher: PortedTeacher, int8: bool | None
) -> None:
    model = load_canvas_model(ResolvedModel("embedded", SHIPPED.parent), int8=int8)
    direction = model.denoiser.directions[model.route("en", "pt-BR")]
    encoder_layers = {type(m) for m in direction.model.encoder.modules()}
    decoder_layers = {type(m) for m in direction.model.layers.modules()}
    assert torch.nn.Linear in encoder_layers  # float32: the verifier reads its states
    assert torch.nn.Linear not in decoder_layers  # every decoder projection quantised
    assert direction.verifier is not None
    assert torch.nn.Linear in {type(m) for m in direction.verifier.modules()}
    index = model.route("en", "pt-BR")
    card = model.directions[index]
    translated = evaluate.canvas_translate(
        CanvasDenoiser([direction]), 0, SENTENCES[:4], diffusion=card.diffusion, early_exit=card.early_exit
    )
    assert [t.final for t in translated] == teacher.translate(SENTENCES[:4])
