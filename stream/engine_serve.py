"""``livecanvas engine-serve``: this machine's engine offered to other livecanvas front ends.

A WebSocket server (protocol in ``engine/remote.py``) in front of one ``EngineWorker``: front ends
started with ``--model remote:ws://host:port`` send window jobs, the worker batches the canvases of
every connection into the same forwards, and each connection gets back the drafts and finals of its
own windows. A window key already in flight from another connection is refused with an error final.
A connection that goes away loses the results of its windows in flight (they still run to the end).

There is no authentication: bind it to a private interface (the default is loopback) and let only the
front ends reach it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from engine.remote import PROTOCOL, cancel_from_wire, card_to_wire, event_to_wire, job_from_wire
from engine.runtime import load_model
from engine.types import CanvasKey, Final
from engine.worker import EngineEvent, EngineWorker

logger = logging.getLogger("livecanvas.engine_serve")


class EngineServer:
    """The worker, the routes from window keys to connections, and the connection handler."""

    def __init__(self, worker: EngineWorker) -> None:
        self.worker = worker
        self._routes: dict[CanvasKey, ServerConnection] = {}
        self._outboxes: dict[ServerConnection, asyncio.Queue[str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._card: dict[str, Any] = {}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.worker.start()
        model = await asyncio.to_thread(self.worker.wait_ready)
        self._card = card_to_wire(model.card)
        logger.info("engine ready: %s", model.card.name)

    def emit(self, events: list[EngineEvent]) -> None:
        """Called on the worker thread."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._dispatch, events)

    def _dispatch(self, events: list[EngineEvent]) -> None:
        by_connection: dict[ServerConnection, list[dict[str, Any]]] = {}
        for event in events:
            connection = self._routes.get(event.key)
            if isinstance(event, Final):
                self._routes.pop(event.key, None)
            if connection is not None:
                by_connection.setdefault(connection, []).append(event_to_wire(event))
        stats = self.worker.stats
        for connection, wire_events in by_connection.items():
            frame = json.dumps(
                {
                    "type": "events",
                    "events": wire_events,
                    "forwards": stats.forwards,
                    "canvases_stepped": stats.canvases_stepped,
                    "max_batch": stats.max_batch_seen,
                }
            )
            outbox = self._outboxes.get(connection)
            if outbox is not None:
                outbox.put_nowait(frame)

    @staticmethod
    async def _write(connection: ServerConnection, outbox: asyncio.Queue[str]) -> None:
        """One writer per connection, so frames leave in the order the worker emitted them."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await connection.send(await outbox.get())

    async def handle(self, connection: ServerConnection) -> None:
        await connection.send(json.dumps({"type": "ready", "protocol": PROTOCOL, "card": self._card}))
        outbox: asyncio.Queue[str] = asyncio.Queue()
        self._outboxes[connection] = outbox
        writer = asyncio.create_task(self._write(connection, outbox))
        try:
            async for frame in connection:
                try:
                    message = json.loads(frame)
                    if message.get("type") == "cancel":
                        owned = {k for k in cancel_from_wire(message) if self._routes.get(k) is connection}
                        for key in owned:
                            del self._routes[key]
                        self.worker.cancel(owned)
                        continue
                    if message.get("type") != "job":
                        raise ValueError(f"unknown message type {message.get('type')!r}")
                    job = job_from_wire(message)
                except (ValueError, KeyError, TypeError) as error:
                    logger.warning("bad message from %s: %s", connection.remote_address, error)
                    await connection.close(1008, "bad message")
                    return
                owner = self._routes.get(job.key)
                if owner is not None and owner is not connection:
                    refusal = Final(job.key, 0, "", 0, 0, error="this window is already in flight")
                    outbox.put_nowait(json.dumps({"type": "events", "events": [event_to_wire(refusal)]}))
                    continue
                self._routes[job.key] = connection
                self.worker.submit(job)
        finally:
            writer.cancel()
            del self._outboxes[connection]
            for key in [k for k, c in self._routes.items() if c is connection]:
                del self._routes[key]


async def engine_serve(args: argparse.Namespace) -> None:
    worker_ref: list[EngineServer] = []
    worker = EngineWorker(
        lambda: load_model(args.model, sampler=args.sampler, int8=args.int8),
        lambda events: worker_ref[0].emit(events),
        max_batch=args.max_batch,
        torch_threads=args.threads or None,
    )
    server = EngineServer(worker)
    worker_ref.append(server)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(server.handle, args.host, args.port, max_size=1 << 20) as listener:
        port = next(iter(listener.sockets)).getsockname()[1]
        logger.info("engine listening on ws://%s:%d", args.host, port)
        print(f"engine listening on ws://{args.host}:{port}", flush=True)
        await stop.wait()
    await asyncio.to_thread(worker.stop, drain=False, timeout=10)


def run_engine_serve(args: argparse.Namespace) -> int:
    from stream.event_loop import run_event_loop

    run_event_loop(engine_serve(args))
    return 0


def add_engine_serve_parser(commands: Any) -> None:
    """Register ``engine-serve`` on the CLI's subcommands."""
    from engine.diffusion.gemma import SAMPLERS

    parser = commands.add_parser(
        "engine-serve", help="offer this machine's engine to front ends started with --model remote:ws://..."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (keep it private)")
    parser.add_argument("--port", type=int, default=8790, help="0 picks a free port")
    parser.add_argument("--model", default="embedded", help="a local model spec, as for serve")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--max-batch", type=int, default=32, help="canvases advanced by one forward at most")
    parser.add_argument("--sampler", choices=SAMPLERS, default="fast", help="see docs/engine.md")
    parser.add_argument(
        "--int8", action=argparse.BooleanOptionalAction, default=False, help="int8 dynamic quantisation (CPU)"
    )
    parser.set_defaults(handler=run_engine_serve)
