"""A front end's side of the cluster: ``EngineWorker``'s and ``AsrWorker``'s interfaces over Ray Serve
deployment handles, so the server and the hub cannot tell a cluster from a local model.

Each worker joins the Ray cluster (``ray.init``; one connection per process) and runs its own asyncio
loop on its own thread; ``submit`` and ``cancel`` hand work to that loop from any thread, results leave
through the same callbacks as the local workers'.

Faults. A request whose replica dies (or that fails in transit) is sent again, to a replica that Serve
still routes to, up to ``retries`` times, ``retry_delay_s`` apart; after that the window gets an error
final (a recognition pass, the exception). A replica that sends nothing for ``stall_timeout_s`` while a
window is in flight counts as failed for that window (its request is cancelled). Drafts are renumbered
here, so a retried window's drafts go on from the last revision its viewers saw; a window's final is
delivered at most once, and every window submitted gets one (a cancelled window gets none, as with the
local worker). A background task reads the deployment's replica states every ``health_every_s`` for
``/healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.asr import AsrRequest
from engine.asr_worker import AsrCallback, AsrStats
from engine.cluster.replicas import Progress, RecogniserInfo
from engine.cluster.spec import RaySpec
from engine.errors import EngineError
from engine.model_thread import ModelThread
from engine.models import ModelCard, ResolvedModel
from engine.types import CanvasKey, Draft, Final, WindowJob
from engine.worker import EngineEvent, WorkerStats

logger = logging.getLogger("livecanvas.cluster")

_connect_lock = threading.Lock()


def join_cluster(address: str) -> None:
    """Connect this process to the Ray cluster at ``address`` (once; later calls reuse it)."""
    import ray

    with _connect_lock:
        if not ray.is_initialized():
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)


def app_handle(spec: RaySpec) -> Any:
    """The Serve application's handle (``ray.serve.handle.DeploymentHandle``)."""
    from ray import serve

    join_cluster(spec.address)
    return serve.get_app_handle(spec.app)


def replica_states(app: str) -> dict[str, int]:
    """Replica counts by state (``RUNNING``, ``STARTING``, ...) of the application's deployments."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return {}
    counts: dict[str, int] = {}
    for deployment in status.deployments.values():
        for state, count in deployment.replica_states.items():
            counts[str(state)] = counts.get(str(state), 0) + count
    return counts


def unreachable(spec: RaySpec, role: str, error: Exception) -> EngineError:
    """The error a front end reports when the cluster's application cannot be reached at start-up."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return EngineError(
        f"cannot reach the {role} application {spec.app!r} on the Ray cluster at {spec.address} "
        f"({type(error).__name__}: {first_line}); start the cluster and run `livecanvas deploy` first"
    )


@dataclass(frozen=True, slots=True)
class ClusterModel:
    """What the front end knows of a cluster translator: the spec it was given and the card."""

    resolved: ResolvedModel
    card: ModelCard
    handle: Any


@dataclass
class ClusterStats(WorkerStats):
    """``WorkerStats`` summed over the replicas seen, plus retries."""

    retries: int = 0
    replicas: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> counters

    def fold(self, progress: Progress) -> None:
        self.replicas[progress.replica] = (progress.forwards, progress.canvases_stepped, progress.max_batch)
        self.forwards = sum(f for f, _, _ in self.replicas.values())
        self.canvases_stepped = sum(s for _, s, _ in self.replicas.values())
        self.max_batch_seen = max(m for _, _, m in self.replicas.values())


class _LoopThread:
    """An asyncio loop that runs on the model thread once it is ready; usable (queued) before."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def call(self, callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # closed at shutdown
            self.loop.call_soon_threadsafe(callback, *args)

    def run(self, background: Callable[[], Any] | None = None) -> None:
        asyncio.set_event_loop(self.loop)
        task = self.loop.create_task(background()) if background is not None else None
        try:
            self.loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            if task is not None:
                pending.append(task)
            for pending_task in pending:
                pending_task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()


class RayEngineWorker(ModelThread[ClusterModel]):
    """See the module docstring."""

    def __init__(
        self,
        spec: RaySpec,
        emit: Callable[[list[EngineEvent]], None],
        *,
        retries: int = 3,
        retry_delay_s: float = 0.5,
        stall_timeout_s: float = 60.0,
        health_every_s: float = 2.0,
    ) -> None:
        super().__init__(self._connect, name="livecanvas-ray-engine")
        self._stall_timeout_s = stall_timeout_s
        self.spec = spec
        self._emit = emit
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._health_every_s = health_every_s
        self._runner = _LoopThread()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight: dict[CanvasKey, int] = {}  # key -> drafts delivered so far
        self._tasks: dict[CanvasKey, asyncio.Task[None]] = {}  # the loop's thread only
        self.stats = ClusterStats()
        self.replica_states: dict[str, int] = {}

    # -- called from other threads ------------------------------------------------------------------
    def submit(self, job: WindowJob) -> None:
        """Send a window to the cluster. A provisional job (an open window's text) is not sent: a
        replica's request ends with the window's final, and Serve routes a window's requests to any
        replica, so its canvas could not be edited in place; over a cluster, windows are translated
        once they close (docs/scaling.md)."""
        if job.provisional:
            return
        with self._lock:
            self.stats.jobs += 1
            self._in_flight[job.key] = 0
        self._runner.call(self._start, job)

    def cancel(self, keys: Collection[CanvasKey]) -> None:
        """Drop these windows without finals; their requests are cancelled, which cancels them in the
        replica's engine."""
        with self._idle:
            dropped = [key for key in keys if self._in_flight.pop(key, None) is not None]
            self.stats.cancelled += len(dropped)
            self._idle.notify_all()
        if dropped:
            self._runner.call(self._cancel_tasks, dropped)

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop; with ``drain`` the windows in flight get their finals first. Windows still in flight
        after that get an error final."""
        if drain:
            with self._idle:
                self._idle.wait_for(lambda: not self._in_flight or not self.alive, timeout)
        self._runner.call(self._runner.loop.stop)
        self._join(timeout)
        self._fail_in_flight("the front end stopped before the cluster answered")

    # -- the worker thread --------------------------------------------------------------------------
    def _connect(self) -> ClusterModel:
        try:
            handle = app_handle(self.spec)
            card: ModelCard = handle.card.remote().result(timeout_s=120)
            self.replica_states = replica_states(self.spec.app)
        except Exception as error:
            self._runner.loop.close()  # never to run
            raise unreachable(self.spec, "translator", error) from error
        return ClusterModel(ResolvedModel(str(self.spec), Path(self.spec.app)), card, handle)

    def _serve(self, model: ClusterModel) -> None:
        self._runner.run(self._watch_replicas)

    async def _watch_replicas(self) -> None:
        while True:
            await asyncio.sleep(self._health_every_s)
            try:
                self.replica_states = await asyncio.to_thread(replica_states, self.spec.app)
            except Exception as error:  # the controller is unreachable: report no running replica
                logger.warning("cannot read the cluster's replica states: %s", error)
                self.replica_states = {}

    def _start(self, job: WindowJob) -> None:
        with self._lock:
            if job.key not in self._in_flight:  # cancelled before it started
                return
        self._tasks[job.key] = self._runner.loop.create_task(self._translate(job))

    def _cancel_tasks(self, keys: list[CanvasKey]) -> None:
        for key in keys:
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()

    async def _translate(self, job: WindowJob) -> None:
        model = self.model
        assert model is not None
        error: Exception | None = None
        try:
            for attempt in range(self._retries + 1):
                if attempt:
                    with self._lock:
                        self.stats.retries += 1
                    logger.warning("window %s: retrying on another replica (%s)", job.key, error)
                    await asyncio.sleep(self._retry_delay_s)
                stream = model.handle.options(stream=True).translate.remote(job)
                try:
                    while True:
                        async with asyncio.timeout(self._stall_timeout_s):
                            progress = await anext(stream, None)
                        if progress is None:
                            error = RuntimeError("the replica ended the window without a final")
                            break
                        if self._deliver(progress):
                            return
                except asyncio.CancelledError:
                    stream.cancel()
                    raise
                except TimeoutError:
                    stream.cancel()
                    error = TimeoutError(f"no word from the replica for {self._stall_timeout_s:g} s")
                except Exception as failure:
                    error = failure
            reason = f"the cluster could not translate this window: {type(error).__name__}: {error}"
            self._fail([job.key], reason.splitlines()[0])
        finally:
            if self._tasks.get(job.key) is asyncio.current_task():
                del self._tasks[job.key]

    def _deliver(self, progress: Progress) -> bool:
        """Hand a replica's events on (drafts renumbered); True once the window's final is in."""
        out: list[EngineEvent] = []
        finished = False
        with self._idle:
            self.stats.fold(progress)
            for event in progress.events:
                drafts = self._in_flight.get(event.key)
                if drafts is None:  # cancelled, or already final
                    continue
                if isinstance(event, Draft):
                    out.append(replace(event, rev=drafts))
                    self._in_flight[event.key] = drafts + 1
                else:
                    out.append(replace(event, rev=drafts))
                    del self._in_flight[event.key]
                    self.stats.finals += 1
                    self.stats.errors += event.error is not None
                    finished = True
            self._idle.notify_all()
        if out:
            self._emit(out)
        return finished or any(isinstance(e, Final) for e in progress.events)

    def _fail(self, keys: Collection[CanvasKey], reason: str) -> None:
        with self._idle:
            failed = [key for key in keys if self._in_flight.pop(key, None) is not None]
            self.stats.finals += len(failed)
            self.stats.errors += len(failed)
            self._idle.notify_all()
        if failed:
            logger.warning("%d windows get an error final: %s", len(failed), reason)
            self._emit([Final.failed(k, reason) for k in failed])

    def _fail_in_flight(self, reason: str) -> None:
        with self._lock:
            keys = list(self._in_flight)
        self._fail(keys, reason)


class RayAsrWorker(ModelThread[RecogniserInfo]):
    """``AsrWorker``'s interface over the cluster's recogniser deployment."""

    def __init__(self, spec: RaySpec, *, retries: int = 2, retry_delay_s: float = 0.5) -> None:
        super().__init__(self._connect, name="livecanvas-ray-asr")
        self.spec = spec
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._runner = _LoopThread()
        self._handle: Any = None
        self.stats = AsrStats()

    def submit(self, request: AsrRequest, done: AsrCallback) -> None:
        self._runner.call(self._start, request, done)

    def stop(self, timeout: float | None = None) -> None:
        self._runner.call(self._runner.loop.stop)
        self._join(timeout)

    def _connect(self) -> RecogniserInfo:
        try:
            self._handle = app_handle(self.spec)
            info: RecogniserInfo = self._handle.describe.remote().result(timeout_s=300)
        except Exception as error:
            self._runner.loop.close()
            raise unreachable(self.spec, "recogniser", error) from error
        return info

    def _serve(self, model: RecogniserInfo) -> None:
        self._runner.run()

    def _start(self, request: AsrRequest, done: AsrCallback) -> None:
        self._runner.loop.create_task(self._recognise(request, done))

    async def _recognise(self, request: AsrRequest, done: AsrCallback) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        failure: Exception = RuntimeError("no attempt made")
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._retry_delay_s)
            try:
                words = await self._handle.transcribe.remote(request)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failure = error
                logger.warning("recognition pass failed on the cluster (attempt %d): %s", attempt + 1, error)
                continue
            self.stats.rounds += 1
            self.stats.rows += 1
            self.stats.busy_s += loop.time() - started
            done(words)
            return
        self.stats.errors += 1
        done(failure)
