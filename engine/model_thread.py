"""A thread that owns a model: it loads the model itself, tells other threads when it is ready (or
re-raises the load failure to them), then serves work until it is told to stop.

Subclasses implement ``_serve(model)``; everything a model thread shares with other threads goes
through thread-safe queues of the subclass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

ModelT = TypeVar("ModelT")


class ModelThread(Generic[ModelT]):
    def __init__(self, load: Callable[[], ModelT], *, name: str) -> None:
        self._load = load
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._model: ModelT | None = None

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> ModelT:
        """Block until the model is loaded; re-raises a load failure."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{self._thread.name} did not load its model in time")
        if self._load_error is not None:
            raise self._load_error
        assert self._model is not None
        return self._model

    @property
    def model(self) -> ModelT | None:
        """The loaded model (None before it is ready); only the owning thread may use it."""
        return self._model

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _join(self, timeout: float | None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            model = self._load()
        except BaseException as error:  # reported to wait_ready(), never swallowed
            self._load_error = error
            self._ready.set()
            return
        self._model = model
        self._ready.set()
        self._serve(model)

    def _serve(self, model: ModelT) -> None:
        raise NotImplementedError
