"""The streams the MQTT bridge publishes into the hub (input over MQTT), on the server's event loop.

``MqttFeeds.apply`` applies one parsed input event (stream/mqtt/codec.py) to the hub. The first text
for a stream makes the bridge its publisher, with the tracks ``caption`` + ``MqttConfig.tracks`` (so
those translations are computed); ``flush`` closes the open window; ``end`` finishes the stream, and
the bridge leaves it once its last final is out. Input that cannot be applied raises ``ProtocolError``
(another publisher owns the stream, ``flush``/``end`` before any text, the server shutting down).

Everything here runs on the hub's thread, the server's loop; stream/mqtt/bridge.py hands input over to it.
"""

from __future__ import annotations

import logging
from typing import assert_never

from engine.types import CAPTION_TRACK
from stream.errors import ErrorCode, ProtocolError
from stream.hub import StreamHub
from stream.mqtt.codec import EndInput, FlushInput, InputEvent, TextInput
from stream.stream_state import Delivery

logger = logging.getLogger("livecanvas.mqtt")


class _MqttFeed:
    """The bridge as the hub's publisher of a stream fed over MQTT. Its results reach MQTT through the
    observer hook, so ``deliver`` has nothing to do; its ``tracks`` decide which translations run."""

    def __init__(self, tracks: frozenset[str]) -> None:
        self._tracks = tracks

    @property
    def tracks(self) -> frozenset[str]:
        return self._tracks

    def deliver(self, message: Delivery) -> None:
        pass


class MqttFeeds:
    """See the module docstring."""

    def __init__(self, hub: StreamHub, tracks: tuple[str, ...], source_lang: str) -> None:
        self.hub = hub
        self.source_lang = source_lang
        self.closing = False  # set by close(): input is refused from then on
        self._tracks = frozenset({CAPTION_TRACK, *tracks})
        self._feeds: dict[str, _MqttFeed] = {}

    def apply(self, event: InputEvent) -> None:
        if self.closing:
            raise ProtocolError(ErrorCode.UNSUPPORTED, "the server is shutting down")
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

    def close(self) -> None:
        """Refuse input from now on, and leave every stream."""
        self.closing = True
        for stream, feed in list(self._feeds.items()):
            self._leave(stream, feed)

    def _feed(self, stream: str) -> _MqttFeed:
        feed = self._feeds.get(stream)
        if feed is None:
            feed = _MqttFeed(self._tracks)
            self.hub.join(stream, feed, publisher=True, source_lang=self.source_lang)
            self._feeds[stream] = feed
            logger.info("MQTT: publishing stream %r, tracks %s", stream, sorted(self._tracks))
        return feed

    def _fed(self, stream: str) -> str:
        if stream not in self._feeds:
            raise ProtocolError(ErrorCode.INVALID_STATE, f"no text was sent to stream {stream!r} over MQTT")
        return stream

    def _leave(self, stream: str, feed: _MqttFeed) -> None:
        if self._feeds.get(stream) is feed:
            del self._feeds[stream]
            self.hub.leave(stream, feed)
