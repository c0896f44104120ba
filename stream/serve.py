"""``livecanvas serve``: run the server until SIGINT/SIGTERM, then shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal

from stream.config import ServerConfig
from stream.server import LivecanvasServer

logger = logging.getLogger("livecanvas.server")


async def serve_forever(config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with LivecanvasServer(config):
        await stop.wait()
        logger.info("shutting down: finishing open windows (up to %.0f s)", config.drain_timeout_s)
