"""The MQTT bridge against a real Mosquitto: topics, QoS, retained captions, input, and broker outages.

The outage tests stop the broker (SIGTERM) while finals are being produced, let more finals pile up
than the bridge's memory bound (so they spill to disk), start the broker again on the same port and
check that every final arrived exactly once, in window order per track. Their broker keeps sessions
(persistence on, in the test's directory) so that the test's own subscriber, which has a persistent
session, misses nothing while it reconnects: what is checked is the bridge, not the subscriber.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import msgpack
import pytest

from clients.python.client import connect
from engine.types import CAPTION_TRACK
from stream.config import MqttConfig, ServerConfig
from stream.hub import StreamHub
from stream.mqtt.bridge import MqttBridge
from stream.server import LivecanvasServer
from stream.wire.messages import Bye, DraftMsg, FinalMsg
from tests.integration.conftest import url_of
from tests.integration.mosquitto import Mosquitto, Received, Recorder


@asynccontextmanager
async def mqtt_server(broker: Mosquitto, tmp_path: Path, **mqtt: object) -> AsyncIterator[LivecanvasServer]:
    settings = MqttConfig(
        host="127.0.0.1", port=broker.port, spill_dir=str(tmp_path / "spill"), reconnect_max_s=0.5, **mqtt
    )
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        idle_ms=400,
        drain_timeout_s=60,
        asr=False,
        max_frame_bytes=64 * 1024,
        mqtt=settings,
    )
    async with LivecanvasServer(config) as server:
        assert server.mqtt is not None
        await wait_until(
            lambda: server.mqtt is not None and server.mqtt.connected, 10, "the bridge to connect"
        )
        yield server


async def wait_until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll a real condition until it holds; fail loudly, naming it, after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def check_exactly_once(finals: list[Received], expected: dict[str, int], *, stops: int) -> Counter[str]:
    """Every (track, window) of ``expected`` (track -> number of windows) exactly once, in window order
    per track, ``seq`` gapless. Allowed extras: a byte-identical copy (the broker redelivering a QoS 1
    message to our subscriber after its restart) and, at most once per broker stop, the final that was
    in flight at the stop published again with ``redelivered: true`` (its PUBACK was lost)."""
    seen: set[bytes] = set()
    extras: Counter[str] = Counter()
    first: dict[tuple[str, int], int] = {}
    order: dict[str, list[int]] = defaultdict(list)
    seqs: dict[int, tuple[str, int]] = {}
    for message in finals:
        if message.payload in seen:
            extras["broker redelivery"] += 1
            continue
        seen.add(message.payload)
        fields = message.fields()
        key = (str(fields["track"]), int(str(fields["window"])))
        seq = int(str(fields["seq"]))
        assert seqs.setdefault(seq, key) == key, f"seq {seq} used for {seqs[seq]} and {key}"
        if key in first:
            assert fields["redelivered"] is True, f"{key} published twice without the redelivered flag"
            extras["bridge redelivery"] += 1
            continue
        first[key] = seq
        order[key[0]].append(key[1])
    assert extras["bridge redelivery"] <= stops, extras
    for track, windows in expected.items():
        assert order[track] == list(range(windows)), f"{track}: {order[track]}"
    assert sorted(seqs) == list(range(1, len(seqs) + 1)), "bridge seq must be gapless"
    assert len(first) == sum(expected.values())
    return extras


class _Feed:
    tracks = frozenset({CAPTION_TRACK})

    def deliver(self, message: DraftMsg | FinalMsg) -> None:
        pass


async def test_bridge_delivers_every_final_once_across_broker_restarts(tmp_path: Path) -> None:
    """A real hub (caption finals only, no model) publishing fast while the broker goes away twice."""
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    hub = StreamHub(lambda job: None)
    spill = str(tmp_path / "spill")
    config = MqttConfig(host="127.0.0.1", port=broker.port, buffer=8, spill_dir=spill, reconnect_max_s=0.5)
    bridge = MqttBridge(hub, config)
    try:
        async with Recorder(broker.port, ["livecanvas/fast/+/final"], client_id="exactly-once") as recorder:
            await bridge.start()
            await wait_until(lambda: bridge.connected, 10, "the bridge to connect")
            hub.join("fast", _Feed(), publisher=True, source_lang="en")
            for window in range(400):
                hub.publish_text("fast", f"Sentence number {window}.", window * 10)
                if window in (100, 250):
                    # mid-stream, the bridge busy publishing: stop once half the finals so far are acked
                    acked = window - 50
                    await wait_until(
                        lambda n=acked: bridge.outbox_stats.acked_total >= n, 20, f"{acked} finals acked"
                    )
                    broker.stop()
                if window in (180, 330):
                    await wait_until(
                        lambda: bridge.outbox_stats.spilled_now > 0,
                        10,
                        "finals beyond the memory bound to spill to disk",
                    )
                    broker.start()
                    await wait_until(lambda: bridge.connected, 10, "the bridge to reconnect")
            # a last final as a barrier: the bridge publishes in order, so once it is in, any extra copy
            # of an earlier final (a redelivery) is in too
            hub.publish_text("fast", "The barrier.", 4000)
            await recorder.wait_for(
                lambda: any(m.fields()["window"] == 400 for m in recorder.messages), 60, "the barrier final"
            )
            await wait_until(lambda: bridge.idle, 20, "the bridge to drain")
        assert bridge.connections == 3
        extras = check_exactly_once(recorder.messages, {CAPTION_TRACK: 401}, stops=2)
        assert not list((tmp_path / "spill").glob("*.jsonl")), "the drained spill file is removed"
        print(f"broker outages: extras {dict(extras)}, stats {bridge.stats()}")
    finally:
        await bridge.close()
        broker.stop()


async def test_server_finals_and_translations_survive_a_broker_restart(
    tmp_path: Path, livecanvas_cache: Path
) -> None:
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    sentences = [f"This is sentence number {n} of the evening news." for n in range(8)]
    try:
        async with (
            Recorder(broker.port, ["livecanvas/news/+/final"], client_id="news-desk") as recorder,
            mqtt_server(broker, tmp_path, buffer=2) as server,
        ):
            bridge = server.mqtt
            assert bridge is not None
            async with connect(url_of(server), stream="news", tracks=("caption", "pt")) as session:
                for sentence in sentences[:4]:
                    await session.send_text(sentence)
                    await session.flush()
                await recorder.wait_for(
                    lambda: len(recorder.on("/caption/final")) >= 2, 30, "the first finals"
                )
                broker.stop()
                for sentence in sentences[4:]:
                    await session.send_text(sentence)
                    await session.flush()
                await wait_until(lambda: bridge.outbox_stats.spilled_now > 0, 30, "finals spilled to disk")
                broker.start()
                await session.end()
                messages = [m async for m in session]
            assert isinstance(messages[-1], Bye)
            await recorder.wait_for(lambda: len(recorder.messages) >= 16, 60, "16 finals")
            await wait_until(lambda: bridge.idle, 20, "the bridge to drain")
        check_exactly_once(recorder.messages, {"caption": 8, "pt": 8}, stops=1)
        texts: dict[int, object] = {}  # the first copy of each window (the broker may redeliver one)
        for fields in (m.fields() for m in recorder.on("/caption/final")):
            texts.setdefault(int(str(fields["window"])), fields["text"])
        assert [texts[window] for window in range(8)] == sentences
    finally:
        broker.stop()


@pytest.mark.parametrize("payload_format", ["json", "msgpack"])
async def test_text_over_mqtt_becomes_caption_and_translation_finals(
    mosquitto: Mosquitto, tmp_path: Path, livecanvas_cache: Path, payload_format: str
) -> None:
    async with (
        Recorder(mosquitto.port, ["livecanvas/#"]) as recorder,
        mqtt_server(mosquitto, tmp_path, tracks=("pt",), payload=payload_format) as server,
    ):
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as feeder:
            base = "livecanvas/studio-1/in"
            await feeder.publish(f"{base}/text", b'{"text": "Good evening.", "t_ms": 0}', qos=1)
            await feeder.publish(
                f"{base}/text", msgpack.packb({"text": "Welcome to the show", "t_ms": 900}), qos=1
            )
            await feeder.publish(f"{base}/text", " and thank you for watching — obrigado.".encode(), qos=1)
            await feeder.publish(f"{base}/text", b'{"text": 5}', qos=1)
            await feeder.publish(f"{base}/text", b"\xff\xfe", qos=1)
            await feeder.publish("livecanvas/bad name/in/text", b"hello", qos=1)
            await feeder.publish("livecanvas/idle/in/flush", b"", qos=1)
            await feeder.publish(f"{base}/end", b"", qos=1)
            await recorder.wait_for(lambda: len(recorder.on("/pt/final")) >= 2, 120, "two pt finals")
            await feeder.publish(f"{base}/text", b"After the end, a new window.", qos=1)
            await feeder.publish(f"{base}/flush", b"", qos=1)
            await recorder.wait_for(lambda: len(recorder.on("/pt/final")) >= 3, 120, "three pt finals")
        await wait_until(lambda: server.mqtt is not None and server.mqtt.idle, 20, "the bridge to drain")
    # the server has shut down gracefully: its retained status says so
    captions = [m.fields() for m in recorder.on("studio-1/caption/final")]
    assert [(f["window"], f["text"]) for f in captions] == [
        (0, "Good evening."),
        (1, "Welcome to the show and thank you for watching — obrigado."),
        (0, "After the end, a new window."),  # after 'end' the stream starts over, as on WebSocket
    ]
    assert captions[0]["t0_ms"] == 0
    assert captions[1]["t0_ms"] == 900
    pt = [m.fields() for m in recorder.on("studio-1/pt/final")]
    assert [f["window"] for f in pt] == [0, 1, 0]
    # the stream's end goes out once, on <prefix>/<stream>/ended, after its last final (QoS 1, numbered
    # in the same sequence as the finals)
    ended = [m.fields() for m in recorder.on("livecanvas/studio-1/ended")]
    assert ended
    assert (ended[0]["type"], ended[0]["reason"], ended[0]["windows"]) == ("ended", "end", 2)
    first_epoch = [int(str(f["seq"])) for f in pt[:2] + captions[:2]]
    assert int(str(ended[0]["seq"])) == max(first_epoch) + 1
    numbered = sorted(int(str(f["seq"])) for f in pt + captions + ended)
    assert numbered == list(range(1, len(numbered) + 1))
    assert all(f["type"] == "final" and f["redelivered"] is False for f in pt)
    assert recorder.on("studio-1/pt/draft"), "translation drafts go out too (QoS 0)"
    for message in recorder.messages:
        if message.topic.endswith(("/final", "/draft", "/error")):
            assert (message.payload[:1] == b"{") == (payload_format == "json"), message
    errors = [(m.topic, m.fields()["code"]) for m in recorder.messages if m.topic.endswith("/error")]
    assert errors == [
        ("livecanvas/studio-1/error", "bad_field"),
        ("livecanvas/studio-1/error", "bad_frame"),
        ("livecanvas/error", "bad_field"),
        ("livecanvas/idle/error", "invalid_state"),
    ]
    status = [m.fields()["state"] for m in recorder.on("livecanvas/status")]
    assert status[-1] == "offline"
    assert "online" in status
    # a newcomer gets the retained current caption of each track and the bridge's status
    async with Recorder(mosquitto.port, ["livecanvas/studio-1/+/current", "livecanvas/status"]) as late:
        await late.wait_for(lambda: len(late.messages) >= 3, 10, "retained messages")
    retained = {m.topic: m.fields() for m in late.messages if m.retain}
    assert retained["livecanvas/studio-1/caption/current"]["text"] == "After the end, a new window."
    assert retained["livecanvas/studio-1/pt/current"]["window"] == 0
    assert retained["livecanvas/status"]["state"] == "offline"


async def test_finals_pending_at_shutdown_are_flushed_once_the_broker_is_back(
    tmp_path: Path, livecanvas_cache: Path
) -> None:
    broker = Mosquitto(tmp_path / "broker")  # not running yet
    settings = MqttConfig(host="127.0.0.1", port=broker.port, reconnect_max_s=0.3, flush_timeout_s=30)
    config = ServerConfig(host="127.0.0.1", port=0, idle_ms=400, asr=False, mqtt=settings)
    try:
        async with LivecanvasServer(config) as server:
            assert server.mqtt is not None
            assert not server.mqtt.connected
            async with connect(url_of(server), stream="early", tracks=("caption",)) as session:
                await session.send_text("Published before the broker is up.")
                await session.send_text("And a second sentence.")
                await session.end()
                assert isinstance([m async for m in session][-1], Bye)
            await wait_until(
                lambda: server.stats()["mqtt_pending_finals"] == 3,
                10,
                "two finals and the stream's ended pending in the bridge",
            )
            broker.start()
        # leaving the block shut the server down: it gave the bridge time to reconnect and deliver
        async with Recorder(broker.port, ["livecanvas/early/+/current", "livecanvas/status"]) as late:
            await late.wait_for(lambda: len(late.messages) >= 2, 10, "the retained messages")
        retained = {m.topic: m.fields() for m in late.messages}
        assert retained["livecanvas/early/caption/current"]["text"] == "And a second sentence."
        assert retained["livecanvas/status"]["state"] == "offline"
    finally:
        broker.stop()
