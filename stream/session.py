"""One WebSocket connection: the thin asyncio adapter around ``ServerProtocol`` and the hub.

The reader task feeds frames to the protocol and dispatches the decoded messages; a writer task drains
the connection's ``Outbox`` into the protocol. Every frame goes out through ``_flush``, under one lock,
so frames reach the socket in ``seq`` order whichever task queued them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, assert_never

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from engine.models import match_language
from engine.types import CAPTION_TRACK
from stream.errors import ErrorCode, ProtocolError
from stream.fanout import Outbox
from stream.messages import (
    Audio,
    ClientMessage,
    DraftMsg,
    End,
    FinalMsg,
    Flush,
    Hello,
    Ready,
    Resume,
    Role,
    StatsMsg,
    Text,
)
from stream.protocol import ServerProtocol, State

if TYPE_CHECKING:
    from stream.server import LivecanvasServer

logger = logging.getLogger("livecanvas.session")


class Connection:
    """A connected client; as a hub ``Viewer`` it receives the drafts and finals of its tracks."""

    def __init__(self, server: LivecanvasServer, websocket: ServerConnection) -> None:
        self.server = server
        self.websocket = websocket
        self.protocol = ServerProtocol(max_frame_bytes=server.config.max_frame_bytes)
        self._wake = asyncio.Event()
        self.outbox = Outbox(on_ready=self._wake.set)
        self._send_lock = asyncio.Lock()
        self.session_id = uuid.uuid4().hex[:12]
        self.stream: str | None = None
        self.role: Role | None = None
        self._tracks: frozenset[str] = frozenset()
        self._bye_reason: str | None = None

    # -- Viewer ------------------------------------------------------------------------------------
    @property
    def tracks(self) -> frozenset[str]:
        return self._tracks

    def deliver(self, message: DraftMsg | FinalMsg) -> None:
        self.outbox.put(message)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def run(self) -> None:
        writer = asyncio.create_task(self._write_loop(), name=f"writer-{self.session_id}")
        try:
            async for frame in self.websocket:
                self.protocol.receive_frame(frame)
                for message in self.protocol.events_received():
                    self._dispatch(message)
                await self._flush()
                if writer.done():
                    break
        except ConnectionClosed:
            pass
        finally:
            if self.stream is not None:
                self.server.hub.leave(self.stream, self)
            if not writer.done():
                # a clean end waits for the bye to go out; a vanished client does not
                if self._bye_reason is not None and self.websocket.state.name == "OPEN":
                    await asyncio.wait({writer}, timeout=self.server.config.drain_timeout_s)
                writer.cancel()

    def say_goodbye(self, reason: str) -> None:
        """Send ``bye`` once everything queued before it has gone out, then close."""
        if self._bye_reason is None:
            self._bye_reason = reason
            self._wake.set()

    # -- incoming ----------------------------------------------------------------------------------
    def _dispatch(self, message: ClientMessage) -> None:
        hub = self.server.hub
        match message:
            case Hello():
                self._hello(message)
            case Text():
                assert self.stream is not None
                hub.publish_text(self.stream, message.segment, message.t_ms)
            case Flush():
                assert self.stream is not None
                hub.flush(self.stream)
            case End():
                assert self.stream is not None
                if self.role is Role.PUBLISH:
                    hub.end_input(self.stream)
                    hub.when_drained(self.stream, lambda: self.say_goodbye("end"))
                else:
                    self.say_goodbye("end")
            case Audio():
                assert self.stream is not None
                if hub.accepts_audio:
                    hub.publish_audio(self.stream, message.pcm)
                else:
                    self.protocol.reject(
                        ErrorCode.UNSUPPORTED,
                        "speech recognition is off on this server; send text",
                        ref="audio",
                    )
            case Resume():
                self.protocol.reject(
                    ErrorCode.UNSUPPORTED, "this server does not keep history for resume yet", ref="resume"
                )
            case _:
                assert_never(message)

    def _hello(self, hello: Hello) -> None:
        tracks = frozenset(hello.tracks) or frozenset({CAPTION_TRACK})
        model = self.server.model
        supported = model.card.target_languages if model is not None else ()
        missing = sorted(t for t in tracks - {CAPTION_TRACK} if match_language(t, supported) is None)
        if missing:
            self.protocol.reject(
                ErrorCode.UNSUPPORTED,
                f"this server's model translates into {', '.join(supported)} only; "
                f"no track {', '.join(missing)}",
                ref="hello",
            )
            return
        try:
            self.server.hub.join(
                hello.stream, self, publisher=hello.role is Role.PUBLISH, source_lang=hello.source_lang
            )
        except ProtocolError as error:
            self.protocol.reject(error.code, error.message)
            return
        self.stream, self.role, self._tracks = hello.stream, hello.role, tracks
        self.protocol.accept(
            Ready(session=self.session_id, stream=hello.stream, role=hello.role, tracks=tuple(sorted(tracks)))
        )
        logger.info(
            "session %s: %s on %r, tracks %s", self.session_id, hello.role, hello.stream, sorted(tracks)
        )

    # -- outgoing ----------------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for message in self.outbox.take():
                self.protocol.send(message)
            if (
                self._bye_reason is not None
                and not len(self.outbox)
                and self.protocol.state is not State.CLOSED
            ):
                if self.protocol.state is not State.AWAITING_HELLO:
                    self.protocol.send(StatsMsg(values=self.server.stats()))
                self.protocol.finish(self._bye_reason)
            await self._flush()
            if self.protocol.state is State.CLOSED:
                await self.websocket.close(1000, self._bye_reason or "bye")
                return

    async def _flush(self) -> None:
        async with self._send_lock:
            for frame in self.protocol.data_to_send():
                await self.websocket.send(frame)
