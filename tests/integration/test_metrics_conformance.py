"""`/metrics` of a real `livecanvas serve --mqtt` process, read as Prometheus would: linted by
`promtool check metrics` (Debian's `prometheus` package), and the MQTT bridge's series followed through
a broker outage against a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients.python.client import CaptionSession, connect
from stream.wire.messages import FinalMsg
from tests.integration.mosquitto import Mosquitto
from tests.integration.serve_process import running_serve

SECRET = "metrics-conformance"
INSTALL_HINT = "apt-get install -y prometheus (the README's test command does it)"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(f"this test lints /metrics with promtool, which is not installed: {INSTALL_HINT}")
    return path


def scrape(port: int) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {SECRET}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def samples(text: str) -> dict[str, float]:
    """Every sample without labels, and histogram counts, by sample name."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels or sample.name.endswith("_count"):
                values[sample.name] = sample.value
    return values


def lint(text: str) -> None:
    result = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"


async def until(port: int, holds: Callable[[dict[str, float]], bool], what: str) -> dict[str, float]:
    deadline = time.monotonic() + 20
    while True:
        values = samples(await asyncio.to_thread(scrape, port))
        if holds(values):
            return values
        if time.monotonic() > deadline:
            mqtt = {k: v for k, v in values.items() if "mqtt" in k}
            pytest.fail(f"timed out waiting for {what}; MQTT series: {mqtt}")
        await asyncio.sleep(0.1)


async def final_of(session: CaptionSession, text: str) -> None:
    await session.send_text(text)
    async for message in session:
        if isinstance(message, FinalMsg):
            return
    raise AssertionError("the connection ended before the final")


async def test_metrics_lint_clean_and_carry_the_mqtt_bridge_through_an_outage(
    livecanvas_cache: Path, tmp_path: Path
) -> None:
    promtool()
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    flags = (
        "--mqtt",
        f"127.0.0.1:{broker.port}",
        "--mqtt-spill-dir",
        str(tmp_path / "spill"),
        "--mqtt-buffer",
        "1",
    )
    try:
        async with running_serve(livecanvas_cache, tmp_path, SECRET, *flags) as (port, _):
            url = f"ws://127.0.0.1:{port}"
            async with connect(url, stream="m", tracks=("caption",), token=SECRET) as publisher:
                await final_of(publisher, "The first sentence.")
                values = await until(
                    port, lambda v: v.get("livecanvas_mqtt_acked_finals_total") == 1, "the first final acked"
                )
                assert values["livecanvas_mqtt_connected"] == 1
                assert values["livecanvas_mqtt_pending_finals"] == 0
                assert values["livecanvas_mqtt_publish_seconds_count"] == 1
                assert values["livecanvas_mqtt_reconnects_total"] == 0
                lint(await asyncio.to_thread(scrape, port))

                broker.stop()
                await until(port, lambda v: v["livecanvas_mqtt_connected"] == 0, "the bridge to notice")
                for text in ("Said while the broker is away.", "And once more."):
                    await final_of(publisher, text)
                values = await until(
                    port, lambda v: v["livecanvas_mqtt_pending_finals"] == 2, "two finals queued"
                )
                assert values["livecanvas_mqtt_spill_file_finals"] == 1  # past the memory bound of one
                assert values["livecanvas_mqtt_spilled_finals_total"] == 1
                lint(await asyncio.to_thread(scrape, port))

                broker.start()
                values = await until(
                    port, lambda v: v["livecanvas_mqtt_acked_finals_total"] == 3, "the backlog delivered"
                )
                assert values["livecanvas_mqtt_connected"] == 1
                assert values["livecanvas_mqtt_reconnects_total"] == 1
                assert values["livecanvas_mqtt_pending_finals"] == 0
                assert values["livecanvas_mqtt_spill_file_finals"] == 0
                assert values["livecanvas_mqtt_publish_seconds_count"] == 3
                lint(await asyncio.to_thread(scrape, port))
    finally:
        broker.stop()
