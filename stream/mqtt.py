"""The MQTT bridge: every stream's drafts and finals out to a broker, text segments in (aiomqtt).

Everything runs on the server's event loop. The hub hands every draft and final of every stream to
``_observe`` (a hub observer: synchronous, never raises), which only puts it into the sans-I/O
``MqttOutbox``; what goes out, in which order, and what is kept across outages is decided there
(stream/mqtt_outbox.py). One task owns the connection, as an explicit loop: connect, subscribe to the
input topics, publish ``online`` to the retained status topic (the last will says ``offline``), then
run a publisher (drafts QoS 0, finals QoS 1 one at a time, each removed only after its PUBACK, then
the retained ``current`` captions) beside a reader of input messages. Any ``MqttError`` ends the
connection; the loop waits (0.1 s doubling up to ``reconnect_max_s``, with jitter) and connects again.

Input (``<prefix>/<stream>/in/text|flush|end``) makes the bridge the stream's publisher, with the
tracks ``caption`` + ``MqttConfig.tracks``, so those translations are computed. Bad input is logged
and answered on ``<prefix>/<stream>/error`` (or ``<prefix>/error``); it never ends the bridge. The
topic tree and payloads are in stream/mqtt_codec.py and docs/broadcast.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import assert_never

import aiomqtt

from engine.types import CAPTION_TRACK
from stream.config import MqttConfig
from stream.errors import ErrorCode, ProtocolError
from stream.hub import StreamHub
from stream.messages import DraftMsg, FinalMsg
from stream.mqtt_codec import (
    EndInput,
    FlushInput,
    InputEvent,
    PayloadFormat,
    TextInput,
    Topics,
    check_settings,
    draft_fields,
    encode,
    error_fields,
    final_fields,
    parse_payload,
)
from stream.mqtt_outbox import MqttOutbox

logger = logging.getLogger("livecanvas.mqtt")

RECONNECT_FIRST_S = 0.1
MQTT_TIMEOUT_S = 10.0  # connect, and the wait for a PUBACK, before the connection counts as lost


class _MqttFeed:
    """The bridge as the hub's publisher of a stream fed over MQTT. Its results reach MQTT through the
    observer hook, so ``deliver`` has nothing to do; its ``tracks`` decide which translations run."""

    def __init__(self, tracks: frozenset[str]) -> None:
        self._tracks = tracks

    @property
    def tracks(self) -> frozenset[str]:
        return self._tracks

    def deliver(self, message: DraftMsg | FinalMsg) -> None:
        pass


class MqttBridge:
    """See the module docstring: ``await start()``, later ``await close()``."""

    def __init__(self, hub: StreamHub, config: MqttConfig) -> None:
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
        if spill.exists():
            logger.warning("MQTT: %s is left from an earlier run; its finals are discarded", spill)
        self.outbox = MqttOutbox(spill, memory_bound=config.buffer)
        self._spill_dir = spill_dir
        self._feeds: dict[str, _MqttFeed] = {}
        self._feed_tracks = frozenset({CAPTION_TRACK, *config.tracks})
        self._wake = asyncio.Event()  # set when there is something to publish
        self._drained = asyncio.Event()  # set when the publisher found nothing left to publish
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connections = 0  # successful connections so far

    # -- life --------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.hub.add_observer(self._observe)
        self._task = asyncio.create_task(self._run(), name="mqtt-bridge")
        logger.info(
            "MQTT bridge %s -> %s:%d, topics %s/<stream>/<track>/...",
            self.client_id,
            self.config.host,
            self.config.port,
            self.topics.prefix,
        )

    async def close(self) -> None:
        """Stop taking input, give pending finals up to ``flush_timeout_s`` to reach the broker, say
        ``offline`` and disconnect."""
        if self._task is None:
            return
        self._closing = True
        for stream, feed in list(self._feeds.items()):
            self._leave(stream, feed)
        if not self.outbox.idle:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.config.flush_timeout_s)
        self.hub.remove_observer(self._observe)
        client = self._client
        if client is not None and self.outbox.is_connected:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(
                    self.topics.status, self._status("offline"), qos=1, retain=True, timeout=2
                )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        lost = self.outbox.pending_finals
        if lost:
            logger.warning("MQTT: %d finals never reached the broker (flush timeout)", lost)
        self.outbox.close()
        if self._own_spill_dir:
            shutil.rmtree(self._spill_dir, ignore_errors=True)

    @property
    def connected(self) -> bool:
        return self.outbox.is_connected

    def stats(self) -> dict[str, int | float]:
        stats = self.outbox.stats
        return {
            "mqtt_connected": int(self.connected),
            "mqtt_pending_finals": stats.pending_finals,
            "mqtt_spilled_finals": stats.spilled_total,
            "mqtt_acked_finals": stats.acked_total,
            "mqtt_redelivered_finals": stats.redelivered_total,
        }

    # -- output ------------------------------------------------------------------------------------
    def _observe(self, message: DraftMsg | FinalMsg) -> None:
        self.outbox.put(message)
        self._drained.clear()
        self._wake.set()

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_S
        failures = 0
        while True:
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                error = group.exceptions[0]
                if self.outbox.is_connected:
                    logger.warning(
                        "MQTT: lost the broker (%s); %d finals pending", error, self.outbox.pending_finals
                    )
                elif failures == 0:
                    logger.warning("MQTT: cannot reach %s:%d (%s)", self.config.host, self.config.port, error)
                else:
                    logger.debug("MQTT: still cannot reach the broker (%s)", error)
            except* Exception:  # a bug of ours: log it with its traceback, reconnect, keep the bridge running
                logger.exception("MQTT bridge failed; reconnecting")
            if self.outbox.is_connected:
                delay, failures = RECONNECT_FIRST_S, 0
            failures += 1
            self.outbox.disconnected()
            self._client = None
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.config.reconnect_max_s)

    async def _session(self) -> None:
        client = aiomqtt.Client(
            self.config.host,
            self.config.port,
            identifier=self.client_id,
            will=aiomqtt.Will(self.topics.status, self._status("offline"), qos=1, retain=True),
            timeout=MQTT_TIMEOUT_S,
        )
        async with client:
            self._client = client
            self.outbox.connected()
            self.connections += 1
            logger.info(
                "MQTT: connected to %s:%d; %d finals to deliver",
                self.config.host,
                self.config.port,
                self.outbox.pending_finals,
            )
            await client.subscribe(self.topics.input_filter, qos=1)
            await client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._publish_loop(client))
                tasks.create_task(self._read_loop(client))

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        outbox, topics = self.outbox, self.topics
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
                fields = final_fields(final, seq=pending.seq, redelivered=pending.redelivered)
                await client.publish(
                    topics.final(final.stream, final.track), encode(fields, self.format), qos=1
                )
                outbox.acked(pending.seq)  # publish() returned: the broker's PUBACK is in
                continue
            for final in outbox.current():
                payload = encode(final_fields(final, seq=0, redelivered=False), self.format)
                await client.publish(topics.current(final.stream, final.track), payload, qos=1, retain=True)
                outbox.current_published(final)
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
        stream: str | None = None
        try:
            stream, command = self.topics.parse_input(topic)
            event = parse_payload(stream, command, payload)
            if self._closing:
                raise ProtocolError(ErrorCode.UNSUPPORTED, "the server is shutting down")
            self._apply(event)
        except ProtocolError as error:
            logger.warning("MQTT input on %s rejected: %s", topic, error)
            self.outbox.put_error(
                self.topics.error(stream), error_fields(error.code, error.message, topic=topic)
            )
        except Exception:  # a bug of ours: log it with its traceback, answer, keep the bridge running
            logger.exception("MQTT input on %s failed", topic)
            message = "the server failed handling this input"
            self.outbox.put_error(
                self.topics.error(stream), error_fields(ErrorCode.INTERNAL, message, topic=topic)
            )
        self._drained.clear()
        self._wake.set()

    def _apply(self, event: InputEvent) -> None:
        match event:
            case TextInput():
                self._feed(event.stream)
                self.hub.publish_text(event.stream, event.text, event.t_ms)
            case FlushInput():
                self.hub.flush(self._fed(event.stream))
            case EndInput():
                stream = self._fed(event.stream)
                feed = self._feeds[stream]
                self.hub.end_input(stream)
                self.hub.when_drained(stream, lambda: self._leave(stream, feed))
            case _:
                assert_never(event)

    def _feed(self, stream: str) -> _MqttFeed:
        feed = self._feeds.get(stream)
        if feed is None:
            feed = _MqttFeed(self._feed_tracks)
            self.hub.join(stream, feed, publisher=True, source_lang=self.config.source_lang)
            self._feeds[stream] = feed
            logger.info("MQTT: publishing stream %r, tracks %s", stream, sorted(self._feed_tracks))
        return feed

    def _fed(self, stream: str) -> str:
        if stream not in self._feeds:
            raise ProtocolError(ErrorCode.INVALID_STATE, f"no text was sent to stream {stream!r} over MQTT")
        return stream

    def _leave(self, stream: str, feed: _MqttFeed) -> None:
        if self._feeds.get(stream) is feed:
            del self._feeds[stream]
            self.hub.leave(stream, feed)
