"""A real Mosquitto broker for the tests, and an MQTT recorder that survives broker restarts.

``Mosquitto`` writes a config file into its own directory (a loopback listener on a free port,
anonymous access, persistence off unless asked for) and runs Debian's ``mosquitto`` binary; ``stop``
(SIGTERM) or ``kill`` (SIGKILL) and ``start`` again keep the port, so clients can reconnect; ``freeze``
(SIGSTOP) makes it a broker that answers nothing until ``thaw``. A
missing ``mosquitto`` fails the test with the command that installs it: nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiomqtt
import msgpack
import pytest

INSTALL_HINT = "apt-get install -y mosquitto (the README's test command does it)"


def mosquitto_binary() -> str:
    # Debian installs it in /usr/sbin, which is not on every user's PATH
    for candidate in (shutil.which("mosquitto"), shutil.which("mosquitto", path="/usr/sbin")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"the MQTT tests need Debian's mosquitto broker, which is not installed: {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Mosquitto:
    """One broker process on 127.0.0.1:``port``; ``persistence`` keeps sessions across a restart."""

    def __init__(self, directory: Path, *, persistence: bool = False) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # as root, do not switch to user mosquitto
            f"log_dest file {self.log}",  # flushed line by line, unlike stdout to a file
            "log_type all",
        ]
        if persistence:
            lines += ["persistence true", f"persistence_location {directory}/", "autosave_interval 0"]
        else:
            lines.append("persistence false")
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout_s: float = 10.0) -> None:
        assert self._process is None, "already running"
        with (self.directory / "mosquitto.out").open("ab") as output:
            self._process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config)], stdout=output, stderr=subprocess.STDOUT
            )
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"mosquitto did not start on port {self.port}:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, as an operator would (mosquitto saves its persistence file on the way out)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        process.send_signal(signal.SIGCONT)  # a frozen broker takes its SIGTERM only once it runs
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes at once and saves nothing; the kernel resets its connections."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: the broker stays up but answers nothing (its sockets stay open, nothing is read)."""
        assert self._process is not None, "not running"
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: a frozen broker goes on."""
        assert self._process is not None, "not running"
        self._process.send_signal(signal.SIGCONT)

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for path in (self.directory / "mosquitto.out", self.log):
            if path.exists():
                text += path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def fields(self) -> dict[str, object]:
        """The payload as a map (JSON or msgpack)."""
        if self.payload[:1] == b"{":
            value = json.loads(self.payload)
        else:
            value = msgpack.unpackb(self.payload, raw=False)
        assert isinstance(value, dict), self.payload
        return value


class Recorder:
    """Records every message on ``filters`` (QoS 1) from the moment it is entered; with ``client_id`` it
    keeps a persistent session, so a broker with persistence queues messages for it while it is away.
    It reconnects by itself until it is exited."""

    def __init__(self, port: int, filters: Sequence[str], *, client_id: str | None = None) -> None:
        self.port = port
        self.filters = list(filters)
        self.client_id = client_id
        self.messages: list[Received] = []
        self.connections = 0
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._subscribed.wait(), timeout=10)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def on(self, topic_end: str) -> list[Received]:
        return [m for m in self.messages if m.topic.endswith(topic_end)]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                got = len(self.messages)
                pytest.fail(f"timed out after {timeout_s} s waiting for {what}; {got} messages recorded")
            await asyncio.sleep(0.05)

    async def _run(self) -> None:
        while True:
            try:
                client = aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=self.client_id,
                    clean_session=self.client_id is None,
                    timeout=5,
                )
                async with client:
                    self.connections += 1
                    for topic_filter in self.filters:
                        await client.subscribe(topic_filter, qos=1)
                    self._subscribed.set()
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self.messages.append(Received(message.topic.value, payload, message.retain))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)
