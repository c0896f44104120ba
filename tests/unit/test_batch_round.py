"""``run_round``'s failure branches on the real tiny DiffusionGemma denoiser, with faults injected
around it: a window that cannot start, one that cannot take its next block, and a failed step each
end in exactly one error final, and the round goes on for the others."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch

from engine.batch_round import run_round
from engine.diffusion.denoiser import StepResult
from engine.diffusion.gemma import DiffusionGemmaDenoiser
from engine.scheduler import Scheduler
from engine.types import CanvasKey, CanvasRequest, DiffusionParams, Draft, Final
from tests.unit.test_engine import EOS, make_request


class Faulty:
    """The real denoiser, except that chosen windows fail where asked."""

    def __init__(self, real: DiffusionGemmaDenoiser) -> None:
        self.real = real
        self.fail_start: set[CanvasKey] = set()
        self.fail_extend: set[CanvasKey] = set()
        self.fail_step_with: CanvasKey | None = None
        self._keys: dict[int, CanvasKey] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def start(self, seq_id: int, request: CanvasRequest) -> None:
        self._keys[seq_id] = request.key
        if request.key in self.fail_start:
            raise RuntimeError("cannot start")
        self.real.start(seq_id, request)

    def next_block(self, seq_id: int, block: Sequence[int]) -> None:
        if self._keys[seq_id] in self.fail_extend:
            raise RuntimeError("cannot extend")
        self.real.next_block(seq_id, block)

    def step(self, seq_ids: Sequence[int], steps_remaining: Sequence[int]) -> list[StepResult]:
        if self.fail_step_with is not None and self.fail_step_with in {self._keys[s] for s in seq_ids}:
            raise RuntimeError("step failed")
        return self.real.step(seq_ids, steps_remaining)


@pytest.fixture
def faulty(tiny_model: Any) -> Iterator[Faulty]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Faulty(DiffusionGemmaDenoiser(tiny_model, tokenizer=None, eos_token_ids=[EOS]))
    torch.set_num_threads(threads)


def scheduler_for(denoiser: Faulty) -> Scheduler:
    return Scheduler(
        canvas_length=denoiser.canvas_length,
        eos_token_ids=denoiser.eos_token_ids,
        decode=lambda tokens: " ".join(str(t) for t in tokens),
    )


def run_all(scheduler: Scheduler, denoiser: Faulty) -> list[Draft | Final]:
    events: list[Draft | Final] = []
    for _ in range(200):
        if scheduler.idle:
            return events
        events.extend(run_round(scheduler, denoiser).events)  # type: ignore[arg-type]
    raise AssertionError("the windows never finished")


def finals_by_window(events: list[Draft | Final]) -> dict[int, Final]:
    finals: dict[int, Final] = {}
    for event in events:
        if isinstance(event, Final):
            assert event.key.window not in finals, f"window {event.key.window} got a second final"
            finals[event.key.window] = event
    return finals


def three_windows(*, blocks: int = 1) -> list[CanvasRequest]:
    params = DiffusionParams(max_denoising_steps=3)
    return [make_request(w, [2, 10 + w, 11 + w], 100 + w, params, 16 * blocks) for w in range(3)]


def test_a_window_that_cannot_start_gets_one_error_final_and_the_rest_run(faulty: Faulty) -> None:
    scheduler = scheduler_for(faulty)
    requests = three_windows()
    faulty.fail_start.add(requests[1].key)
    for request in requests:
        scheduler.add(request)
    finals = finals_by_window(run_all(scheduler, faulty))
    assert set(finals) == {0, 1, 2}
    assert finals[1].error == "engine could not start this window: cannot start"
    assert finals[0].error is None
    assert finals[2].error is None


def test_a_window_that_cannot_take_its_next_block_ends_with_an_error_final(faulty: Faulty) -> None:
    scheduler = scheduler_for(faulty)
    requests = three_windows(blocks=4)  # room for more blocks than the canvas holds
    faulty.fail_extend.add(requests[0].key)
    for request in requests:
        scheduler.add(request)
    events = run_all(scheduler, faulty)
    finals = finals_by_window(events)
    assert set(finals) == {0, 1, 2}
    assert finals[0].error == "engine could not continue this window: cannot extend"
    assert not [e for e in events if e.key.window == 0 and isinstance(e, Draft) and e.steps > 3]
    assert finals[1].error is None
    assert finals[1].tokens > faulty.canvas_length  # the others did take further blocks
    assert finals[2].error is None


def test_a_failed_step_ends_every_window_in_it_and_the_next_windows_run(faulty: Faulty) -> None:
    scheduler = scheduler_for(faulty)
    first, second = three_windows()[:2], three_windows()[2]
    faulty.fail_step_with = first[0].key
    for request in first:
        scheduler.add(request)
    done = run_round(scheduler, faulty)  # type: ignore[arg-type]
    assert done.results == []
    assert {(f.key.window, f.error) for f in done.events if isinstance(f, Final)} == {
        (0, "denoising step failed: step failed"),
        (1, "denoising step failed: step failed"),
    }
    assert scheduler.running == 0
    scheduler.add(second)
    finals = finals_by_window(run_all(scheduler, faulty))
    assert finals[2].error is None
    assert finals[2].steps >= 1
