"""The replicas of livecanvas's Ray Serve deployments: what runs inside each one.

``TranslatorReplica`` owns one :class:`~engine.worker.EngineWorker` (scheduler and batched denoiser on
one model thread). ``translate(job)`` is a streaming method: it submits the window job to the worker
and yields :class:`Progress` items (the window's drafts, then its final) as the worker emits them.
Replicas take many requests at once (``max_ongoing_requests``), so concurrent windows of every front end
routed here join the same step batches. Window keys are made unique per request inside the replica
(two front ends may both have a stream called ``main``); the seed still follows the front end's key, so
a window gets the same translation on any replica as on a local engine. A request cancelled by its
caller (its viewers left) cancels the window in the worker.

``RecogniserReplica`` owns one :class:`~engine.asr_worker.AsrWorker`: concurrent ``transcribe`` calls
from every front end queue there and are batched into its rounds. The commit policy (which words are
final) stays with each stream's front end.

Both raise from ``check_health`` once their model thread has died, so Serve replaces the replica.
Nothing here imports Ray: Serve wraps these classes (:mod:`engine.cluster.deploy`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from engine.asr import AsrRequest, RecogniserSettings
from engine.asr_worker import AsrWorker
from engine.models import ModelCard
from engine.recognisers import load_recogniser
from engine.runtime import load_model
from engine.types import CanvasKey, Final, WindowJob, Word
from engine.worker import EngineEvent, EngineWorker

logger = logging.getLogger("livecanvas.cluster")


@dataclass(frozen=True, slots=True)
class TranslatorSettings:
    """What each translator replica loads and how it batches."""

    model: str = "embedded"
    device: str = "cpu"  # "cuda" for replicas placed on GPUs
    dtype: str = "auto"
    sampler: str = "fast"
    int8: bool | None = None  # None: the model's default (engine.runtime.load_model)
    max_batch: int = 32
    threads: int = 0  # torch threads (0: torch's default)
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Progress:
    """One batch of a window's events from a replica, with that replica's engine counters."""

    events: tuple[EngineEvent, ...]
    replica: str
    forwards: int
    canvases_stepped: int
    max_batch: int


class TranslatorReplica:
    """See the module docstring."""

    def __init__(self, settings: TranslatorSettings) -> None:
        self.name = f"{os.uname().nodename}:{os.getpid()}"
        self._queues: dict[CanvasKey, asyncio.Queue[list[EngineEvent]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._request_ids = itertools.count()
        self.worker = EngineWorker(
            lambda: load_model(
                settings.model,
                device=settings.device,
                dtype=settings.dtype,
                seed=settings.seed,
                sampler="exact" if settings.sampler == "exact" else "fast",
                int8=settings.int8,
            ),
            self._from_worker,
            max_batch=settings.max_batch,
            torch_threads=settings.threads or None,
        )
        self.worker.start()
        self._card = self.worker.wait_ready().card
        logger.info("translator replica %s ready: %s", self.name, self._card.name)

    def card(self) -> ModelCard:
        return self._card

    async def translate(self, job: WindowJob) -> AsyncIterator[Progress]:
        """The window's drafts and its final, as the engine emits them."""
        self._loop = asyncio.get_running_loop()
        key = CanvasKey(f"{next(self._request_ids)}/{job.key.stream}", job.key.track, job.key.window)
        queue: asyncio.Queue[list[EngineEvent]] = asyncio.Queue()
        self._queues[key] = queue
        self.worker.submit(replace(job, key=key, seed_key=job.key, submitted_ns=time.monotonic_ns()))
        finished = False
        try:
            while not finished:
                events = await queue.get()
                finished = any(isinstance(e, Final) for e in events)
                stats = self.worker.stats
                yield Progress(
                    events=tuple(replace(e, key=job.key) for e in events),
                    replica=self.name,
                    forwards=stats.forwards,
                    canvases_stepped=stats.canvases_stepped,
                    max_batch=stats.max_batch_seen,
                )
        finally:
            del self._queues[key]
            if not finished:  # the caller went away (cancelled): the window stops costing steps
                self.worker.cancel([key])

    def check_health(self) -> None:
        if not self.worker.alive:
            raise RuntimeError(f"the engine thread of translator replica {self.name} has died")

    def _from_worker(self, events: list[EngineEvent]) -> None:
        """On the worker thread: hand each window's events to its request on the replica's loop."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._dispatch, events)

    def _dispatch(self, events: list[EngineEvent]) -> None:
        by_key: dict[CanvasKey, list[EngineEvent]] = {}
        for event in events:
            by_key.setdefault(event.key, []).append(event)
        for key, window_events in by_key.items():
            queue = self._queues.get(key)
            if queue is not None:  # None: a cancelled window's last events
                queue.put_nowait(window_events)


@dataclass(frozen=True, slots=True)
class RecogniserInfo:
    """What a front end needs to know of the cluster's recogniser: which passes it runs."""

    settings: RecogniserSettings
    replica: str


class RecogniserReplica:
    """See the module docstring."""

    def __init__(self, settings: RecogniserSettings, max_batch: int = 8) -> None:
        self.name = f"{os.uname().nodename}:{os.getpid()}"
        self._settings = settings
        self.worker = AsrWorker(lambda: load_recogniser(settings), max_batch=max_batch)
        self.worker.start()
        self.worker.wait_ready()
        logger.info("recogniser replica %s ready", self.name)

    def describe(self) -> RecogniserInfo:
        return RecogniserInfo(settings=self._settings, replica=self.name)

    async def transcribe(self, request: AsrRequest) -> list[Word]:
        """The words of one recognition pass, batched with every other request queued here."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[Word]] = loop.create_future()

        def settle(result: list[Word] | Exception) -> None:
            if done.done():
                return
            if isinstance(result, Exception):
                done.set_exception(result)
            else:
                done.set_result(result)

        def from_worker(result: list[Word] | Exception) -> None:
            loop.call_soon_threadsafe(settle, result)

        self.worker.submit(request, from_worker)
        return await done

    def check_health(self) -> None:
        if not self.worker.alive:
            raise RuntimeError(f"the recognition thread of recogniser replica {self.name} has died")
