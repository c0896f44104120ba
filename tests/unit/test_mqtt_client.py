"""SocketClient (stream/mqtt/client.py): paho's socket is watched only while paho holds it, never by a
number that another connection has taken over (MagicStack/uvloop#653).

Paho is replaced by a stand-in that has just what the callbacks use (``socket()``, ``loop_read()``,
``loop_write()``); the loop is real, the standard library's or uvloop. The hazard is replayed as it
happened: paho wants to write, then closes the socket (the broker vanished), and a new connection gets
the same descriptor number before the loop's next turn.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiomqtt
import pytest
import uvloop

from stream.mqtt.client import SocketClient

_T = TypeVar("_T")
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "selector": asyncio.SelectorEventLoop,
    "uvloop": uvloop.new_event_loop,
}


class FakePaho:
    """What the socket callbacks use of paho's client."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock
        self.wrote = asyncio.get_running_loop().create_future()
        # a write callback after paho closed its socket (one while it was still open is legitimate: a
        # thread may close it just after the loop saw it writable)
        self.wrote_closed = asyncio.get_running_loop().create_future()
        self.read = asyncio.get_running_loop().create_future()

    def socket(self) -> socket.socket | None:
        return self.sock

    def loop_write(self) -> int:
        if not self.wrote.done():
            self.wrote.set_result(None)
        if self.sock is None and not self.wrote_closed.done():  # paho's own socket is gone
            self.wrote_closed.set_result(None)
        return 0

    def loop_read(self) -> int:
        if not self.read.done():
            self.read.set_result(None)
        return 0

    def close(self, client: aiomqtt.Client, sock: socket.socket) -> None:
        """Paho's ``_sock_close``: forget the socket, unregister, call the close hook, close it."""
        self.sock = None
        client._on_socket_unregister_write(self, None, sock)  # type: ignore[arg-type]
        client._on_socket_close(self, None, sock)  # type: ignore[arg-type]
        sock.close()


def run(loop: str, scenario: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(scenario())


async def next_turn() -> None:
    """Return once every callback already scheduled on the loop has run (they run in order)."""
    loop = asyncio.get_running_loop()
    turn = loop.create_future()
    loop.call_soon(turn.set_result, None)
    await turn


async def reused_descriptor(client_type: type[aiomqtt.Client], *, from_thread: bool) -> list[str]:
    """Paho wants to write, then closes its socket; the number goes to a new connection (a transport of
    this loop, like a WebSocket's) before the registration's turn. The loop's errors, as text."""
    loop = asyncio.get_running_loop()
    errors: list[str] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(str(context.get("exception"))))
    client = client_type("127.0.0.1", 1)
    theirs, peer = socket.socketpair()
    paho = FakePaho(theirs)
    number = theirs.fileno()

    def want_write_then_close() -> None:
        client._on_socket_register_write(paho, None, theirs)  # type: ignore[arg-type]
        paho.close(client, theirs)

    if from_thread:  # paho's connect() runs on an executor thread
        await asyncio.to_thread(want_write_then_close)
    else:
        want_write_then_close()
    mine, other = socket.socketpair()
    assert mine.fileno() == number, "the kernel hands out the lowest free descriptor"
    transport, _ = await loop.create_unix_connection(asyncio.Protocol, sock=mine)
    await next_turn()
    assert not paho.wrote_closed.done(), "nothing may be written for a socket paho has closed"
    transport.close()
    for sock in (peer, other):
        sock.close()
    return errors


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_aiomqtt_itself_registers_a_reused_descriptor(loop: str) -> None:
    """The hazard, replayed with aiomqtt's own client: its deferred add_writer hits the new transport."""
    errors = run(loop, lambda: reused_descriptor(aiomqtt.Client, from_thread=False))
    assert len(errors) == 1
    assert "is used by transport" in errors[0]


@pytest.mark.parametrize("from_thread", [False, True])
@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_reused_descriptor_is_never_registered(loop: str, from_thread: bool) -> None:
    assert run(loop, lambda: reused_descriptor(SocketClient, from_thread=from_thread)) == []


@pytest.mark.parametrize("from_thread", [False, True])
def test_a_live_socket_is_watched_until_paho_closes_it(from_thread: bool) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        client = SocketClient("127.0.0.1", 1)
        sock, peer = socket.socketpair()
        paho = FakePaho(sock)
        number = sock.fileno()

        def announce() -> None:
            client._on_socket_open(paho, None, sock)  # type: ignore[arg-type]
            client._on_socket_register_write(paho, None, sock)  # type: ignore[arg-type]

        if from_thread:
            await asyncio.to_thread(announce)
        else:
            announce()
        peer.send(b"x")
        await asyncio.wait_for(paho.wrote, 5)  # a socketpair is writable at once
        await asyncio.wait_for(paho.read, 5)
        assert client.socket_fd == number
        paho.close(client, sock)
        await next_turn()
        assert client.socket_fd is None
        assert not loop.remove_reader(number), "the reader goes with the socket"
        assert not loop.remove_writer(number), "the writer goes with the socket"
        peer.close()

    run("selector", scenario)


def test_aiomqtt_calls_the_socket_callbacks_that_are_overridden() -> None:
    async def scenario() -> None:
        client = SocketClient("127.0.0.1", 1)
        paho = client._client
        assert paho.on_socket_open == client._on_socket_open
        assert paho.on_socket_close == client._on_socket_close
        assert paho.on_socket_register_write == client._on_socket_register_write
        assert paho.on_socket_unregister_write == client._on_socket_unregister_write

    run("selector", scenario)
