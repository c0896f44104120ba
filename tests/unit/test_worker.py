"""The engine worker thread on the real embedded model: drafts, one final per job, errors, drain, stats."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from engine.diffusion.canvas_denoiser import CanvasDenoiser
from engine.diffusion.mask_schedule import CanvasSettings
from engine.runtime import ServingModel, load_model
from engine.translator import CanvasModel
from engine.types import CanvasKey, DiffusionParams, Draft, EarlyExitParams, Final, WindowJob
from engine.worker import EngineEvent, EngineWorker

WAIT_S = 60.0
SENTENCES = (
    "Good morning, everyone.",
    "The meeting starts at ten.",
    "Please take your seats.",
    "We have a lot to cover today.",
    "Questions come at the end.",
    "Thank you for coming.",
)


class Collector:
    """The worker's ``emit``: records events from the worker thread; the test thread waits on finals."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[EngineEvent] = []
        self._finals = 0
        self._finals_wanted: int | None = None
        self._enough = threading.Event()

    def __call__(self, events: list[EngineEvent]) -> None:
        with self._lock:
            self._events.extend(events)
            self._finals += sum(isinstance(e, Final) for e in events)
            if self._finals_wanted is not None and self._finals >= self._finals_wanted:
                self._enough.set()

    def wait_for_finals(self, count: int, timeout: float = WAIT_S) -> list[EngineEvent]:
        """Every event so far, once at least ``count`` finals have arrived in all."""
        with self._lock:
            self._finals_wanted = count
            if self._finals >= count:
                self._enough.set()
            else:
                self._enough.clear()
        assert self._enough.wait(timeout), f"fewer than {count} finals after {timeout} s"
        return self.events

    @property
    def events(self) -> list[EngineEvent]:
        with self._lock:
            return list(self._events)


THREE_STEPS = DiffusionParams(max_denoising_steps=3, entropy_bound=1e-9)
"""Every step runs, so every window shows a draft (after step 1) before its final (after step 3)."""


def job(window: int, source: str, *, track: str = "pt") -> WindowJob:
    return WindowJob(
        key=CanvasKey("s", track, window),
        source=source,
        context=(),
        source_lang="en",
        target_lang=track,
        submitted_ns=0,
        diffusion=THREE_STEPS,
        early_exit=EarlyExitParams(draft_step=1),
    )


def finals_of(events: list[EngineEvent]) -> dict[CanvasKey, Final]:
    finals: dict[CanvasKey, Final] = {}
    for event in events:
        if isinstance(event, Final):
            assert event.key not in finals, f"{event.key} got a second final"
            finals[event.key] = event
    return finals


def load_embedded() -> ServingModel:
    """The shipped translator denoising alone (Mask-Predict's linear schedule over each request's step
    budget, no verification), so a window runs exactly the steps its request allows."""
    model = load_model(None)
    assert isinstance(model, CanvasModel)
    alone = CanvasSettings()
    directions = [replace(d, verifier=None, settings=alone) for d in model.denoiser.directions]
    cards = [replace(c, verify=False, settings=alone) for c in model.directions]
    return replace(model, denoiser=CanvasDenoiser(directions), directions=cards)


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def worker(livecanvas_cache: Path, collector: Collector) -> Iterator[EngineWorker]:
    engine = EngineWorker(load_embedded, collector, max_batch=32)
    engine.start()
    engine.wait_ready(WAIT_S)
    yield engine
    engine.stop(drain=False, timeout=WAIT_S)
    assert not engine.alive


def test_each_job_gets_drafts_then_exactly_one_final(worker: EngineWorker, collector: Collector) -> None:
    jobs = [job(i, sentence) for i, sentence in enumerate(SENTENCES[:3])]
    for window_job in jobs:
        worker.submit(window_job)
    events = collector.wait_for_finals(len(jobs))
    finals = finals_of(events)
    assert set(finals) == {j.key for j in jobs}
    model = worker.model
    assert model is not None
    for window_job in jobs:
        final = finals[window_job.key]
        assert final.error is None
        own = [e for e in events if e.key == window_job.key]
        assert own[-1] is final  # nothing after the final
        drafts = [e for e in own if isinstance(e, Draft)]
        assert drafts, f"{window_job.key} had no draft: {own}"
        assert [d.rev for d in drafts] == list(range(len(drafts)))
        assert final.rev == len(drafts)
        assert [d.steps for d in drafts] == sorted(d.steps for d in drafts)
        assert 0 < drafts[0].steps < final.steps
        max_new = model.request_for(window_job).max_new_tokens
        assert 0 <= final.tokens <= max_new
        assert final.steps >= 1
    assert worker.stats.jobs == 3
    assert worker.stats.finals == 3
    assert worker.stats.errors == 0
    assert worker.alive


def test_a_job_over_the_context_budget_fails_alone(worker: EngineWorker, collector: Collector) -> None:
    worker.submit(job(0, SENTENCES[0]))
    worker.submit(job(1, "x" * 20_000))
    worker.submit(job(2, SENTENCES[1]))
    events = collector.wait_for_finals(3)
    finals = finals_of(events)
    failed = finals[CanvasKey("s", "pt", 1)]
    assert failed.error is not None
    assert "budget" in failed.error
    assert (failed.text, failed.tokens, failed.steps) == ("", 0, 0)
    assert not [e for e in events if isinstance(e, Draft) and e.key.window == 1]
    for window in (0, 2):
        assert finals[CanvasKey("s", "pt", window)].error is None
        assert finals[CanvasKey("s", "pt", window)].steps > 0
    assert worker.stats.errors == 1
    assert worker.stats.finals == 3
    # the worker goes on serving after a refused window
    worker.submit(job(3, SENTENCES[2]))
    more = finals_of(collector.wait_for_finals(4))
    assert more[CanvasKey("s", "pt", 3)].error is None


def test_a_load_failure_is_re_raised_by_wait_ready(collector: Collector) -> None:
    class CheckpointMissing(RuntimeError):
        pass

    def load() -> ServingModel:
        raise CheckpointMissing("no checkpoint at /nowhere")

    engine = EngineWorker(load, collector)
    engine.start()
    with pytest.raises(CheckpointMissing, match="/nowhere"):
        engine.wait_ready(WAIT_S)
    engine.stop(timeout=WAIT_S)
    assert not engine.alive
    assert engine.model is None
    assert collector.events == []


def test_wait_ready_times_out_while_the_model_loads(livecanvas_cache: Path, collector: Collector) -> None:
    release = threading.Event()

    def slow_load() -> ServingModel:
        assert release.wait(WAIT_S)
        return load_model(None)

    engine = EngineWorker(slow_load, collector)
    engine.start()
    try:
        with pytest.raises(TimeoutError):
            engine.wait_ready(0.05)
    finally:
        release.set()
    assert engine.wait_ready(WAIT_S) is engine.model
    engine.stop(timeout=WAIT_S)
    assert not engine.alive


def test_stop_with_drain_finishes_queued_jobs(livecanvas_cache: Path, collector: Collector) -> None:
    engine = EngineWorker(load_embedded, collector)
    engine.start()
    engine.wait_ready(WAIT_S)
    jobs = [job(i, sentence) for i, sentence in enumerate(SENTENCES[:4])]
    for window_job in jobs:
        engine.submit(window_job)
    engine.stop(drain=True, timeout=WAIT_S)
    assert not engine.alive
    finals = finals_of(collector.events)
    assert set(finals) == {j.key for j in jobs}
    assert all(final.error is None for final in finals.values())
    assert engine.stats.finals == len(jobs)


def test_stats_are_consistent_with_the_finals(worker: EngineWorker, collector: Collector) -> None:
    jobs = [job(i, sentence) for i, sentence in enumerate(SENTENCES)]
    for window_job in jobs:
        worker.submit(window_job)
    finals = finals_of(collector.wait_for_finals(len(jobs)))
    stats = worker.stats
    assert stats.jobs == stats.finals == len(jobs)
    assert stats.errors == 0
    # every canvas step is one row of one forward
    assert stats.canvases_stepped == sum(final.steps for final in finals.values())
    assert stats.canvases_stepped >= stats.forwards >= max(final.steps for final in finals.values())
    assert 2 <= stats.max_batch_seen <= len(jobs)
    assert stats.mean_batch > 1
    assert stats.mean_batch == stats.canvases_stepped / stats.forwards


def test_max_batch_bounds_the_canvases_per_forward(livecanvas_cache: Path, collector: Collector) -> None:
    engine = EngineWorker(load_embedded, collector, max_batch=2)
    engine.start()
    engine.wait_ready(WAIT_S)
    try:
        for i, sentence in enumerate(SENTENCES[:5]):
            engine.submit(job(i, sentence))
        finals = finals_of(collector.wait_for_finals(5))
    finally:
        engine.stop(drain=False, timeout=WAIT_S)
    assert len(finals) == 5
    assert engine.stats.max_batch_seen == 2
    assert engine.stats.canvases_stepped == sum(final.steps for final in finals.values())


def test_cancelled_windows_stop_costing_steps_and_get_no_final(
    worker: EngineWorker, collector: Collector
) -> None:
    """A track nobody reads any more: its queued and live windows leave the batch at once."""
    endless = DiffusionParams(max_denoising_steps=10_000, entropy_bound=1e-9)
    dropped = [
        replace(job(i, sentence), key=CanvasKey("gone", "pt", i), diffusion=endless)
        for i, sentence in enumerate(SENTENCES)
    ]
    for window_job in dropped:
        worker.submit(window_job)
    kept = job(99, SENTENCES[0])
    worker.submit(kept)
    finals = finals_of(collector.wait_for_finals(1))  # the kept window ran beside the endless ones
    assert set(finals) == {kept.key}
    worker.cancel({j.key for j in dropped})
    worker.submit(job(100, SENTENCES[1]))  # behind the cancel in the queue: its final proves it was done
    finals = finals_of(collector.wait_for_finals(2))
    assert set(finals) == {kept.key, CanvasKey("s", "pt", 100)}
    forwards = worker.stats.forwards
    worker.submit(job(101, SENTENCES[2]))
    collector.wait_for_finals(3)
    assert worker.stats.forwards - forwards == THREE_STEPS.max_denoising_steps  # the cancelled ran no more
    assert worker.stats.cancelled == len(dropped)
    assert not [e for e in collector.events if isinstance(e, Final) and e.key.stream == "gone"]


def test_a_flooding_stream_does_not_delay_another_streams_window(livecanvas_cache: Path) -> None:
    """96 windows of one stream queued, then one of another: that one is admitted at the next free
    place in the batch, so its final comes among the first finals, not after the flood's."""
    collector = Collector()
    engine = EngineWorker(load_embedded, collector, max_batch=8)
    engine.start()
    engine.wait_ready(WAIT_S)
    try:
        for window in range(96):
            engine.submit(
                replace(job(window, SENTENCES[window % len(SENTENCES)]), key=CanvasKey("flood", "pt", window))
            )
        engine.submit(replace(job(0, SENTENCES[0]), key=CanvasKey("calm", "pt", 0)))
        events = collector.wait_for_finals(97)
    finally:
        engine.stop(drain=False, timeout=WAIT_S)
    order = [e.key.stream for e in events if isinstance(e, Final)]
    assert order.index("calm") < 2 * 8, f"the calm stream's final came {order.index('calm') + 1}th of 97"
    flood = [e.key.window for e in events if isinstance(e, Final) and e.key.stream == "flood"]
    assert sorted(flood) == list(range(96))


def test_an_open_windows_sources_edit_one_canvas_and_its_final_follows_them(
    worker: EngineWorker, collector: Collector
) -> None:
    words = SENTENCES[3].split()
    for count in range(2, len(words) + 1):
        worker.submit(replace(job(0, " ".join(words[:count])), provisional=True))
    worker.submit(replace(job(1, "x" * 20_000), provisional=True))  # over budget: no draft, no final
    worker.submit(job(0, SENTENCES[3]))
    events = collector.wait_for_finals(1)
    finals = finals_of(events)
    assert list(finals) == [CanvasKey("s", "pt", 0)]
    own = [e for e in events if e.key.window == 0]
    drafts = [e for e in own if isinstance(e, Draft)]
    assert own[-1] is finals[CanvasKey("s", "pt", 0)]
    assert finals[CanvasKey("s", "pt", 0)].rev == len(drafts)
    assert [d.rev for d in drafts] == list(range(len(drafts)))
    assert worker.stats.errors == 0
    worker.cancel([CanvasKey("s", "pt", 1)])
    worker.submit(job(2, SENTENCES[0]))  # the worker goes on
    assert CanvasKey("s", "pt", 2) in finals_of(collector.wait_for_finals(2))
    assert not [e for e in collector.events if e.key.window == 1]
