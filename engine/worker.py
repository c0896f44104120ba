"""The engine worker: the one thread that owns the model.

Threading rules:

* the worker thread loads the model, and is the only thread that ever touches it, its tokenizer or
  the scheduler;
* other threads (the asyncio server) hand it ``WindowJob``s through ``submit()``, a thread-safe queue;
* results leave through the ``emit`` callback, called on the worker thread with each step's drafts and
  finals; the server's callback forwards them to its event loop with ``call_soon_threadsafe``;
* while canvases are live the loop never blocks: it picks up new jobs (and cancellations) at every
  step boundary, so new canvases join the running batch and cancelled ones leave it; when nothing is
  live it sleeps on the queue.

Jobs wait in a :class:`engine.fair_queue.FairQueue` and enter the scheduler only as places free up in
the batch, one stream at a time in turn: one stream's backlog never delays another stream's windows.
A job for a window the scheduler already holds (a newer provisional source, or the final job of a
window translated while open) revises that canvas (:meth:`engine.scheduler.Scheduler.add`); a parked
canvas takes its place in the batch again at once. A provisional job the model refuses (a source
over its budget, say) is dropped without a final: only the window's final job answers for it.

Each round is :func:`engine.batch_round.run_round`: a failure to start or extend one canvas gives that
canvas an error final; a failed step gives every canvas of that step an error final. The worker itself
keeps running.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Collection
from dataclasses import dataclass

from engine.batch_round import run_round
from engine.fair_queue import FairQueue
from engine.model_thread import ModelThread
from engine.runtime import ServingModel, warm_up
from engine.scheduler import Scheduler
from engine.types import CanvasKey, Draft, Final, WindowJob

logger = logging.getLogger("livecanvas.engine")

EngineEvent = Draft | Final


@dataclass
class WorkerStats:
    """Counters, written by the worker thread and read by anyone (plain ints: reads are atomic)."""

    forwards: int = 0
    canvases_stepped: int = 0
    jobs: int = 0
    finals: int = 0
    errors: int = 0
    cancelled: int = 0  # windows dropped before their final (nobody left to read them)
    max_batch_seen: int = 0
    busy_s: float = 0.0  # seconds spent in denoising forwards

    @property
    def mean_batch(self) -> float:
        return self.canvases_stepped / self.forwards if self.forwards else 0.0


class _Stop:
    def __init__(self, drain: bool) -> None:
        self.drain = drain


@dataclass(frozen=True, slots=True)
class _Cancel:
    keys: frozenset[CanvasKey]


class EngineWorker(ModelThread[ServingModel]):
    """See the module docstring."""

    def __init__(
        self,
        load: Callable[[], ServingModel],
        emit: Callable[[list[EngineEvent]], None],
        *,
        max_batch: int = 32,
        torch_threads: int | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        """``on_step(canvases, seconds)`` is called on the worker thread after every denoising forward
        (the server's metrics); it must be quick and must not raise."""

        def load_and_warm_up() -> ServingModel:
            if torch_threads:
                import torch

                torch.set_num_threads(torch_threads)
            model = load()
            warm_up(model)
            return model

        super().__init__(load_and_warm_up, name="livecanvas-engine")
        self._emit = emit
        self._max_batch = max_batch
        self._on_step = on_step
        self._inbox: queue.SimpleQueue[WindowJob | _Cancel | _Stop] = queue.SimpleQueue()
        self.stats = WorkerStats()

    # -- called from other threads ------------------------------------------------------------------
    def submit(self, job: WindowJob) -> None:
        self._inbox.put(job)

    def cancel(self, keys: Collection[CanvasKey]) -> None:
        """Drop these windows, queued or live, without finals: their canvases stop costing steps at the
        next step boundary. Jobs submitted before the call are dropped too."""
        self._inbox.put(_Cancel(frozenset(keys)))

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the thread; with ``drain`` every queued and live canvas is finished first."""
        if self.alive:
            self._inbox.put(_Stop(drain))
            self._join(timeout)

    # -- the worker thread --------------------------------------------------------------------------
    def _serve(self, model: ServingModel) -> None:
        denoiser = model.denoiser
        scheduler = Scheduler(
            canvas_length=denoiser.canvas_length,
            eos_token_ids=denoiser.eos_token_ids,
            decode=denoiser.decode,
            max_batch=self._max_batch,
        )
        queued = FairQueue()
        stopping: _Stop | None = None
        while True:
            idle = scheduler.idle and not len(queued)
            item = self._inbox.get() if idle and stopping is None else self._poll()
            while item is not None:
                if isinstance(item, _Stop):
                    stopping = item
                elif isinstance(item, _Cancel):
                    self.stats.cancelled += len(queued.abort(item.keys)) + len(scheduler.abort(item.keys))
                else:
                    self.stats.jobs += 1
                    queued.put(item)
                item = self._poll()
            for job in queued.take(self._max_batch - scheduler.running - scheduler.waiting):
                self._admit(model, job, scheduler)
            if stopping is not None and (not stopping.drain or (scheduler.idle and not len(queued))):
                return
            self._run_round(model, scheduler)

    def _poll(self) -> WindowJob | _Cancel | _Stop | None:
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _admit(self, model: ServingModel, job: WindowJob, scheduler: Scheduler) -> None:
        try:
            request = model.request_for(job)
        except Exception as error:
            if job.provisional:  # an open window's text: no draft for it; its final job says what is wrong
                logger.debug("open window %s not translated: %s", job.key, error)
                return
            logger.warning("window %s refused: %s", job.key, error)
            self.stats.errors += 1
            self.stats.finals += 1
            self._emit([Final.failed(job.key, str(error))])
            return
        scheduler.add(request)

    def _run_round(self, model: ServingModel, scheduler: Scheduler) -> None:
        done = run_round(scheduler, model.denoiser)
        if done.results:
            self.stats.forwards += 1
            self.stats.canvases_stepped += len(done.batch.step)
            self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(done.batch.step))
            self.stats.busy_s += done.step_seconds
            if self._on_step is not None:
                self._on_step(len(done.batch.step), done.step_seconds)
            logger.debug("step of %d canvases in %.1f ms", len(done.batch.step), 1e3 * done.step_seconds)
        finals = [e for e in done.events if isinstance(e, Final)]
        self.stats.finals += len(finals)
        self.stats.errors += sum(1 for f in finals if f.error is not None)
        if done.events:
            self._emit(done.events)
