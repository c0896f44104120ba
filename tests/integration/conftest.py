"""A real livecanvas server on a free loopback port, on the embedded default model; a real Mosquitto
broker; a real local Ray cluster with livecanvas deployed (``ray_cluster``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stream.config import ServerConfig
from stream.server import LivecanvasServer
from tests.integration.mosquitto import Mosquitto
from tests.integration.ray_cluster import ray_cluster  # noqa: F401 - a fixture for test_cluster.py


@pytest.fixture
async def server(livecanvas_cache: Path) -> AsyncIterator[LivecanvasServer]:
    config = ServerConfig(
        host="127.0.0.1", port=0, max_frame_bytes=64 * 1024, idle_ms=400, drain_timeout_s=60, asr=False
    )
    async with LivecanvasServer(config) as running:
        yield running


def url_of(server: LivecanvasServer) -> str:
    return f"ws://127.0.0.1:{server.port}"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto broker on a free loopback port (persistence off), stopped after the test."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
