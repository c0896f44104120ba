"""The ASR worker: the one thread that owns the speech recognition models.

Requests from every live audio stream queue up here (``submit``, thread-safe). Each round takes
everything queued (up to ``max_batch``) and transcribes it in one ``Asr.transcribe`` call, which
batches rows of the same model and language. Each request's ``done`` callback gets its words, or the
exception if the round failed; it runs on this thread, so callers hand results back to their event
loop with ``call_soon_threadsafe``. When nothing is queued the thread sleeps on the queue.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.asr import Asr, AsrRequest
from engine.model_thread import ModelThread
from engine.types import Word

logger = logging.getLogger("livecanvas.asr")

AsrCallback = Callable[[list[Word] | Exception], None]


@dataclass
class AsrStats:
    rounds: int = 0
    rows: int = 0
    busy_s: float = 0.0
    errors: int = 0


class AsrWorker(ModelThread[Asr]):
    def __init__(self, load: Callable[[], Asr], *, max_batch: int = 8) -> None:
        super().__init__(load, name="livecanvas-asr")
        self._max_batch = max_batch
        self._inbox: queue.SimpleQueue[tuple[AsrRequest, AsrCallback] | None] = queue.SimpleQueue()
        self.stats = AsrStats()

    def submit(self, request: AsrRequest, done: AsrCallback) -> None:
        self._inbox.put((request, done))

    def stop(self, timeout: float | None = None) -> None:
        if self.alive:
            self._inbox.put(None)
            self._join(timeout)

    def _serve(self, model: Asr) -> None:
        while True:
            first = self._inbox.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self._max_batch:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._run_round(model, batch)
            if stopping:
                return

    def _run_round(self, model: Asr, batch: list[tuple[AsrRequest, AsrCallback]]) -> None:
        started = time.perf_counter()
        try:
            results: list[list[Word]] | Exception = model.transcribe([request for request, _ in batch])
        except Exception as error:
            logger.exception("speech recognition failed for %d requests", len(batch))
            self.stats.errors += 1
            results = error
        self.stats.rounds += 1
        self.stats.rows += len(batch)
        self.stats.busy_s += time.perf_counter() - started
        for index, (_, done) in enumerate(batch):
            done(results if isinstance(results, Exception) else results[index])
