"""A private asyncio event loop on a thread of its own (the MQTT bridge's, stream/mqtt/bridge.py).

The loop is always the standard library's selector loop, whatever loop its owner runs (uvloop under
``livecanvas serve``): file descriptors registered with it are never seen by the owner's loop, nor the
owner's by it.

Threading rules:

* ``start()`` and ``stop()`` are called from the owner's event loop; ``stop()`` stops the private loop,
  cancels what still runs there, closes the loop on its own thread and joins that thread (for at most
  its ``wait_s``) without blocking the owner's loop;
* ``call_soon()`` may be called from any thread (it is ``call_soon_threadsafe``; once the loop is closed
  it does nothing and says so);
* ``run()`` is awaited on another event loop: it runs a coroutine on the private loop and returns its
  result (or raises its exception) to the caller's loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")
logger = logging.getLogger("livecanvas.mqtt")


class LoopThread:
    """See the module docstring."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"loop thread {self.name} is not started")
        return self._loop

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"loop thread {self.name} was started already")
        # explicitly the standard library's loop: a policy (uvloop.install) must not pick it
        self._loop = asyncio.SelectorEventLoop()
        self._thread = threading.Thread(target=self._main, args=(self._loop,), name=self.name, daemon=True)
        self._thread.start()

    def call_soon(self, callback: Callable[..., object], *args: object) -> bool:
        """Run ``callback(*args)`` on the loop's thread soon; ``False`` if the loop is already closed."""
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # closed: the thread has finished
            return False
        return True

    async def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coroutine`` on the private loop; cancelling the caller cancels it there too."""
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        except RuntimeError:
            coroutine.close()  # never scheduled: do not leave it un-awaited
            raise
        return await asyncio.wrap_future(future)

    async def stop(self, wait_s: float | None = None) -> bool:
        """Stop the loop and join its thread, waiting at most ``wait_s`` seconds (``None``: as long as
        it takes); ``False`` if the thread is still running then (it is a daemon thread: it never holds
        the process up)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        self.call_soon(self.loop.stop)
        await asyncio.to_thread(thread.join, wait_s)
        if thread.is_alive():
            logger.warning("loop thread %s did not end within %s s; leaving it", self.name, wait_s)
            return False
        return True

    @staticmethod
    def _main(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
