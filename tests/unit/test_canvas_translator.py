"""The canvas translator v2: its model, checkpoint, denoiser and training objective, on the teacher's
real weights (the decoder as warm-started, before any training)."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine.batch_round import run_round
from engine.diffusion.canvas import MASK_ID, CanvasTranslator, canvas_length_for, from_teacher
from engine.diffusion.canvas_denoiser import CanvasDenoiser, Direction
from engine.diffusion.mask_schedule import CanvasSettings, remask_quota, without_repeats
from engine.errors import EngineError
from engine.marian.teacher import EOS_ID, PortedTeacher, load_ported, pad_batch, wheel_students
from engine.scheduler import Scheduler
from engine.training import canvas_train, hand_off
from engine.training.distill import Pair
from engine.types import CanvasKey, CanvasRequest, DiffusionParams, Draft, EarlyExitParams, Final

SENTENCES = ["Thank you for joining us.", "The weather is cold today.", "Where is the station?"]


@pytest.fixture(scope="module")
def teachers() -> dict[str, PortedTeacher]:
    torch.set_num_threads(1)
    return {d: load_ported(files) for d, files in wheel_students().items()}


@pytest.fixture(scope="module")
def student(teachers: dict[str, PortedTeacher]) -> CanvasTranslator:
    teacher = teachers["en-pt"]
    return from_teacher(teacher.model, teacher.multipliers)


def denoiser_for(
    teachers: dict[str, PortedTeacher], student: CanvasTranslator, settings: CanvasSettings | None = None
) -> CanvasDenoiser:
    english = teachers["en-pt"]
    return CanvasDenoiser(
        [
            Direction("en-pt", student, english.tokenizer, english.shortlist, settings or CanvasSettings()),
            Direction("pt-en", student, teachers["pt-en"].tokenizer, None),
        ]
    )


def request(
    denoiser: CanvasDenoiser, direction: int, text: str, window: int, **params: float
) -> CanvasRequest:
    prompt = denoiser.encode_source(direction, text)
    return CanvasRequest(
        key=CanvasKey("s", denoiser.directions[direction].name, window),
        prompt_ids=prompt,
        max_new_tokens=denoiser.canvas_budget(prompt),
        seed=window,
        diffusion=DiffusionParams(**params),  # type: ignore[arg-type]
        early_exit=EarlyExitParams(draft_step=1),
    )


def test_the_student_starts_as_a_copy_of_the_teacher_never_sharing_it(
    teachers: dict[str, PortedTeacher],
) -> None:
    teacher = teachers["en-pt"]
    before = copy.deepcopy(teacher.model.state_dict())
    model = from_teacher(teacher.model, teacher.multipliers)
    assert torch.equal(model.embedding.weight, teacher.model.embedding.weight)
    assert torch.equal(model.mask_embedding, torch.zeros(256))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    after = teacher.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_the_checkpoint_stores_the_teachers_int8_values_exactly(
    student: CanvasTranslator, tmp_path: Path
) -> None:
    path = tmp_path / "canvas.safetensors"
    student.save(path)
    assert path.stat().st_size < 30e6  # int8 encoder and embeddings, float32 decoder
    loaded = CanvasTranslator.load(path)
    saved, restored = student.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[name], restored[name]) for name in saved)
    trained = copy.deepcopy(student)
    with torch.no_grad():
        trained.embedding.weight[0, 0] += 1e-3
    with pytest.raises(ValueError, match="was trained"):
        trained.save(tmp_path / "changed.safetensors")


def test_a_canvas_has_room_for_a_longer_translation_and_its_end() -> None:
    assert canvas_length_for(1) == 6
    assert canvas_length_for(10) == 17
    assert canvas_length_for(500) == 64
    assert canvas_length_for(500, maximum=128) == 128


def test_each_window_finishes_within_its_step_budget_with_one_final(
    teachers: dict[str, PortedTeacher], student: CanvasTranslator
) -> None:
    denoiser = denoiser_for(teachers, student)
    scheduler = Scheduler(
        canvas_length=denoiser.canvas_length, eos_token_ids=denoiser.eos_token_ids, decode=denoiser.decode
    )
    for index, text in enumerate(SENTENCES):
        scheduler.add(
            request(
                denoiser,
                0,
                text,
                index,
                max_denoising_steps=4,
                entropy_bound=1e-9,
            )
        )
    finals: dict[int, Final] = {}
    drafts: dict[int, list[Draft]] = {}
    rounds = 0
    while not scheduler.idle:
        for event in run_round(scheduler, denoiser).events:
            if isinstance(event, Final):
                assert event.key.window not in finals
                finals[event.key.window] = event
            else:
                drafts.setdefault(event.key.window, []).append(event)
        rounds += 1
    assert sorted(finals) == [0, 1, 2]
    assert all(f.steps == 4 and f.error is None for f in finals.values())  # nothing accepted early
    assert all(len(drafts[w]) == 1 and drafts[w][0].steps == 1 for w in finals)  # draft after step 1
    assert rounds <= 5


def test_a_canvas_is_filled_at_its_fill_step_and_the_backend_says_so_whatever_the_draft_step(
    teachers: dict[str, PortedTeacher], student: CanvasTranslator
) -> None:
    """An entropy bound that accepts every slot: the canvas still fills on its schedule (one slot
    open before step F), and is done at step F. The window's draft step plays no part: the backend
    reports what the step did and keeps nothing open for the scheduler's sake."""
    loose = {"max_denoising_steps": 8, "entropy_bound": 1e9}
    for fill, draft_step in ((3, 5), (1, 3)):
        denoiser = denoiser_for(teachers, student, CanvasSettings(fill_steps=fill))
        window = request(denoiser, 0, SENTENCES[0], 0, **loose)
        denoiser.start(0, replace(window, early_exit=EarlyExitParams(draft_step=draft_step)))
        results = [denoiser.step([0], [8 - k])[0] for k in range(fill)]
        length = canvas_length_for(len(denoiser.encode_source(0, SENTENCES[0])) - 1)
        assert [r.done for r in results] == [False] * (fill - 1) + [True]
        assert [r.settled for r in results] == [0] * (fill - 1) + [length]
        assert len(results[-1].tokens) == length


def test_the_remask_schedule_is_linear_or_fills_early_then_refines() -> None:
    linear = CanvasSettings()
    assert [remask_quota(16, k, 8, linear, verify=False) for k in range(1, 9)] == [14, 12, 10, 8, 6, 4, 2, 0]
    assert remask_quota(16, 8, 8, CanvasSettings(fill_steps=8), verify=False) == 0  # the same
    early = CanvasSettings(fill_steps=3, refine_share=0.5)
    assert [remask_quota(16, k, 8, early, verify=False) for k in range(1, 9)] == [10, 5, 8, 6, 4, 3, 1, 0]
    assert [remask_quota(16, k, 8, early, verify=True) for k in range(1, 9)] == [10, 5] + [0] * 6
    assert [remask_quota(16, k, 8, replace(early, refine_share=0.0), verify=False) for k in range(3, 9)] == [
        0
    ] * 6
    with pytest.raises(ValueError, match="refine_share"):
        CanvasSettings(refine_share=1.5)
    with pytest.raises(ValueError, match="fill_steps"):
        CanvasSettings(fill_steps=0)


def test_filling_early_makes_the_draft_step_an_early_decode_that_refinement_continues(
    teachers: dict[str, PortedTeacher], student: CanvasTranslator
) -> None:
    """Filled by step 3 of 8, step 3's canvas is a 3-step decode's final, and later steps refine it."""
    short = denoiser_for(teachers, student)
    early = denoiser_for(teachers, student, CanvasSettings(fill_steps=3, refine_share=0.5))
    short.start(0, request(short, 0, SENTENCES[0], 0, max_denoising_steps=3, entropy_bound=1e-9))
    early.start(0, request(early, 0, SENTENCES[0], 0, max_denoising_steps=8, entropy_bound=1e-9))
    three = [short.step([0], [n])[0] for n in (3, 2, 1)]
    filled = [early.step([0], [n])[0] for n in (8, 7, 6)]
    assert three[-1].done  # the 3-step decode ends here
    assert not filled[-1].done  # the filled-early one goes on refining
    assert filled[-1].tokens == three[-1].tokens
    refined = [early.step([0], [n])[0] for n in (5, 4, 3, 2, 1)]
    assert [r.done for r in refined] == [False] * 4 + [True]
    assert len(refined[-1].tokens) == len(three[-1].tokens)


def test_the_output_keeps_to_the_shortlist_and_its_direction(
    teachers: dict[str, PortedTeacher], student: CanvasTranslator
) -> None:
    denoiser = denoiser_for(teachers, student)
    vocab = denoiser.vocab
    english = request(denoiser, 0, SENTENCES[1], 0, max_denoising_steps=2)
    portuguese = request(denoiser, 1, "O tempo está frio hoje.", 1, max_denoising_steps=2)
    assert all(t < vocab for t in english.prompt_ids)
    assert all(vocab <= t < 2 * vocab for t in portuguese.prompt_ids)
    denoiser.start(0, english)
    denoiser.start(1, portuguese)
    results = denoiser.step([0, 1], [2, 2])
    allowed = set(teachers["en-pt"].shortlist.candidates([t % vocab for t in english.prompt_ids]).tolist())
    assert {t for t in results[0].tokens} <= allowed
    assert all(vocab <= t < 2 * vocab for t in results[1].tokens)  # pt-en: no shortlist, its own ids
    assert denoiser.eos_token_ids == frozenset({EOS_ID, vocab + EOS_ID})


def test_a_window_gives_the_same_canvas_alone_or_in_a_batch(
    teachers: dict[str, PortedTeacher], student: CanvasTranslator
) -> None:
    alone = denoiser_for(teachers, student)
    together = denoiser_for(teachers, student)
    target = request(alone, 0, SENTENCES[2], 0, max_denoising_steps=3, entropy_bound=1e-9)
    alone.start(0, target)
    together.start(0, target)
    for index, text in enumerate(SENTENCES[:2], start=1):
        together.start(index, request(together, 0, text * 2, index, max_denoising_steps=3))
    for remaining in (3, 2, 1):
        single = alone.step([0], [remaining])[0]
        batched = together.step([1, 0, 2], [remaining] * 3)[1]
        assert single.tokens == batched.tokens


def test_windows_that_leave_and_join_between_steps_read_their_own_source(
    teachers: dict[str, PortedTeacher], student: CanvasTranslator
) -> None:
    """The stacked cross-attention context is kept between steps of the same windows only: a window
    started under a released one's sequence id reads its own source."""
    shared = denoiser_for(teachers, student)
    steps = {"max_denoising_steps": 3, "entropy_bound": 1e-9}
    for index, text in enumerate(SENTENCES[:2]):
        shared.start(index, request(shared, 0, text, index, **steps))
    shared.step([0, 1], [3, 3])
    shared.step([0, 1], [2, 2])  # the same windows again: the kept context
    shared.release(1)
    shared.start(1, request(shared, 0, SENTENCES[2], 1, **steps))
    joined = shared.step([0, 1], [1, 3])[1]
    alone = denoiser_for(teachers, student)
    alone.start(1, request(alone, 0, SENTENCES[2], 1, **steps))
    assert joined.tokens == alone.step([1], [3])[0].tokens


def test_a_denoised_canvas_drops_repeated_pieces_and_decoding_drops_the_padding(
    teachers: dict[str, PortedTeacher],
) -> None:
    teacher = teachers["en-pt"]
    denoiser = CanvasDenoiser(
        [Direction("en-pt", CanvasTranslator(teacher.model.dims), teacher.tokenizer, None)]
    )
    pieces = teacher.tokenizer.encode("Obrigado a todos.", add_special_tokens=False).ids
    stuttered = [pieces[0], pieces[0], *pieces[1:], pieces[-1], EOS_ID, EOS_ID]
    collapsed = without_repeats(stuttered, EOS_ID)
    assert len(collapsed) == len(stuttered)  # padded with </s> to the canvas length
    assert denoiser.decode(collapsed) == "Obrigado a todos."
    # a verified canvas is the teacher's text as it stands: decoding drops only the padding
    assert denoiser.decode(stuttered) == "Obrigado Obrigado a todos.."


def test_bad_requests_are_refused_with_a_reason(
    teachers: dict[str, PortedTeacher], student: CanvasTranslator
) -> None:
    denoiser = denoiser_for(teachers, student)
    mixed = (1, 2, denoiser.vocab + 3)
    with pytest.raises(EngineError, match="one direction"):
        denoiser.start(0, replace(request(denoiser, 0, "Hi.", 0), prompt_ids=mixed))
    with pytest.raises(EngineError, match="no next block"):
        denoiser.next_block(0, (1, 2))


def distilled_examples(teacher: PortedTeacher) -> list[canvas_train.Example]:
    """Training canvases of SENTENCES with the teacher's own translations."""
    sources = [teacher.encode(s) for s in SENTENCES]
    outputs = teacher.model.greedy(sources, [teacher.shortlist.candidates(s) for s in sources])
    pairs = [
        Pair(str(i), "", "", tuple(src), tuple(out))
        for i, (src, out) in enumerate(zip(sources, outputs, strict=True))
    ]
    return canvas_train.make_examples(pairs)


def test_the_objective_learns_a_fixed_batch(teachers: dict[str, PortedTeacher]) -> None:
    teacher = teachers["en-pt"]
    model = from_teacher(teacher.model, teacher.multipliers)
    sources = [teacher.encode(s) for s in SENTENCES]
    outputs = teacher.model.greedy(sources, [teacher.shortlist.candidates(s) for s in sources])
    pairs = [
        Pair(str(i), s, "", tuple(src), tuple(out))
        for i, (s, src, out) in enumerate(zip(SENTENCES, sources, outputs, strict=True))
    ]
    examples = canvas_train.make_examples(pairs)
    assert [len(e.canvas) for e in examples] == [canvas_length_for(len(s) - 1) for s in sources]
    assert all(e.canvas[e.target_length :] == (EOS_ID,) * (len(e.canvas) - e.target_length) for e in examples)
    settings = canvas_train.TrainSettings()
    params = [p for _, p in hand_off.trainable(model)]
    for parameter in model.frozen_parameters():
        parameter.requires_grad_(False)
    optimiser = torch.optim.AdamW(params, lr=1e-3)
    losses = []
    for step in range(80):
        loss = canvas_train.masked_loss(
            model, examples, teacher.shortlist, settings, torch.Generator().manual_seed(step)
        )
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    assert torch.equal(model.embedding.weight, teacher.model.embedding.weight)  # frozen stays frozen
    model.eval()
    example = examples[0]
    with torch.inference_mode():  # each slot masked alone, logits over the shortlist
        source, mask = pad_batch([example.source])
        context = model.context_keys_values(model.encoder(source, mask))
        target = torch.tensor([example.canvas])
        canvases = target.repeat(len(example.canvas), 1)
        canvases[torch.arange(len(example.canvas)), torch.arange(len(example.canvas))] = MASK_ID
        batch = len(example.canvas)
        hidden = model.hidden_states(
            canvases,
            torch.ones_like(canvases, dtype=torch.bool),
            [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in context],
            mask.expand(batch, -1),
        )
        allowed = torch.from_numpy(teacher.shortlist.candidates(example.source))  # as in training
        predicted = allowed[model.logits(hidden, allowed).argmax(dim=-1).diagonal()]
    # after 80 steps the pieces come from the right translation (word order takes longer to learn)
    in_translation = [piece in set(example.canvas) for piece in predicted.tolist()]
    assert sum(in_translation) >= 0.8 * len(in_translation), (predicted, target)


def test_loader_processes_feed_training_and_leave_a_hand_off(
    teachers: dict[str, PortedTeacher], tmp_path: Path
) -> None:
    """The accelerator path on the CPU: batches prepared in two loader processes, then the hand-off
    (averaged trained weights alone) restores the averaged model on a fresh start from the teacher."""
    teacher = teachers["en-pt"]
    examples = distilled_examples(teacher)
    settings = canvas_train.TrainSettings(batch_size=2, warmup_steps=2, loader_workers=2)
    prepared = next(iter(canvas_train.PreparedBatches(examples, teacher.shortlist, settings, seed=1)))
    assert prepared.inputs.shape == prepared.target.shape
    assert bool((prepared.inputs[prepared.noise] == MASK_ID).all())
    assert not bool((prepared.inputs[~prepared.noise] == MASK_ID).any())
    model = from_teacher(teacher.model, teacher.multipliers)
    state = canvas_train.train(model, examples, teacher.shortlist, settings, tmp_path, minutes=None, steps=4)
    assert state["step"] == 4
    assert all(math.isfinite(loss) for _, loss in state["losses"])
    handed = hand_off.load_hand_off(from_teacher(teacher.model, teacher.multipliers), tmp_path)
    assert handed is not None
    assert handed["step"] == 4
    for name, tensor in state["averaged"].state_dict().items():
        assert torch.equal(handed["averaged"].state_dict()[name], tensor), name
    assert hand_off.load_hand_off(model, tmp_path / "elsewhere") is None
    (tmp_path / "checkpoint.pt").unlink()  # as on the machine the hand-off came back to
    fresh = from_teacher(teacher.model, teacher.multipliers)
    more = canvas_train.train(fresh, examples, teacher.shortlist, settings, tmp_path, minutes=None, steps=2)
    assert (more["step"], more["restarted_at"]) == (6, 4)  # continued from the hand-off's weights
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 6


def test_the_learning_rate_warms_up_then_decays_in_time_to_its_floor() -> None:
    settings = canvas_train.TrainSettings(warmup_steps=10, peak_lr=1e-3, final_lr_fraction=0.1)
    assert canvas_train.learning_rate(settings, 0, 0.0) == pytest.approx(1e-4)
    assert canvas_train.learning_rate(settings, 9, 0.0) == pytest.approx(1e-3)
    assert canvas_train.learning_rate(settings, 500, 0.5) == pytest.approx(0.55e-3)
    assert canvas_train.learning_rate(settings, 900, 1.0) == pytest.approx(1e-4)
    assert canvas_train.learning_rate(settings, 999, 3.0) == pytest.approx(1e-4)


def test_cached_encoder_states_give_the_loss_of_encoding_each_batch(
    student: CanvasTranslator, teachers: dict[str, PortedTeacher]
) -> None:
    teacher = teachers["en-pt"]
    examples = distilled_examples(teacher)
    memories = canvas_train.encode_all(student, examples)
    assert set(memories) == {e.source for e in examples}
    settings = canvas_train.TrainSettings()
    with torch.no_grad():
        direct = canvas_train.masked_loss(
            student, examples, teacher.shortlist, settings, torch.Generator().manual_seed(3)
        )
        cached = canvas_train.masked_loss(
            student, examples, teacher.shortlist, settings, torch.Generator().manual_seed(3), memories
        )
    assert float(cached) == pytest.approx(float(direct), rel=0.02)


def test_the_wanted_slots_alone_get_the_states_of_the_whole_canvas(
    teachers: dict[str, PortedTeacher], student: CanvasTranslator
) -> None:
    teacher = teachers["en-pt"]
    sources = [teacher.encode(text) for text in SENTENCES]
    source, source_mask = pad_batch(sources)
    generator = torch.Generator().manual_seed(3)
    canvas = torch.randint(5, 1000, (3, 12), generator=generator)
    canvas_mask = torch.ones((3, 12), dtype=torch.bool)
    canvas_mask[2, 9:] = False  # a shorter canvas in the batch
    wanted = torch.rand((3, 12), generator=generator) < 0.4
    wanted[0] = False  # a row with nothing to predict
    wanted[1, 0] = True
    wanted &= canvas_mask
    canvas[wanted] = MASK_ID
    with torch.inference_mode():
        context = student.context_keys_values(student.encoder(source, source_mask))
        full = student.hidden_states(canvas, canvas_mask, context, source_mask)
        states, real = student.wanted_states(canvas, canvas_mask, context, source_mask, wanted)
    assert real.sum(dim=1).tolist() == wanted.sum(dim=1).tolist()
    torch.testing.assert_close(states[real], full[wanted], rtol=1e-4, atol=1e-4)


def test_a_confident_window_goes_final_after_a_draft_the_scheduler_sends(
    teachers: dict[str, PortedTeacher], student: CanvasTranslator
) -> None:
    """Done at its first step (filled at step 1, every slot accepted), long before its draft step: the
    scheduler, not the backend, shows the text as a draft in that round and sends the final in the
    next."""
    denoiser = denoiser_for(teachers, student, CanvasSettings(fill_steps=1))
    scheduler = Scheduler(
        canvas_length=denoiser.canvas_length, eos_token_ids=denoiser.eos_token_ids, decode=denoiser.decode
    )
    loose = request(denoiser, 0, SENTENCES[0], 0, max_denoising_steps=8, entropy_bound=1e9)
    scheduler.add(replace(loose, early_exit=EarlyExitParams(draft_step=3)))
    first = run_round(scheduler, denoiser)
    assert [r.done for r in first.results] == [True]
    assert [type(e) for e in first.events] == [Draft]
    second = run_round(scheduler, denoiser)
    assert second.batch.step == ()  # not stepped again
    assert [(type(e), e.text, e.steps) for e in second.events] == [(Final, first.events[0].text, 1)]
