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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.asr import Asr, AsrRequest
from engine.types import Word

logger = logging.getLogger("livecanvas.asr")

AsrCallback = Callable[[list[Word] | Exception], None]


@dataclass
class AsrStats:
    rounds: int = 0
    rows: int = 0
    busy_s: float = 0.0
    errors: int = 0


class AsrWorker:
    def __init__(self, load: Callable[[], Asr], *, max_batch: int = 8) -> None:
        self._load = load
        self._max_batch = max_batch
        self._inbox: queue.SimpleQueue[tuple[AsrRequest, AsrCallback] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="livecanvas-asr", daemon=True)
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self.asr: Asr | None = None
        self.stats = AsrStats()

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> Asr:
        if not self._ready.wait(timeout):
            raise TimeoutError("the ASR worker did not load its models in time")
        if self._load_error is not None:
            raise self._load_error
        assert self.asr is not None
        return self.asr

    def submit(self, request: AsrRequest, done: AsrCallback) -> None:
        self._inbox.put((request, done))

    def stop(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._inbox.put(None)
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self.asr = self._load()
        except BaseException as error:  # reported to wait_ready()
            self._load_error = error
            self._ready.set()
            return
        self._ready.set()
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
            self._run_round(batch)
            if stopping:
                return

    def _run_round(self, batch: list[tuple[AsrRequest, AsrCallback]]) -> None:
        assert self.asr is not None
        started = time.perf_counter()
        try:
            results: list[list[Word]] | Exception = self.asr.transcribe([request for request, _ in batch])
        except Exception as error:
            logger.exception("speech recognition failed for %d requests", len(batch))
            self.stats.errors += 1
            results = error
        self.stats.rounds += 1
        self.stats.rows += len(batch)
        self.stats.busy_s += time.perf_counter() - started
        for index, (_, done) in enumerate(batch):
            done(results if isinstance(results, Exception) else results[index])
