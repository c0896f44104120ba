"""An aiomqtt client that registers paho's socket with its event loop only while paho still holds it.

aiomqtt 2.5 hands paho's socket to the loop by number, and later: paho's socket callbacks do
``loop.call_soon_threadsafe(loop.add_writer, sock.fileno(), ...)``. When paho closes the socket in
between (the broker vanished mid-publish), the number may already belong to another connection by the
time the call runs: uvloop refuses it (``File descriptor N is used by transport``,
MagicStack/uvloop#653), a selector loop watches somebody else's socket or fails with EBADF.

``SocketClient`` owns that step. Its four socket callbacks act on the loop's own thread (at once when
paho calls them there, else through ``call_soon_threadsafe``, in paho's order), and a reader or writer
is registered only if paho's current socket is still the very socket it announced, and still open.
Paho removes a socket's reader and writer before it closes the socket, so no registration ever
outlives its socket, and none is ever made for a number that was reused. The read and write callbacks
are aiomqtt's (paho's ``loop_read``/``loop_write``; an exception ends the connection). ``socket_fd``
is the registered socket's descriptor (``None`` when none is), for diagnostics and tests.

It overrides aiomqtt's private socket callbacks (checked against aiomqtt 2.5.1 and paho-mqtt 2.2);
tests/unit/test_mqtt_client.py fails if aiomqtt stops calling them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from aiomqtt.types import PahoSocket


def _holds(client: mqtt.Client, sock: PahoSocket) -> bool:
    """Is ``sock`` still paho's socket, and open?"""
    return bool(sock.fileno() >= 0 and client.socket() is sock)


class SocketClient(aiomqtt.Client):
    """See the module docstring; used exactly like ``aiomqtt.Client``."""

    socket_fd: int | None = None

    # -- paho's socket callbacks (any thread) ------------------------------------------------------
    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: PahoSocket) -> None:
        self._on_loop(self._watch_reads, client, sock)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: PahoSocket) -> None:
        self._on_loop(self._unwatch_reads, sock.fileno())

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: PahoSocket) -> None:
        self._on_loop(self._watch_writes, client, sock)

    def _on_socket_unregister_write(self, client: mqtt.Client, userdata: Any, sock: PahoSocket) -> None:
        self._on_loop(self._unwatch_writes, sock.fileno())

    def _on_loop(self, callback: Callable[..., None], *args: object) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # paho's connect() runs on an executor thread
            running = None
        if running is self._loop:
            callback(*args)
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing is watched any more
            self._loop.call_soon_threadsafe(callback, *args)

    # -- on the loop's thread ----------------------------------------------------------------------
    def _watch_reads(self, client: mqtt.Client, sock: PahoSocket) -> None:
        if not _holds(client, sock):
            return  # closed before its turn: its number may be somebody else's by now
        self.socket_fd = sock.fileno()
        self._loop.add_reader(self.socket_fd, self._readable, client)
        self._misc_task = self._loop.create_task(self._misc_loop())

    def _unwatch_reads(self, fd: int) -> None:
        if fd >= 0:
            self._loop.remove_reader(fd)
        if fd == self.socket_fd:
            self.socket_fd = None
        if self._misc_task is not None and not self._misc_task.done():
            self._misc_task.cancel()

    def _watch_writes(self, client: mqtt.Client, sock: PahoSocket) -> None:
        if _holds(client, sock):
            self._loop.add_writer(sock.fileno(), self._writable, client)

    def _unwatch_writes(self, fd: int) -> None:
        if fd >= 0:
            self._loop.remove_writer(fd)

    def _readable(self, client: mqtt.Client) -> None:
        try:
            while True:
                client.loop_read()
                # an SSL socket may hold decoded bytes that loop_read() did not consume (paho #131)
                sock = client.socket()
                pending = getattr(sock, "pending", None)
                if pending is None or pending() <= 0:
                    break
        except Exception as error:  # a broken connection (e.g. BrokenPipeError): disconnected now
            if not self._disconnected.done():
                self._disconnected.set_exception(error)

    def _writable(self, client: mqtt.Client) -> None:
        try:
            client.loop_write()
        except Exception as error:
            if not self._disconnected.done():
                self._disconnected.set_exception(error)
