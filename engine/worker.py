"""The engine worker: the one thread that owns the model.

Threading rules:

* the worker thread loads the model, and is the only thread that ever touches it, its tokenizer or
  the scheduler;
* other threads (the asyncio server) hand it ``WindowJob``s through ``submit()``, a thread-safe queue;
* results leave through the ``emit`` callback, called on the worker thread with each step's drafts and
  finals; the server's callback forwards them to its event loop with ``call_soon_threadsafe``;
* while canvases are live the loop never blocks: it picks up new jobs at every step boundary, so new
  canvases join the running batch; when nothing is live it sleeps on the queue.

A failure to start or extend one canvas gives that canvas an error final; a failed step gives every
canvas of that step an error final. The worker itself keeps running.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.model_thread import ModelThread
from engine.runtime import LoadedModel, WindowJob, warm_up
from engine.scheduler import Batch, Scheduler
from engine.types import Draft, Final

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
    max_batch_seen: int = 0

    @property
    def mean_batch(self) -> float:
        return self.canvases_stepped / self.forwards if self.forwards else 0.0


class _Stop:
    def __init__(self, drain: bool) -> None:
        self.drain = drain


class EngineWorker(ModelThread[LoadedModel]):
    """See the module docstring."""

    def __init__(
        self,
        load: Callable[[], LoadedModel],
        emit: Callable[[list[EngineEvent]], None],
        *,
        max_batch: int = 32,
        torch_threads: int | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        """``on_step(canvases, seconds)`` is called on the worker thread after every denoising forward
        (the server's metrics); it must be quick and must not raise."""

        def load_and_warm_up() -> LoadedModel:
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
        self._inbox: queue.SimpleQueue[WindowJob | _Stop] = queue.SimpleQueue()
        self.stats = WorkerStats()

    # -- called from other threads ------------------------------------------------------------------
    def submit(self, job: WindowJob) -> None:
        self._inbox.put(job)

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the thread; with ``drain`` every queued and live canvas is finished first."""
        if self.alive:
            self._inbox.put(_Stop(drain))
            self._join(timeout)

    # -- the worker thread --------------------------------------------------------------------------
    def _serve(self, model: LoadedModel) -> None:
        denoiser = model.denoiser
        scheduler = Scheduler(
            canvas_length=denoiser.canvas_length,
            eos_token_ids=denoiser.eos_token_ids,
            decode=denoiser.decode,
            max_batch=self._max_batch,
        )
        stopping: _Stop | None = None
        while True:
            item = self._inbox.get() if scheduler.idle and stopping is None else self._poll()
            while item is not None:
                if isinstance(item, _Stop):
                    stopping = item
                else:
                    self._admit(model, item, scheduler)
                item = self._poll()
            if stopping is not None and (not stopping.drain or scheduler.idle):
                return
            self._run_batch(model, scheduler.schedule(), scheduler)

    def _poll(self) -> WindowJob | _Stop | None:
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _admit(self, model: LoadedModel, job: WindowJob, scheduler: Scheduler) -> None:
        self.stats.jobs += 1
        try:
            request = model.request_for(job)
        except Exception as error:
            logger.warning("window %s refused: %s", job.key, error)
            self.stats.errors += 1
            self.stats.finals += 1
            self._emit([Final(key=job.key, rev=0, text="", steps=0, tokens=0, error=str(error))])
            return
        scheduler.add(request)

    def _run_batch(self, model: LoadedModel, batch: Batch, scheduler: Scheduler) -> None:
        denoiser = model.denoiser
        for seq_id in batch.release:
            denoiser.release(seq_id)
        failed: dict[int, str] = {}
        for seq_id, request in batch.start:
            try:
                denoiser.start(seq_id, request)
            except Exception as error:
                logger.exception("canvas %s failed to start", request.key)
                failed[seq_id] = f"engine could not start this window: {error}"
        for seq_id, block in batch.extend:
            try:
                denoiser.next_block(seq_id, block)
            except Exception as error:
                logger.exception("canvas %d failed to extend", seq_id)
                failed[seq_id] = f"engine could not continue this window: {error}"
        events: list[EngineEvent] = []
        for seq_id, reason in failed.items():
            events.extend(scheduler.fail([seq_id], reason))
        batch = batch.without(set(failed))
        if batch.step:
            started = time.perf_counter()
            try:
                results = denoiser.step(batch.step, batch.steps_remaining)
            except Exception as error:
                logger.exception("denoising step over %d canvases failed", len(batch.step))
                events.extend(scheduler.fail(batch.step, f"denoising step failed: {error}"))
            else:
                events.extend(scheduler.update(batch, results))
                self.stats.forwards += 1
                self.stats.canvases_stepped += len(batch.step)
                self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(batch.step))
                if self._on_step is not None:
                    self._on_step(len(batch.step), time.perf_counter() - started)
                logger.debug(
                    "step of %d canvases in %.1f ms", len(batch.step), 1e3 * (time.perf_counter() - started)
                )
        finals = [e for e in events if isinstance(e, Final)]
        self.stats.finals += len(finals)
        self.stats.errors += sum(1 for f in finals if f.error is not None)
        if events:
            self._emit(events)
