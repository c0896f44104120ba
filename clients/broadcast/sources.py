"""Where the caption writers' finals come from: a livecanvas server or an MQTT broker (async).

``websocket_captions`` subscribes to one track of a stream (role ``subscribe``) and yields its finals
until the server says ``bye``. ``mqtt_captions`` subscribes to ``<prefix>/<stream>/<track>/final``
(QoS 1) and yields forever, reconnecting by itself; a final that repeats one of the last 64 it saw
(same window, ``seq`` and text: a QoS 1 redelivery) is skipped. Either yields ``Caption``s with
their arrival time on ``time.monotonic`` in ms.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator

import aiomqtt

from clients.python.client import connect
from stream.captions.cues import Caption
from stream.errors import ProtocolError
from stream.mqtt.codec import Topics, decode_map
from stream.wire.messages import Ended, ErrorMsg, FinalMsg, Role

logger = logging.getLogger("livecanvas.captions")


def _caption(final: FinalMsg, arrival_ns: int) -> Caption:
    return Caption(final.text, final.window, final.t0_ms, final.t1_ms, arrival_ns // 1_000_000)


async def websocket_captions(url: str, *, stream: str, track: str, token: str = "") -> AsyncIterator[Caption]:
    async with connect(url, stream=stream, role=Role.SUBSCRIBE, tracks=(track,), token=token) as session:
        async for item in session.received():
            message = item.message
            if isinstance(message, FinalMsg) and message.track == track:
                yield _caption(message, item.at_ns)
            elif isinstance(message, ErrorMsg):
                logger.warning("server error %s: %s", message.code, message.message)
            elif isinstance(message, Ended):
                logger.info("stream %s ended (%s); waiting for it to start again", stream, message.reason)


async def mqtt_captions(
    host: str, port: int, *, prefix: str, stream: str, track: str, client_id: str | None = None
) -> AsyncIterator[Caption]:
    topic = Topics(prefix).final(stream, track)
    recent: deque[tuple[int, object, str]] = deque(maxlen=64)
    delay = 0.1
    while True:
        try:
            async with aiomqtt.Client(
                host, port, identifier=client_id, clean_session=client_id is None
            ) as client:
                await client.subscribe(topic, qos=1)
                logger.info("subscribed to %s on %s:%d", topic, host, port)
                delay = 0.1
                async for message in client.messages:
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    fields = decode_map(payload)
                    try:
                        if fields is None:
                            raise ProtocolError("bad_frame", "payload is neither JSON nor msgpack")
                        final = FinalMsg.from_wire(fields, "json")
                    except ProtocolError as error:
                        logger.warning("ignoring a message on %s: %s", topic, error)
                        continue
                    key = (final.window, fields.get("seq"), final.text)
                    if key in recent:
                        continue  # a redelivery
                    recent.append(key)
                    yield _caption(final, time.monotonic_ns())
        except aiomqtt.MqttError as error:
            logger.warning("MQTT %s:%d: %s; reconnecting in %.1f s", host, port, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
