"""The sans-I/O scheduler: admission, step boundaries, per-canvas step counts, drafts and finals.

Step results are written by hand here, so every branch is driven deliberately; the tests in
``test_engine.py`` run the same scheduler on a real model.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from engine.diffusion.denoiser import StepResult
from engine.scheduler import Batch, CanvasStatus, Scheduler
from engine.types import CanvasKey, CanvasRequest, DiffusionParams, Draft, EarlyExitParams, Final

EOS = 1
L = 4


def decode(tokens: Sequence[int]) -> str:
    return " ".join(str(t) for t in tokens)


def request(window: int, *, steps: int = 5, max_new_tokens: int = L, draft_step: int = 2) -> CanvasRequest:
    return CanvasRequest(
        key=CanvasKey("s", "pt", window),
        prompt_ids=(2, 3),
        max_new_tokens=max_new_tokens,
        seed=window,
        diffusion=DiffusionParams(max_denoising_steps=steps),
        early_exit=EarlyExitParams(draft_step=draft_step),
    )


def result(*tokens: int, done: bool = False, entropy: float = 1.0) -> StepResult:
    return StepResult(tokens=tokens, settled=len(tokens) if done else 0, mean_entropy=entropy)


def make(max_batch: int = 8) -> Scheduler:
    return Scheduler(canvas_length=L, eos_token_ids=frozenset({EOS}), decode=decode, max_batch=max_batch)


def test_new_canvas_starts_and_steps_in_the_same_batch() -> None:
    scheduler = make()
    seq = scheduler.add(request(0))
    batch = scheduler.schedule()
    assert [s for s, _ in batch.start] == [seq]
    assert batch.step == (seq,)
    assert batch.steps_remaining == (5,)


def test_draft_at_draft_step_then_final_on_adaptive_stop_exactly_once() -> None:
    scheduler = make()
    seq = scheduler.add(request(0, draft_step=2))
    events = []
    for step in range(3):
        batch = scheduler.schedule()
        events += scheduler.update(batch, [result(7, 8, EOS, 9, done=step == 2)])
    assert [type(e) for e in events] == [Draft, Final]
    draft, final = events
    assert isinstance(draft, Draft)
    assert isinstance(final, Final)
    assert (draft.rev, draft.text, draft.steps) == (0, "7 8", 2)
    assert (final.rev, final.text, final.steps, final.tokens, final.error) == (1, "7 8", 3, 2, None)
    assert scheduler.status(seq) is CanvasStatus.FINISHED
    batch = scheduler.schedule()
    assert batch.release == (seq,)
    assert batch.step == ()
    assert scheduler.idle


def test_block_ends_at_step_budget_and_window_continues_without_eos() -> None:
    scheduler = make()
    seq = scheduler.add(request(0, steps=2, max_new_tokens=2 * L, draft_step=9))
    events = []
    for _ in range(2):
        events += scheduler.update(b := scheduler.schedule(), [result(5, 6, 7, 8)])
    assert events == []  # first block done, no EOS, budget left: no final yet
    batch = scheduler.schedule()
    assert batch.extend == ((seq, (5, 6, 7, 8)),)
    assert batch.steps_remaining == (2,)  # the new block starts its own schedule
    events += scheduler.update(batch, [result(9, EOS, 3, 3)])
    events += scheduler.update(scheduler.schedule(), [result(9, EOS, 3, 3)])
    events += scheduler.update(scheduler.schedule(), [])  # no draft yet: shown first, final next round
    assert [type(e) for e in events] == [Draft, Final]
    final = events[1]
    assert isinstance(final, Final)
    assert final.text == events[0].text == "5 6 7 8 9"
    assert final.steps == 4
    del b


def test_window_ends_at_token_budget() -> None:
    scheduler = make()
    scheduler.add(request(0, steps=1, max_new_tokens=L))
    events = scheduler.update(scheduler.schedule(), [result(5, 6, 7, 8)])
    events += scheduler.update(scheduler.schedule(), [])
    assert [e.text for e in events if isinstance(e, Final)] == ["5 6 7 8"]


def test_drafts_of_a_later_block_show_earlier_blocks_too() -> None:
    scheduler = make()
    scheduler.add(request(0, steps=3, max_new_tokens=2 * L, draft_step=2))
    events: list[Draft | Final] = []
    for _ in range(3):  # block 1: draft at step 2, ends at its budget of 3 steps without EOS
        events += scheduler.update(scheduler.schedule(), [result(5, 6, 7, 8)])
    for _ in range(2):  # block 2: its own draft at its step 2
        events += scheduler.update(scheduler.schedule(), [result(9, 9, EOS, 4)])
    assert [(type(e), e.text, e.rev) for e in events] == [(Draft, "5 6 7 8", 0), (Draft, "5 6 7 8 9 9", 1)]


def test_canvases_join_and_leave_mid_flight_with_their_own_step_counts() -> None:
    scheduler = make()
    a = scheduler.add(request(0, steps=3))
    batch = scheduler.schedule()
    scheduler.update(batch, [result(5, 5, 5, 5)])
    b = scheduler.add(request(1, steps=3))  # joins at the next step boundary
    batch = scheduler.schedule()
    assert batch.step == (a, b)
    assert batch.steps_remaining == (2, 3)
    assert scheduler.steps_done(a) == 1
    scheduler.update(batch, [result(5, 5, 5, 5), result(6, 6, 6, 6)])
    batch = scheduler.schedule()
    events = scheduler.update(batch, [result(5, 5, 5, 5), result(6, 6, 6, 6)])
    assert [(e.key.window, e.steps) for e in events if isinstance(e, Final)] == [(0, 3)]
    batch = scheduler.schedule()
    assert batch.release == (a,)
    assert batch.step == (b,)
    assert batch.steps_remaining == (1,)
    events = scheduler.update(batch, [result(6, 6, 6, 6)])
    assert [(e.key.window, e.steps) for e in events if isinstance(e, Final)] == [(1, 3)]


def test_admission_respects_max_batch_in_fifo_order() -> None:
    scheduler = make(max_batch=2)
    ids = [scheduler.add(request(w, steps=1)) for w in range(5)]
    batch = scheduler.schedule()
    assert batch.step == tuple(ids[:2])
    assert scheduler.waiting == 3
    scheduler.update(batch, [result(EOS, 0, 0, 0), result(EOS, 0, 0, 0)])
    batch = scheduler.schedule()  # the first two only await their finals: no place in the batch
    assert batch.step == tuple(ids[2:4])
    assert batch.finish == tuple(ids[:2])


def test_fail_gives_an_error_final_once_and_frees_the_slot() -> None:
    scheduler = make()
    seq = scheduler.add(request(0))
    batch = scheduler.schedule()
    finals = scheduler.fail([seq], "boom")
    assert [(f.error, f.text) for f in finals] == [("boom", "")]
    assert scheduler.fail([seq], "again") == []
    assert batch.without({seq}).step == ()
    assert scheduler.schedule().release == (seq,)


def test_update_rejects_mismatched_results() -> None:
    scheduler = make()
    scheduler.add(request(0))
    with pytest.raises(ValueError, match="results"):
        scheduler.update(scheduler.schedule(), [])


def test_empty_batch() -> None:
    assert Batch().empty
    assert make().schedule().empty


def test_abort_drops_waiting_and_running_canvases_without_finals() -> None:
    scheduler = make(max_batch=2)
    ids = [scheduler.add(request(w)) for w in range(4)]
    batch = scheduler.schedule()  # windows 0 and 1 run, 2 and 3 wait
    assert batch.step == tuple(ids[:2])
    scheduler.update(batch, [result(5, 5, 5, 5), result(5, 5, 5, 5)])
    dropped = scheduler.abort({CanvasKey("s", "pt", 1), CanvasKey("s", "pt", 3), CanvasKey("s", "pt", 9)})
    assert sorted(key.window for key in dropped) == [1, 3]
    assert scheduler.abort({CanvasKey("s", "pt", 1)}) == []  # once only
    assert scheduler.status(ids[1]) is CanvasStatus.FINISHED
    batch = scheduler.schedule()
    assert batch.release == (ids[1],)  # its denoiser state is freed
    assert batch.step == (ids[0], ids[2])  # the freed slot goes to the next waiting canvas
    events = scheduler.update(batch, [result(EOS, 0, 0, 0, done=True)] * 2)
    # done before their draft step: each shows its final text as a draft now, its final next round
    assert sorted(e.key.window for e in events if isinstance(e, Draft)) == [0, 2]
    batch = scheduler.schedule()
    assert (batch.step, batch.finish) == ((), (ids[0], ids[2]))
    events = scheduler.update(batch, [])
    assert sorted(e.key.window for e in events if isinstance(e, Final)) == [0, 2]
    assert scheduler.idle is False  # window 2's release is still due
    assert scheduler.schedule().release == (ids[0], ids[2])
    assert scheduler.idle


def test_only_the_scheduler_decides_drafts_and_finals_a_window_done_early_shows_a_draft_first() -> None:
    """A backend reports a canvas done (every position settled) at its first step, long before the
    draft step: the scheduler sends that text as the window's draft at once, and its final in the next
    round without stepping it again (the backend is not asked to hold anything back)."""
    scheduler = make()
    seq = scheduler.add(request(0, draft_step=4))
    batch = scheduler.schedule()
    events = scheduler.update(batch, [result(7, 8, EOS, 0, done=True)])
    assert [(type(e), e.text, e.steps) for e in events] == [(Draft, "7 8", 1)]
    assert scheduler.status(seq) is CanvasStatus.FINAL_DUE
    batch = scheduler.schedule()
    assert (batch.step, batch.finish) == ((), (seq,))  # not stepped again
    events = scheduler.update(batch, [])
    assert [(type(e), e.text, e.steps, e.rev) for e in events] == [(Final, "7 8", 1, 1)]
    assert scheduler.schedule().release == (seq,)
    assert scheduler.idle


def test_a_window_that_showed_a_draft_goes_final_in_the_round_it_is_done() -> None:
    scheduler = make()
    scheduler.add(request(0, draft_step=1))
    events = scheduler.update(scheduler.schedule(), [result(7, 9, EOS, 0)])
    assert [type(e) for e in events] == [Draft]
    events = scheduler.update(scheduler.schedule(), [result(7, 8, EOS, 0, done=True)])
    assert [(type(e), e.text) for e in events] == [(Final, "7 8")]


# -- windows translated while open: provisional canvases, revised in place ---------------------------


def provisional(window: int, prompt: tuple[int, ...], *, final: bool = False) -> CanvasRequest:
    return CanvasRequest(
        key=CanvasKey("s", "pt", window),
        prompt_ids=prompt,
        max_new_tokens=L,
        seed=window,
        diffusion=DiffusionParams(max_denoising_steps=5),
        early_exit=EarlyExitParams(draft_step=1),
        provisional=not final,
    )


def run(scheduler: Scheduler, *results: StepResult) -> tuple[list[Batch], list[Draft | Final]]:
    """One round per result, each result given to every stepped canvas."""
    batches, events = [], []
    for step_result in results:
        batch = scheduler.schedule()
        batches.append(batch)
        events += scheduler.update(batch, [step_result] * len(batch.step))
    return batches, events


def test_a_provisional_canvas_drafts_only_when_done_and_then_parks_without_a_place() -> None:
    scheduler = make(max_batch=1)
    seq = scheduler.add(provisional(0, (2,)))
    _, events = run(scheduler, result(7, 8, 9), result(7, 8, EOS, EOS, done=True))
    assert [(type(e), e.rev, e.text) for e in events] == [(Draft, 0, "7 8")]  # no early-exit draft
    assert scheduler.status(seq) is CanvasStatus.PARKED
    assert scheduler.idle
    assert scheduler.running == 0
    assert scheduler.parked == 1
    other = scheduler.add(request(1))  # the parked canvas takes no place: another window starts
    batch = scheduler.schedule()
    assert [s for s, _ in batch.start] == [other]
    assert batch.step == (other,)
    assert seq not in batch.release


def test_a_newer_source_revises_the_live_canvas_keeping_its_numbering() -> None:
    scheduler = make()
    seq = scheduler.add(provisional(0, (2,)))
    run(scheduler, result(7, EOS, EOS, EOS, done=True))
    assert scheduler.add(provisional(0, (2, 3))) == seq  # the same canvas, not a second one
    batch = scheduler.schedule()
    assert batch.start == ()
    assert [s for s, _ in batch.revise] == [seq]
    assert batch.revise[0][1].prompt_ids == (2, 3)
    assert batch.step == (seq,)
    assert batch.steps_remaining == (5,)  # its block starts again from its first step
    events = scheduler.update(batch, [result(7, 8, EOS, EOS, done=True)])
    assert [(e.rev, e.text) for e in events] == [(1, "7 8")]
    final_seq = scheduler.add(provisional(0, (2, 3, 4), final=True))
    assert final_seq == seq
    batches, events = run(scheduler, result(7, 8, 5, 9), result(7, 8, 5, EOS, done=True))
    assert [s for s, _ in batches[0].revise] == [seq]
    assert [(type(e), e.rev, e.text) for e in events] == [(Final, 2, "7 8 5")]  # no early-exit draft
    assert scheduler.status(seq) is CanvasStatus.FINISHED


def test_the_final_of_the_source_a_parked_canvas_finished_goes_out_without_stepping() -> None:
    scheduler = make()
    seq = scheduler.add(provisional(0, (2, 3)))
    run(scheduler, result(7, 8, EOS, EOS, done=True))
    scheduler.add(provisional(0, (2, 3), final=True))
    batch = scheduler.schedule()
    assert batch.step == ()
    assert batch.revise == ()
    assert batch.finish == (seq,)
    events = scheduler.update(batch, [])
    assert [(type(e), e.rev, e.text) for e in events] == [(Final, 1, "7 8")]


def test_a_final_request_while_its_source_still_steps_takes_over_without_a_restart() -> None:
    scheduler = make()
    seq = scheduler.add(provisional(0, (2, 3)))
    run(scheduler, result(7, 8, 9))
    scheduler.add(provisional(0, (2, 3), final=True))
    batches, events = run(scheduler, result(7, 8, 9), result(7, 8, EOS, EOS, done=True))
    assert all(b.revise == () for b in batches)
    assert batches[0].step == (seq,)
    batch = scheduler.schedule()  # no draft shown yet: the final's text went out as one, its final now
    assert batch.finish == (seq,)
    events += scheduler.update(batch, [])
    assert [(type(e), e.rev, e.text) for e in events] == [(Draft, 0, "7 8"), (Final, 1, "7 8")]


def test_a_provisional_request_never_replaces_a_final_one() -> None:
    scheduler = make()
    seq = scheduler.add(provisional(0, (2, 3), final=True))
    scheduler.add(provisional(0, (2,)))  # late news about a window already closed
    batch = scheduler.schedule()
    assert batch.start[0][1].prompt_ids == (2, 3)
    assert not batch.start[0][1].provisional
    scheduler.update(batch, [result(7, 8, 9)])
    scheduler.add(provisional(0, (2,)))
    assert scheduler.schedule().revise == ()
    assert scheduler.status(seq) is CanvasStatus.RUNNING


def test_a_waiting_canvas_takes_its_newer_request_and_an_abort_drops_a_parked_one() -> None:
    scheduler = make(max_batch=1)
    scheduler.add(request(5))
    scheduler.schedule()
    seq = scheduler.add(provisional(0, (2,)))
    assert scheduler.add(provisional(0, (2, 3))) == seq
    assert scheduler.waiting == 1
    scheduler.abort([CanvasKey("s", "pt", 5)])
    batch = scheduler.schedule()
    assert batch.start[0][1].prompt_ids == (2, 3)
    scheduler.update(batch, [result(7, EOS, EOS, EOS, done=True)])
    assert scheduler.status(seq) is CanvasStatus.PARKED
    assert scheduler.abort([CanvasKey("s", "pt", 0)]) == [CanvasKey("s", "pt", 0)]
    assert scheduler.schedule().release == (seq,)
    assert scheduler.idle
    assert scheduler.parked == 0
