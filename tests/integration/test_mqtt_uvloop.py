"""The MQTT bridge beside uvloop: the broker dies while WebSocket connections come and go.

Under uvloop a file descriptor number registered with the loop by aiomqtt, but closed and handed to a
new WebSocket connection before the registration ran, made uvloop refuse it ("File descriptor N is
used by transport", MagicStack/uvloop#653): one step from one connection's bytes going into another's
socket. The bridge now keeps its connection on a thread and loop of its own (stream/mqtt/bridge.py), and its
client registers a socket only while paho holds it (stream/mqtt/client.py; the exact race is replayed
in tests/unit/test_mqtt_client.py).

Here: the bridge's socket is not on the server's uvloop at all; and ``livecanvas serve`` (uvloop, as
the CLI runs it) keeps its log clean while viewers churn, a publisher publishes and the broker is
killed (SIGKILL) and restarted on the same port; the bridge comes back and viewers miss nothing.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import uvloop

from clients.python.client import CaptionSession, connect
from engine.types import CAPTION_TRACK
from stream.config import MqttConfig
from stream.hub import StreamHub
from stream.mqtt.bridge import MqttBridge
from stream.wire.messages import Bye, DraftMsg, Ended, FinalMsg, Role
from tests.integration.mosquitto import Mosquitto, Received, Recorder
from tests.integration.serve_process import running_serve
from tests.integration.test_mqtt import wait_until

SECRET = "uvloop-churn"
CHURN_WORKERS = 6
OUTAGES = 5
BURST = 60  # sentences sent at once just before the broker is killed
CHURN_PER_OUTAGE = 400  # viewer connections opened and closed while the broker is away
LOG_ERRORS = ("is used by transport", "Traceback", "Exception in callback", "Bad file descriptor")


class _Feed:
    tracks = frozenset({CAPTION_TRACK})

    def deliver(self, message: DraftMsg | FinalMsg) -> None:
        pass


def test_the_bridge_socket_is_never_registered_with_the_servers_uvloop(mosquitto: Mosquitto) -> None:
    async def scenario() -> None:
        server_loop = asyncio.get_running_loop()
        assert isinstance(server_loop, uvloop.Loop)
        hub = StreamHub(lambda job: None)
        config = MqttConfig(host="127.0.0.1", port=mosquitto.port, reconnect_max_s=0.5)
        bridge = MqttBridge(hub, config)
        try:
            async with Recorder(mosquitto.port, ["livecanvas/loops/+/final"]) as recorder:
                await bridge.start()
                await wait_until(lambda: bridge.connected, 10, "the bridge to connect")
                assert bridge.loop is not server_loop
                assert not isinstance(bridge.loop, uvloop.Loop), "the bridge's loop is asyncio's own"
                fd = bridge.broker_fd
                assert fd is not None
                # remove_* says whether anything was registered: nothing of the bridge's on this loop
                assert not server_loop.remove_reader(fd)
                assert not server_loop.remove_writer(fd)
                hub.join("loops", _Feed(), publisher=True, source_lang="en")
                hub.publish_text("loops", "Published from the server's loop.", 0)
                await recorder.wait_for(lambda: len(recorder.messages) == 1, 10, "the final over MQTT")
        finally:
            await bridge.close()
        assert recorder.messages[0].fields()["text"] == "Published from the server's loop."

    uvloop.run(scenario())


async def _collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
    """The server's log, line by line (read all along, so the pipe never fills)."""
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))


def _online_since(recorder: Recorder, index: int) -> bool:
    return any(
        m.topic.endswith("/status") and m.fields()["state"] == "online" for m in recorder.messages[index:]
    )


def _finals_of(recorder: Recorder) -> list[Received]:
    return recorder.on("/caption/final")


class _Audience:
    """Three viewers for the whole test, and ``CHURN_WORKERS`` loops of viewers that connect, get
    ``ready`` and leave at once, over and over: new descriptors for the server all the time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.watched: list[list[FinalMsg]] = [[], [], []]
        self.churned = 0
        self._stop = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self._churners: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        ready = [asyncio.Event() for _ in self.watched]
        self._watchers = [
            asyncio.create_task(self._watch(f, r)) for f, r in zip(self.watched, ready, strict=True)
        ]
        for event in ready:
            await asyncio.wait_for(event.wait(), 10)
        self._churners = [asyncio.create_task(self._churn()) for _ in range(CHURN_WORKERS)]

    def have(self, count: int) -> bool:
        return all(len(finals) >= count for finals in self.watched)

    async def stop_churn(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._churners), 20)

    async def ended(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self._watchers), 20)

    async def _churn(self) -> None:
        while not self._stop.is_set():
            async with connect(self.url, stream="churn", role=Role.SUBSCRIBE, token=SECRET):
                self.churned += 1

    async def _watch(self, finals: list[FinalMsg], ready: asyncio.Event) -> None:
        """Until the stream's ``ended`` (its every final is out)."""
        async with connect(self.url, stream="churn", role=Role.SUBSCRIBE, token=SECRET) as viewer:
            ready.set()
            async for message in viewer:
                if isinstance(message, FinalMsg):
                    finals.append(message)
                if isinstance(message, Ended | Bye):
                    return


async def _publish(publisher: CaptionSession, first: int, count: int) -> int:
    """Send sentences ``first`` .. ``first + count - 1`` at once (each is a window); the next number."""
    for n in range(first, first + count):
        await publisher.send_text(f"Sentence number {n} of the churn test.")
    return first + count


async def _delivered(audience: _Audience, count: int) -> None:
    await wait_until(lambda: audience.have(count), 30, f"{count} finals at every viewer")


async def _outage(broker: Mosquitto, publisher: CaptionSession, audience: _Audience, sent: int) -> int:
    """A burst of finals, the broker killed while the bridge publishes them and viewers churn, finals
    during the outage, and many WebSocket descriptors opened and closed before the broker is back."""
    sent = await _publish(publisher, sent, BURST)
    broker.kill()  # SIGKILL: the bridge's socket goes at once; the kernel reuses its number
    at_kill = audience.churned
    await _delivered(audience, sent)
    sent = await _publish(publisher, sent, 10)
    await _delivered(audience, sent)
    await wait_until(lambda: audience.churned >= at_kill + CHURN_PER_OUTAGE, 30, "viewers churned")
    broker.start()
    return sent


async def test_broker_killed_during_websocket_churn_under_uvloop(
    livecanvas_cache: Path, tmp_path: Path
) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    flags = ("--mqtt", f"127.0.0.1:{broker.port}", "--mqtt-client-id", "churn-bridge")
    log: list[str] = []
    try:
        async with (
            running_serve(livecanvas_cache, tmp_path, SECRET, *flags) as (port, process),
            Recorder(broker.port, ["livecanvas/churn/+/final", "livecanvas/status"]) as recorder,
        ):
            assert process.stdout is not None
            reader = asyncio.create_task(_collect(process.stdout, log))
            await recorder.wait_for(lambda: _online_since(recorder, 0), 10, "the bridge's online status")
            audience = _Audience(f"ws://127.0.0.1:{port}")
            await audience.start()
            async with connect(audience.url, stream="churn", token=SECRET) as publisher:
                sent = await _publish(publisher, 0, 10)
                await _delivered(audience, sent)
                await recorder.wait_for(lambda: len(_finals_of(recorder)) >= 10, 20, "10 finals over MQTT")
                for outage in range(1, OUTAGES + 1):
                    mark = len(recorder.messages)
                    sent = await _outage(broker, publisher, audience, sent)
                    await wait_until(
                        lambda n=outage: sum("MQTT: lost the broker" in line for line in log) == n,
                        10,
                        f"the bridge to notice outage {outage}",
                    )
                    await recorder.wait_for(lambda n=mark: _online_since(recorder, n), 30, "online again")
                    last = sent = await _publish(publisher, sent, 5)  # the bridge is back: these go out
                    await _delivered(audience, sent)
                    await recorder.wait_for(
                        lambda n=last - 1: any(m.fields()["window"] == n for m in _finals_of(recorder)),
                        30,
                        f"final {last - 1} over MQTT",
                    )
                await audience.stop_churn()
                await publisher.end()
                assert isinstance([m async for m in publisher][-1], Bye)
            await audience.ended()
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 60) == 0
            await asyncio.wait_for(reader, 10)
    finally:
        broker.stop()
    text = "".join(log)
    for needle in LOG_ERRORS:
        assert needle not in text, f"the server logged {needle!r}:\n{text[-4000:]}"
    for finals in audience.watched:
        assert [f.window for f in finals] == list(range(sent)), "every viewer got every final, in order"
        assert all(f.error is None for f in finals)
    mqtt_windows = [int(str(m.fields()["window"])) for m in _finals_of(recorder)]
    assert mqtt_windows[:10] == list(range(10))
    assert mqtt_windows == sorted(mqtt_windows), "finals over MQTT come in window order"
    print(f"{audience.churned} viewers churned, {sent} finals; the server's log:\n{text[-3000:]}")
