"""The ``remote`` engine backend: windows translated by another machine's livecanvas engine.

``--model remote:ws://host:port`` makes a front end send its window jobs to ``livecanvas engine-serve``
(``stream/engine_serve.py``) instead of loading a model. The remote runs the scheduler and the batched
denoiser itself, so one forward there advances the canvases of every front end connected to it; it
streams each draft back as soon as its early-exit policy emits it and each final once, so viewers see
the same per-step drafts as with a local model. The unit of work on the wire is the window job, not
the denoising step: a per-step remote denoiser would cost one network round trip per forward and
could not batch across front ends.

Wire format, version ``PROTOCOL``: one JSON object per WebSocket text frame, ``type`` first.

* remote -> front end, once on connect: ``ready{protocol, card}`` (the model card: name, languages,
  prompt kind, diffusion and early-exit defaults);
* front end -> remote: ``job{stream, track, window, source, context, source_lang, target_lang}``;
* remote -> front end: ``events{events: [draft|final ...], forwards, canvases_stepped, max_batch}``,
  the remote engine's counters riding along for the front end's ``stats``.

Threading: ``RemoteEngineWorker`` mirrors ``EngineWorker``: ``submit()`` from any thread (a queue), a
sender thread writes jobs, the worker thread reads events and hands them to ``emit``. A dropped
connection gives every window in flight an error final; the worker then ends (the server reports it
like a crashed local engine).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from engine.errors import EngineError
from engine.model_thread import ModelThread
from engine.models import ModelCard, ResolvedModel
from engine.prompts import ContextEntry
from engine.types import CanvasKey, DiffusionParams, Draft, EarlyExitParams, Final, WindowJob
from engine.worker import EngineEvent, WorkerStats

logger = logging.getLogger("livecanvas.engine.remote")

REMOTE_PREFIX = "remote:"
PROTOCOL = 1


def remote_url(spec: str | None) -> str | None:
    """The engine URL of a ``remote:ws://host:port`` model spec; None for any other spec."""
    if spec is None or not spec.startswith(REMOTE_PREFIX):
        return None
    url = spec[len(REMOTE_PREFIX) :]
    if not url.startswith(("ws://", "wss://")):
        raise EngineError(f"a remote engine is named ws://host:port or wss://host:port, got {url!r}")
    return url


# -- wire encoding (shared with stream/engine_serve.py) -----------------------------------------------
def card_to_wire(card: ModelCard) -> dict[str, Any]:
    return asdict(card)


def card_from_wire(data: dict[str, Any]) -> ModelCard:
    return ModelCard(
        name=str(data["name"]),
        prompt_kind=str(data["prompt_kind"]),
        trained=bool(data["trained"]),
        diffusion=DiffusionParams(**data["diffusion"]),
        early_exit=EarlyExitParams(**data["early_exit"]),
        target_languages=tuple(str(t) for t in data["target_languages"]),
        pairs=tuple((str(source), str(target)) for source, target in data.get("pairs", ())),
    )


def job_to_wire(job: WindowJob) -> str:
    return json.dumps(
        {
            "type": "job",
            "stream": job.key.stream,
            "track": job.key.track,
            "window": job.key.window,
            "source": job.source,
            "context": [[entry.source, entry.target] for entry in job.context],
            "source_lang": job.source_lang,
            "target_lang": job.target_lang,
        }
    )


def cancel_to_wire(keys: Collection[CanvasKey]) -> str:
    return json.dumps(
        {"type": "cancel", "windows": [[key.stream, key.track, key.window] for key in sorted(keys, key=str)]}
    )


def cancel_from_wire(data: dict[str, Any]) -> set[CanvasKey]:
    """A cancel message's keys; raises ``KeyError``/``TypeError``/``ValueError`` if malformed."""
    return {CanvasKey(str(stream), str(track), int(window)) for stream, track, window in data["windows"]}


def job_from_wire(data: dict[str, Any]) -> WindowJob:
    """A job message as a ``WindowJob``; raises ``KeyError``/``TypeError``/``ValueError`` if malformed."""
    context = tuple(ContextEntry(str(source), str(target)) for source, target in data["context"])
    return WindowJob(
        key=CanvasKey(str(data["stream"]), str(data["track"]), int(data["window"])),
        source=str(data["source"]),
        context=context,
        source_lang=str(data["source_lang"]),
        target_lang=str(data["target_lang"]),
        submitted_ns=time.monotonic_ns(),
    )


def event_to_wire(event: EngineEvent) -> dict[str, Any]:
    key = {"stream": event.key.stream, "track": event.key.track, "window": event.key.window}
    if isinstance(event, Draft):
        return {"type": "draft", **key, "rev": event.rev, "text": event.text, "steps": event.steps}
    return {
        "type": "final",
        **key,
        "rev": event.rev,
        "text": event.text,
        "steps": event.steps,
        "tokens": event.tokens,
        "error": event.error,
    }


def event_from_wire(data: dict[str, Any]) -> EngineEvent:
    key = CanvasKey(str(data["stream"]), str(data["track"]), int(data["window"]))
    if data["type"] == "draft":
        return Draft(key=key, rev=int(data["rev"]), text=str(data["text"]), steps=int(data["steps"]))
    error = data.get("error")
    return Final(
        key=key,
        rev=int(data["rev"]),
        text=str(data["text"]),
        steps=int(data["steps"]),
        tokens=int(data["tokens"]),
        error=None if error is None else str(error),
    )


@dataclass(frozen=True, slots=True)
class RemoteModel:
    """What the front end knows of a remote engine's model: where it is and its card."""

    resolved: ResolvedModel
    card: ModelCard


class _Stop:
    pass


class RemoteEngineWorker(ModelThread[RemoteModel]):
    """``EngineWorker``'s interface over a connection to ``livecanvas engine-serve``."""

    def __init__(
        self, url: str, emit: Callable[[list[EngineEvent]], None], *, open_timeout: float = 30.0
    ) -> None:
        super().__init__(self._connect, name="livecanvas-remote-engine")
        self._url = url
        self._open_timeout = open_timeout
        self._emit = emit
        self._outbox: queue.SimpleQueue[WindowJob | str | _Stop] = queue.SimpleQueue()  # str: a cancel
        self._connection: ClientConnection | None = None
        self._exit = contextlib.ExitStack()  # owns the connection from _connect() to the end of _serve()
        self._in_flight: set[CanvasKey] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closed = False  # the connection is gone: new jobs get an error final at once
        self.stats = WorkerStats()

    # -- called from other threads ------------------------------------------------------------------
    def submit(self, job: WindowJob) -> None:
        with self._lock:
            self.stats.jobs += 1
            closed = self._closed
            if closed:
                self.stats.finals += 1
                self.stats.errors += 1
            else:
                self._in_flight.add(job.key)
        if closed:
            reason = f"remote engine {self._url} is gone"
            self._emit([Final(key=job.key, rev=0, text="", steps=0, tokens=0, error=reason)])
            return
        self._outbox.put(job)

    def cancel(self, keys: Collection[CanvasKey]) -> None:
        """``EngineWorker.cancel`` over the wire: the engine drops these windows; any of their events
        still on the way are dropped here."""
        with self._idle:
            dropped = self._in_flight & set(keys)
            self._in_flight -= dropped
            self.stats.cancelled += len(dropped)
            self._idle.notify_all()
        if dropped:
            self._outbox.put(cancel_to_wire(dropped))

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Close the connection; with ``drain`` the windows in flight get their finals first."""
        if drain:
            with self._idle:
                self._idle.wait_for(lambda: not self._in_flight or not self.alive, timeout)
        self._outbox.put(_Stop())
        if self._connection is not None:
            self._connection.close()
        self._join(timeout)

    # -- the worker thread --------------------------------------------------------------------------
    def _connect(self) -> RemoteModel:
        connection = self._exit.enter_context(
            connect(self._url, open_timeout=self._open_timeout, max_size=None)
        )
        ready = json.loads(connection.recv(timeout=self._open_timeout))
        if ready.get("type") != "ready" or ready.get("protocol") != PROTOCOL:
            self._exit.close()
            raise EngineError(f"{self._url} is not a livecanvas engine speaking protocol {PROTOCOL}")
        self._connection = connection
        return RemoteModel(
            ResolvedModel(REMOTE_PREFIX + self._url, Path(self._url)), card_from_wire(ready["card"])
        )

    def _serve(self, model: RemoteModel) -> None:
        connection = self._connection
        assert connection is not None
        sender = threading.Thread(target=self._send_jobs, args=(connection,), name="livecanvas-remote-send")
        sender.start()
        try:
            for frame in connection:
                message = json.loads(frame)
                if message.get("type") == "events":
                    self._deliver(message)
        except ConnectionClosed:
            pass
        finally:
            self._outbox.put(_Stop())
            sender.join()
            self._exit.close()
            self._fail_in_flight(f"remote engine {self._url} closed the connection")

    def _send_jobs(self, connection: ClientConnection) -> None:
        while not isinstance(item := self._outbox.get(), _Stop):
            try:
                connection.send(item if isinstance(item, str) else job_to_wire(item))
            except ConnectionClosed:
                return

    def _deliver(self, message: dict[str, Any]) -> None:
        with self._idle:
            events = [e for e in map(event_from_wire, message["events"]) if e.key in self._in_flight]
            finals = [e for e in events if isinstance(e, Final)]
            for final in finals:
                self._in_flight.discard(final.key)
            self.stats.forwards = int(message.get("forwards", self.stats.forwards))
            self.stats.canvases_stepped = int(message.get("canvases_stepped", self.stats.canvases_stepped))
            self.stats.max_batch_seen = int(message.get("max_batch", self.stats.max_batch_seen))
            self.stats.finals += len(finals)
            self.stats.errors += sum(1 for f in finals if f.error is not None)
            self._idle.notify_all()
        if events:
            self._emit(events)

    def _fail_in_flight(self, reason: str) -> None:
        with self._idle:
            self._closed = True
            keys, self._in_flight = self._in_flight, set()
            self.stats.finals += len(keys)
            self.stats.errors += len(keys)
            self._idle.notify_all()
        if keys:
            logger.warning("%s: %d windows in flight get an error final", reason, len(keys))
            self._emit([Final(key=k, rev=0, text="", steps=0, tokens=0, error=reason) for k in keys])
