"""The MQTT bridge: every stream's drafts and finals out to a broker, text segments in (aiomqtt).

Threading rules:

* the MQTT connection lives on the bridge's own thread and event loop (stream/mqtt/loop_thread.py: always
  the standard library's loop): the aiomqtt client and its socket, the connection loop, the publisher,
  the reader and the sans-I/O ``MqttOutbox`` are touched on that thread only. The server's loop (uvloop
  under ``livecanvas serve``) never has the broker's socket registered, so a descriptor number it
  reuses for a WebSocket can never be taken for the broker's (MagicStack/uvloop#653); on its own loop
  the client registers its socket only while paho still holds it (stream/mqtt/client.py);
* the hub, and everything that touches it (the observer, the MQTT feeds, applying input), stays on the
  server's loop: the hub observer ``_observe`` (synchronous, never raises) appends each draft and final
  to a thread-safe inbox and wakes the bridge thread (``call_soon_threadsafe``, once per batch);
  each input message is parsed on the bridge thread and handed to the server's loop, which applies it
  to the hub and hands refusals back to the bridge thread to be answered, in input order;
* ``connected``, ``idle``, ``outbox_stats`` and ``stats()`` may be read from any thread: they read a
  snapshot the bridge thread replaces whole (one attribute store) whenever the outbox changes;
* ``start()`` and ``close()`` are awaited on the server's loop; ``close()`` runs the flush, the
  ``offline`` status and the disconnect on the bridge thread, then joins that thread without blocking
  the server's loop.

What goes out, in which order, and what is kept across outages is decided by the outbox
(stream/mqtt/outbox.py). One task owns the connection, as an explicit loop: connect, subscribe to the
input topics, publish ``online`` to the retained status topic (the last will says ``offline``), then
run a publisher (drafts QoS 0, finals QoS 1 one at a time, each removed only after its PUBACK, then
the retained ``current`` captions) beside a reader of input messages. Any ``MqttError`` ends the
connection; the loop waits (0.1 s doubling up to ``reconnect_max_s``, with jitter) and connects again.

Input (``<prefix>/<stream>/in/text|flush|end``) is applied to the hub by stream/mqtt/feeds.py: it makes
the bridge the stream's publisher, with the tracks ``caption`` + ``MqttConfig.tracks``. Bad input is
logged and answered on ``<prefix>/<stream>/error`` (or ``<prefix>/error``); it never ends the bridge.
The topic tree and payloads are in stream/mqtt/codec.py and docs/broadcast.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from stream.config import MqttConfig
from stream.errors import ErrorCode, ProtocolError
from stream.hub import StreamHub
from stream.metrics import MqttSnapshot
from stream.mqtt.client import SocketClient
from stream.mqtt.codec import (
    InputEvent,
    PayloadFormat,
    Topics,
    check_settings,
    draft_fields,
    encode,
    ended_fields,
    error_fields,
    final_fields,
    language_fields,
    parse_payload,
)
from stream.mqtt.feeds import MqttFeeds
from stream.mqtt.loop_thread import LoopThread
from stream.mqtt.outbox import MqttOutbox, OutboxStats
from stream.stream_state import Delivery as Observed
from stream.wire.messages import Ended

logger = logging.getLogger("livecanvas.mqtt")

RECONNECT_FIRST_S = 0.1
MQTT_TIMEOUT_S = 10.0  # connect, and the wait for a PUBACK, before the connection counts as lost
OFFLINE_TIMEOUT_S = 2.0  # shutdown: the wait for the ``offline`` status's PUBACK
STOP_TIMEOUT_S = 3.0  # shutdown: the wait for the connection loop to end once cancelled


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The outbox as the bridge thread last saw it, for readers on other threads."""

    connected: bool
    idle: bool
    stats: OutboxStats


class MqttBridge:
    """See the module docstring: ``await start()``, later ``await close()``, both on the server's loop."""

    def __init__(
        self, hub: StreamHub, config: MqttConfig, *, on_publish: Callable[[float], None] | None = None
    ) -> None:
        """``on_publish(seconds)`` is called on the bridge's thread with each final's publish round trip
        (publish until PUBACK; the server's metrics); it must be quick and must not raise."""
        check_settings(config.prefix, config.tracks, config.source_lang)
        self.hub = hub
        self.config = config
        self.topics = Topics(config.prefix)
        self.format: PayloadFormat = "msgpack" if config.payload == "msgpack" else "json"
        self.client_id = config.client_id or f"livecanvas-{uuid.uuid4().hex[:8]}"
        self._own_spill_dir = not config.spill_dir
        own_dir = Path(tempfile.gettempdir()) / f"livecanvas-mqtt-{uuid.uuid4().hex}"
        spill_dir = Path(config.spill_dir) if config.spill_dir else own_dir  # made on the first spill
        spill = spill_dir / f"finals-{re.sub(r'[^A-Za-z0-9_.-]', '_', self.client_id)}.jsonl"
        # finals pending at shutdown are kept for the next start only where it can find them again
        self._keep_pending = bool(config.spill_dir and config.client_id)
        self._spill_dir = spill_dir
        self._thread = LoopThread(f"mqtt-{self.client_id}")
        # the server's loop
        self._server_loop: asyncio.AbstractEventLoop | None = None
        self._feeds = MqttFeeds(hub, config.tracks, config.source_lang)
        self._running = False
        # handed over: the server's loop appends, the bridge thread takes (see _observe)
        self._inbox: deque[Observed] = deque()
        self._inbox_armed = False
        # the bridge thread
        self._outbox = MqttOutbox(spill, memory_bound=config.buffer)
        if spill.exists():  # a crash's: it still holds finals that were delivered
            logger.warning("MQTT: %s is left from an earlier run; its finals are discarded", spill)
            spill.unlink()
        restored = self._outbox.restore() if self._keep_pending else 0
        if restored:
            logger.warning(
                "MQTT: %d finals kept at the last shutdown go out first (from %s)",
                restored,
                self._outbox.kept_path,
            )
        self._closing = False  # close() has begun: the connection loop ends instead of reconnecting
        self._wake = asyncio.Event()  # set when there is something to publish
        self._drained = asyncio.Event()  # set when the publisher found nothing left to publish
        self._client: SocketClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._snapshot = _Snapshot(connected=False, idle=True, stats=self._outbox.stats)
        self.connections = 0  # successful connections so far
        self._on_publish = on_publish

    # -- life (the server's loop) ------------------------------------------------------------------
    async def start(self) -> None:
        self._server_loop = asyncio.get_running_loop()
        self._thread.start()
        self._running = True
        self.hub.add_observer(self._observe)
        await self._thread.run(self._begin())
        logger.info(
            "MQTT bridge %s -> %s:%d, topics %s/<stream>/<track>/...",
            self.client_id,
            self.config.host,
            self.config.port,
            self.topics.prefix,
        )

    async def close(self) -> None:
        """Stop taking input, give pending finals up to ``flush_timeout_s`` to reach the broker, say
        ``offline`` (up to ``OFFLINE_TIMEOUT_S``), end the connection (up to ``STOP_TIMEOUT_S``) and
        the bridge's thread. Bounded whatever the broker does (gone, or up and answering nothing):
        finals it has not acknowledged by then stay in the spill file for the next start (with a spill
        directory and client id of one's own), or are counted as lost."""
        if not self._running:
            return
        self._running = False
        self._feeds.close()
        try:
            await self._thread.run(self._flush())
        finally:
            self.hub.remove_observer(self._observe)
        try:
            kept, lost = await self._thread.run(self._finish())
        finally:
            await self._thread.stop(STOP_TIMEOUT_S)  # what still runs on the bridge's loop is cancelled
        if kept:
            logger.warning(
                "MQTT: %d finals not acknowledged by the broker are kept in %s for the next start",
                kept,
                self._spill_dir,
            )
        if lost:
            logger.warning("MQTT: %d finals never reached the broker (flush timeout)", lost)
        if self._own_spill_dir:
            shutil.rmtree(self._spill_dir, ignore_errors=True)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The bridge thread's event loop (never the server's)."""
        return self._thread.loop

    @property
    def broker_fd(self) -> int | None:
        """The descriptor of the broker connection's socket while connected (diagnostics, tests)."""
        client = self._client
        return client.socket_fd if client is not None else None

    @property
    def connected(self) -> bool:
        return self._snapshot.connected

    @property
    def idle(self) -> bool:
        """Nothing left to publish, as of the bridge thread's latest look."""
        return self._snapshot.idle

    @property
    def outbox_stats(self) -> OutboxStats:
        return self._snapshot.stats

    def snapshot(self) -> MqttSnapshot:
        """The bridge's state for ``/metrics``."""
        snapshot = self._snapshot
        stats = snapshot.stats
        return MqttSnapshot(
            connected=snapshot.connected,
            pending_finals=stats.pending_finals,
            spilled_now=stats.spilled_now,
            spilled_total=stats.spilled_total,
            acked_total=stats.acked_total,
            redelivered_total=stats.redelivered_total,
            drafts_dropped=stats.drafts_dropped,
            reconnects=max(0, self.connections - 1),
        )

    def stats(self) -> dict[str, int | float]:
        snapshot = self._snapshot
        stats = snapshot.stats
        return {
            "mqtt_connected": int(snapshot.connected),
            "mqtt_pending_finals": stats.pending_finals,
            "mqtt_spilled_finals": stats.spilled_total,
            "mqtt_acked_finals": stats.acked_total,
            "mqtt_redelivered_finals": stats.redelivered_total,
        }

    # -- life (the bridge thread) ------------------------------------------------------------------
    async def _begin(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-bridge")

    async def _flush(self) -> None:
        self._take_inbox()  # whatever the hub sent before close()
        if not self._outbox.idle:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.config.flush_timeout_s)

    async def _finish(self) -> tuple[int, int]:
        """Say ``offline``, end the connection loop; (finals kept for the next start, finals lost)."""
        self._closing = True
        try:
            self._take_inbox()
            client = self._client
            if client is not None and self._outbox.is_connected:
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    offline = self._status("offline")
                    await asyncio.wait_for(
                        client.publish(
                            self.topics.status, offline, qos=1, retain=True, timeout=OFFLINE_TIMEOUT_S
                        ),
                        OFFLINE_TIMEOUT_S,
                    )
            await self._stop_connection_loop()
        finally:
            pending = self._outbox.pending_finals
            kept = self._outbox.close(keep=self._keep_pending)
            self._refresh()
        return kept, pending - kept

    async def _stop_connection_loop(self) -> None:
        """Cancel the connection loop and wait for it, at most ``STOP_TIMEOUT_S``. A cancellation can
        be swallowed on its way out (aiomqtt's disconnect turns it into an ``MqttError`` when the
        broker does not answer; a task group prefers a child's error to it): ``_closing`` ends the loop
        then, and the task is cancelled again while it is still running."""
        task, self._task = self._task, None
        if task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT_S
        while not task.done() and loop.time() < deadline:
            task.cancel()
            await asyncio.wait({task}, timeout=min(0.5, max(0.0, deadline - loop.time())))
        if not task.done():
            logger.warning("MQTT: the connection did not end within %.0f s; leaving it", STOP_TIMEOUT_S)

    def _refresh(self) -> None:
        outbox = self._outbox
        self._snapshot = _Snapshot(connected=outbox.is_connected, idle=outbox.idle, stats=outbox.stats)

    # -- output ------------------------------------------------------------------------------------
    def _observe(self, message: Observed) -> None:
        """The hub observer, on the server's loop: one wake-up of the bridge thread per batch."""
        self._inbox.append(message)
        if not self._inbox_armed:
            self._inbox_armed = True
            self._thread.call_soon(self._take_inbox)

    def _take_inbox(self) -> None:
        # disarm before taking: a message appended after this line either is taken below or re-arms
        self._inbox_armed = False
        if not self._inbox:
            return
        while self._inbox:
            self._outbox.put(self._inbox.popleft())
        self._wake_publisher()

    def _wake_publisher(self) -> None:
        self._drained.clear()
        self._wake.set()
        self._refresh()

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_S
        failures = 0
        while not self._closing:
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                error = group.exceptions[0]
                if self._outbox.is_connected:
                    logger.warning(
                        "MQTT: lost the broker (%s); %d finals pending", error, self._outbox.pending_finals
                    )
                elif failures == 0:
                    logger.warning("MQTT: cannot reach %s:%d (%s)", self.config.host, self.config.port, error)
                else:
                    logger.debug("MQTT: still cannot reach the broker (%s)", error)
            except* Exception:  # a bug of ours: log it with its traceback, reconnect, keep the bridge running
                logger.exception("MQTT bridge failed; reconnecting")
            if self._closing:  # the cancellation that ended the session may have been swallowed
                self._outbox.disconnected()
                return
            if self._outbox.is_connected:
                delay, failures = RECONNECT_FIRST_S, 0
            failures += 1
            self._outbox.disconnected()
            self._refresh()
            self._client = None
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.config.reconnect_max_s)

    async def _session(self) -> None:
        client = SocketClient(
            self.config.host,
            self.config.port,
            identifier=self.client_id,
            will=aiomqtt.Will(self.topics.status, self._status("offline"), qos=1, retain=True),
            timeout=MQTT_TIMEOUT_S,
        )
        async with client:
            self._client = client
            self._outbox.connected()
            self._refresh()
            self.connections += 1
            logger.info(
                "MQTT: connected to %s:%d; %d finals to deliver",
                self.config.host,
                self.config.port,
                self._outbox.pending_finals,
            )
            await client.subscribe(self.topics.input_filter, qos=1)
            await client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._publish_loop(client))
                tasks.create_task(self._read_loop(client))

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        outbox, topics = self._outbox, self.topics
        while True:
            self._wake.clear()
            for topic, fields in outbox.take_errors():
                await client.publish(topic, encode(fields, self.format), qos=0)
            for draft in outbox.take_drafts():
                payload = encode(draft_fields(draft), self.format)
                await client.publish(topics.draft(draft.stream, draft.track), payload, qos=0)
            pending = outbox.next_final()
            if pending is not None:
                final = pending.final
                if isinstance(final, Ended):
                    fields = ended_fields(final, seq=pending.seq, redelivered=pending.redelivered)
                    topic = topics.ended(final.stream)
                else:
                    fields = final_fields(final, seq=pending.seq, redelivered=pending.redelivered)
                    topic = topics.final(final.stream, final.track)
                started = time.perf_counter()
                await client.publish(topic, encode(fields, self.format), qos=1)
                outbox.acked(pending.seq)  # publish() returned: the broker's PUBACK is in
                if self._on_publish is not None:
                    self._on_publish(time.perf_counter() - started)
                self._refresh()
                continue
            for final in outbox.current():
                payload = encode(final_fields(final, seq=0, redelivered=False), self.format)
                await client.publish(topics.current(final.stream, final.track), payload, qos=1, retain=True)
                outbox.current_published(final)
            for language in outbox.languages():
                payload = encode(language_fields(language), self.format)
                await client.publish(topics.language(language.stream), payload, qos=1, retain=True)
                outbox.language_published(language)
            self._refresh()
            if outbox.idle:
                self._drained.set()
                await self._wake.wait()

    async def _read_loop(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self._on_input(message.topic.value, payload)

    def _status(self, state: str) -> bytes:
        return encode({"type": "status", "state": state, "client_id": self.client_id}, self.format)

    # -- input -------------------------------------------------------------------------------------
    def _on_input(self, topic: str, payload: bytes) -> None:
        """On the bridge thread: parse, then hand the event (or why it is refused) to the server's loop,
        so that answers keep the input's order."""
        stream: str | None = None
        outcome: InputEvent | Exception
        try:
            stream, command = self.topics.parse_input(topic)
            outcome = parse_payload(stream, command, payload)
        except Exception as error:  # a ProtocolError, or a bug of ours: answered like one from the hub
            outcome = error
        loop = self._server_loop
        assert loop is not None, "start() records the server's loop before anything connects"
        try:
            loop.call_soon_threadsafe(self._apply_input, topic, stream, outcome)
        except RuntimeError:  # the server's loop is closed: nobody is left to apply input
            logger.warning("MQTT input on %s dropped: the server's event loop is gone", topic)

    def _apply_input(self, topic: str, stream: str | None, outcome: InputEvent | Exception) -> None:
        """On the server's loop: apply the input to the hub, or send back why not."""
        try:
            if isinstance(outcome, Exception):
                raise outcome
            self._feeds.apply(outcome)
            return
        except ProtocolError as error:
            logger.warning("MQTT input on %s rejected: %s", topic, error)
            fields = error_fields(error.code, error.message, topic=topic)
        except Exception:  # a bug of ours: log it with its traceback, answer, keep the bridge running
            logger.exception("MQTT input on %s failed", topic)
            message = "the server failed handling this input"
            fields = error_fields(ErrorCode.INTERNAL, message, topic=topic)
        self._thread.call_soon(self._answer, self.topics.error(stream), fields)

    def _answer(self, topic: str, fields: dict[str, object]) -> None:
        """On the bridge thread: queue an error answer (best effort, like drafts)."""
        self._outbox.put_error(topic, fields)
        self._wake_publisher()
