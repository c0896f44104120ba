"""Shutdown of the MQTT bridge, and of a real `livecanvas serve --mqtt` process, while the real
Mosquitto broker goes away.

The bridge's race: the broker dies just as ``close()`` cancels the connection loop. A cancellation that
meets the connection's own error on its way out can be swallowed (a task group prefers the child's
error), and the loop then reconnected forever: repeated until it has been hit, the close must still end.

The operator's SIGTERM and the broker's own end land at the same moment: the broker is stopped
(SIGTERM), or frozen (SIGSTOP: its sockets stay open and nothing is answered, the case that makes every
wait on it run to its timeout). Either way the server must exit within a bound, and the finals the
broker never acknowledged must be in the spill file, which the next start delivers once the broker is
back.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from clients.python.client import CaptionSession, connect
from stream.config import MqttConfig
from stream.hub import StreamHub
from stream.mqtt.bridge import MqttBridge
from stream.wire.messages import ErrorMsg, FinalMsg
from tests.integration.mosquitto import Mosquitto, Recorder
from tests.integration.serve_process import running_serve
from tests.integration.test_mqtt import wait_until

SECRET = "mqtt-shutdown-test"
CLIENT_ID = "shutdown-test"
# docs/broadcast.md's bound: the drain (well under a second here) + flush_timeout_s (10 s) + 5 s to say
# offline and disconnect; with room for a slow machine
EXIT_BOUND_S = 40


# the bridge alone: no flush to wait for; 2 s for the offline status + 3 s to end the connection
CLOSE_BOUND_S = 8
RACES = 25  # the race is lost about once in six tries on a 2-core machine


async def test_bridge_close_ends_when_the_broker_dies_at_that_moment(tmp_path: Path) -> None:
    for attempt in range(RACES):
        broker = Mosquitto(tmp_path / f"broker-{attempt}")
        broker.start()
        config = MqttConfig(host="127.0.0.1", port=broker.port, reconnect_max_s=0.5, flush_timeout_s=1)
        bridge = MqttBridge(StreamHub(lambda job: None), config)
        try:
            await bridge.start()
            await wait_until(lambda b=bridge: b.connected, 10, "the bridge to connect")
            broker.kill()  # the kernel resets the connection: the bridge's thread sees it any moment now
            try:
                await asyncio.wait_for(bridge.close(), CLOSE_BOUND_S)
            except TimeoutError:
                pytest.fail(f"try {attempt}: close() still running {CLOSE_BOUND_S} s after the broker died")
        finally:
            broker.stop()


async def read_until(session: CaptionSession, kind: type[object]) -> None:
    async for message in session:
        if isinstance(message, kind):
            return
    raise AssertionError(f"the connection ended before a {kind.__name__}")


@pytest.mark.parametrize(
    ("broker_goes", "open_window"),
    [("frozen", False), ("frozen", True), ("stopped", True)],
    ids=["frozen-all-acknowledged", "frozen-final-pending", "stopped-final-pending"],
)
async def test_sigterm_as_the_broker_goes_exits_in_bounded_time_and_the_next_start_delivers(
    livecanvas_cache: Path, tmp_path: Path, broker_goes: str, open_window: bool
) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    spill = tmp_path / "spill" / f"finals-{CLIENT_ID}.kept.jsonl"
    flags = (
        "--idle-ms", "60000", "--mqtt", f"127.0.0.1:{broker.port}", "--mqtt-spill-dir", str(spill.parent),
        "--mqtt-client-id", CLIENT_ID,
    )  # fmt: skip
    try:
        async with Recorder(broker.port, ["livecanvas/live/caption/final"]) as recorder:
            async with running_serve(livecanvas_cache, tmp_path, SECRET, *flags) as (port, process):
                url = f"ws://127.0.0.1:{port}"
                async with connect(url, stream="live", tracks=("caption",), token=SECRET) as publisher:
                    await publisher.send_text("A complete sentence is on its way.")
                    await read_until(publisher, FinalMsg)
                    await recorder.wait_for(lambda: len(recorder.messages) == 1, 10, "window 0 on the broker")
                    if open_window:  # the drain makes its final
                        await publisher.send_text("And an unfinished one")
                    await publisher.websocket.send('{"type": "text", "segment": ""}')  # answered in order
                    await read_until(publisher, ErrorMsg)
                    if broker_goes == "frozen":
                        broker.freeze()
                    process.send_signal(signal.SIGTERM)
                    started = time.monotonic()
                    if broker_goes == "stopped":
                        broker.stop()
                    try:
                        output, _ = await asyncio.wait_for(process.communicate(), EXIT_BOUND_S)
                    except TimeoutError:
                        pytest.fail(f"the server was still running {EXIT_BOUND_S} s after SIGTERM")
                    took = time.monotonic() - started
            broker.stop()
        log = output.decode()
        assert process.returncode == 0, log[-3000:]
        assert took < EXIT_BOUND_S
        on_broker = [m.fields()["window"] for m in recorder.messages]
        lines = spill.read_text(encoding="utf-8").splitlines() if spill.exists() else []
        kept = [json.loads(line)["final"] for line in lines]
        spilled = [(f["track"], f["window"]) for f in kept if f["type"] == "final"]
        if broker_goes == "frozen":
            assert on_broker == [0]
            assert spilled == ([("caption", 1)] if open_window else []), log[-3000:]
        else:  # it depends on the race whether window 1 reached the broker before it stopped
            assert on_broker + [w for _, w in spilled] == [0, 1], log[-3000:]
        if not spilled:
            return

        # the next start delivers what was spilled once the broker is back, and empties the spill file
        broker.start()
        async with (
            Recorder(broker.port, ["livecanvas/live/+/final"]) as later,
            running_serve(livecanvas_cache, tmp_path, SECRET, *flags) as (port, process),
        ):
            await later.wait_for(lambda: len(later.messages) >= len(spilled), 20, "the spilled finals")
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.communicate(), EXIT_BOUND_S)
        delivered = [m.fields() for m in later.messages]
        assert [(d["track"], d["window"]) for d in delivered] == spilled
        assert all(d["text"] == "And an unfinished one" for d in delivered)
        if broker_goes == "frozen":  # published once before, never acknowledged: flagged
            assert all(d["redelivered"] is True for d in delivered)
        assert not spill.exists()
    finally:
        broker.stop()
