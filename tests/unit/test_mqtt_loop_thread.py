"""The MQTT bridge's thread and event loop (stream/mqtt/loop_thread.py): asyncio's own loop even when the
caller runs uvloop, coroutines run there and awaited here, cancellation both ways, a clean stop."""

from __future__ import annotations

import asyncio
import threading

import pytest
import uvloop

from stream.mqtt.loop_thread import LoopThread


async def _where() -> tuple[threading.Thread, asyncio.AbstractEventLoop]:
    return threading.current_thread(), asyncio.get_running_loop()


def test_it_runs_asyncios_loop_on_its_own_thread_even_under_uvloop() -> None:
    async def scenario() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        private = LoopThread("test-loop")
        private.start()
        thread, loop = await private.run(_where())
        assert thread is private.thread is not threading.current_thread()
        assert loop is private.loop
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert not isinstance(loop, uvloop.Loop)
        called = asyncio.get_running_loop().create_future()
        assert private.call_soon(lambda: called.get_loop().call_soon_threadsafe(called.set_result, 1))
        assert await asyncio.wait_for(called, 5) == 1
        await private.stop()
        assert loop.is_closed()
        assert private.thread is not None
        assert not private.thread.is_alive()
        assert not private.call_soon(print), "a closed loop takes nothing"
        late = _where()
        with pytest.raises(RuntimeError):
            await private.run(late)
        assert late.cr_frame is None, "the coroutine that could not run is closed, not left un-awaited"

    uvloop.run(scenario())


async def test_cancelling_the_caller_cancels_the_coroutine_on_the_thread() -> None:
    private = LoopThread("test-cancel")
    private.start()
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    waiting = asyncio.create_task(private.run(forever()))
    assert await asyncio.to_thread(started.wait, 5)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await asyncio.to_thread(cancelled.wait, 5)
    await private.stop()


async def test_stop_cancels_what_still_runs_there_and_errors_come_back() -> None:
    private = LoopThread("test-stop")
    private.start()
    cancelled = threading.Event()

    async def background() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def spawn() -> None:
        asyncio.get_running_loop().create_task(background())

    async def fail() -> None:
        raise ValueError("raised on the thread")

    await private.run(spawn())
    with pytest.raises(ValueError, match="raised on the thread"):
        await private.run(fail())
    await private.stop()
    assert cancelled.is_set()
    assert private.loop.is_closed()
