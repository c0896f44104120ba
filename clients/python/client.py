"""An async Python client for livecanvas.

    async with connect("ws://127.0.0.1:8765", stream="talk", tracks=("caption", "pt")) as session:
        await session.send_text("Hello everyone.")
        await session.end()
        async for message in session:      # drafts, finals, errors ... until the server's bye
            print(message)

Wraps the sans-I/O ``ClientProtocol`` over a real WebSocket; the protocol checks that ``seq`` is
gapless and raises ``ProtocolError("seq_gap")`` if a message went missing.

After a dropped connection, reconnect with ``connect(..., resume=old_session.resume_point)``: the
server then sends every final missed in between, in order and once, before live updates
(docs/protocol.md section 5). Drafts and finals carry the stream's *epoch*: if the stream ended and
started again under its name while the client was away, its windows count from 0 again under a new
epoch. ``CaptionSession.epoch`` follows it (across a resume too) and ``Received.new_epoch`` marks the
first message of a new one: a new programme, not finals that were missed (those are announced by a
``resume_gap`` error).

A subscriber is sent ``Ended`` when the stream's publisher has finished (it sent ``end``, or left and
did not come back) and every final of the stream has gone out: it comes after the last final, so the
transcript is complete. The connection stays open; ``CaptionSession.ended`` holds that message until a
draft or final shows the stream going on (a publisher started again).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from stream.errors import ProtocolError
from stream.wire.messages import (
    Audio,
    Bye,
    DraftMsg,
    End,
    Ended,
    ErrorMsg,
    FinalMsg,
    Flush,
    Hello,
    Partial,
    Ready,
    Resume,
    Role,
    ServerMessage,
    Text,
    Wire,
)
from stream.wire.protocol import ClientProtocol


@dataclass(frozen=True, slots=True)
class Received:
    """A server message, when it arrived (``time.monotonic_ns``), and whether it is the first draft or
    final of a new epoch of the stream (windows count from 0 again)."""

    message: ServerMessage
    at_ns: int
    new_epoch: bool = False


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a connection left off: its session id, the last ``seq`` it received and the stream's epoch
    it was in."""

    session: str
    last_seq: int
    epoch: str | None = None


class CaptionSession:
    """One open, accepted connection; iterate it for server messages (with arrival times via ``received``)."""

    def __init__(
        self, websocket: ClientConnection, protocol: ClientProtocol, ready: Ready, epoch: str | None = None
    ) -> None:
        self.websocket = websocket
        self.protocol = protocol
        self.ready = ready
        # the stream's epoch of the latest draft or final received; before any, of the connection this
        # one resumed (``epoch``), else of ``ready``
        self.epoch = epoch if epoch is not None else ready.epoch
        # the stream's ``ended``, if that is the latest news of it: its publisher's input is over and
        # every final is out (None while it goes on)
        self.ended: Ended | None = None
        self._backlog: list[Received] = []

    @property
    def resume_point(self) -> ResumePoint:
        """What to pass as ``connect(..., resume=...)`` to pick up after this connection drops."""
        return ResumePoint(self.ready.session, self.protocol.last_seq, self.epoch)

    async def send_text(self, segment: str, t_ms: int | None = None) -> None:
        await self._send(Text(segment=segment, t_ms=t_ms))

    async def send_partial(self, segment: str, t_ms: int | None = None) -> None:
        """The open window's provisional text (replaced by the next ``send_partial``; ``send_text``
        commits): shown as drafts, caption and translations, never as a final."""
        await self._send(Partial(segment=segment, t_ms=t_ms))

    async def send_audio(self, pcm16le: bytes) -> None:
        """Send audio: PCM16 little-endian, 16 kHz, mono, any (even) number of bytes."""
        await self._send(Audio(pcm=pcm16le))

    async def flush(self) -> None:
        await self._send(Flush())

    async def end(self) -> None:
        """No more input: the server finalises everything, then says bye."""
        await self._send(End())

    def __aiter__(self) -> AsyncIterator[ServerMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[ServerMessage]:
        async for item in self.received():
            yield item.message

    async def received(self) -> AsyncIterator[Received]:
        """Server messages with arrival times, up to and including ``bye`` (or the socket closing)."""
        while True:
            if self._backlog:
                item = self._backlog.pop(0)
                yield item
                if isinstance(item.message, Bye):
                    return
                continue
            try:
                frame = await self.websocket.recv()
            except ConnectionClosed:
                return
            self.protocol.receive_frame(frame)
            now = time.monotonic_ns()
            self._backlog.extend(Received(m, now, self._enter(m)) for m in self.protocol.events_received())

    def _enter(self, message: ServerMessage) -> bool:
        """Follow the epoch of a draft or final (``True`` when it starts a new one), and ``ended``."""
        if isinstance(message, Ended):
            self.ended = message
        elif isinstance(message, DraftMsg | FinalMsg):
            self.ended = None
        epoch = message.epoch if isinstance(message, DraftMsg | FinalMsg) else None
        if epoch is None or epoch == self.epoch:
            return False
        new, self.epoch = self.epoch is not None, epoch
        return new

    async def _send(self, message: Text | Partial | Audio | Flush | End) -> None:
        self.protocol.send(message)
        for frame in self.protocol.data_to_send():
            await self.websocket.send(frame)


@asynccontextmanager
async def connect(
    url: str,
    *,
    stream: str,
    role: Role | str = Role.PUBLISH,
    tracks: Iterable[str] = ("caption",),
    token: str = "",
    source_lang: str = "en",
    wire: Wire = "msgpack",
    open_timeout: float = 30.0,
    resume: ResumePoint | None = None,
) -> AsyncIterator[CaptionSession]:
    """Connect, say hello (and ``resume``, pipelined, when given) and wait for ``ready``; raises
    ``ProtocolError`` if the server refuses. The token goes in the hello and, where the transport
    allows, as an ``Authorization: Bearer`` header too."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with ws_connect(
        url, open_timeout=open_timeout, max_size=None, additional_headers=headers
    ) as websocket:
        protocol = ClientProtocol(wire=wire)
        protocol.send(
            Hello(stream=stream, role=Role(role), tracks=tuple(tracks), token=token, source_lang=source_lang)
        )
        if resume is not None:
            protocol.send(Resume(last_seq=resume.last_seq, session=resume.session))
        for frame in protocol.data_to_send():
            await websocket.send(frame)
        ready: Ready | None = None
        backlog: list[Received] = []
        while ready is None:
            protocol.receive_frame(await websocket.recv())
            for message in protocol.events_received():
                if isinstance(message, Ready):
                    ready = message
                elif isinstance(message, ErrorMsg) and message.ref == "hello":
                    raise ProtocolError(message.code, message.message)
                else:
                    backlog.append(Received(message, time.monotonic_ns()))
        session = CaptionSession(websocket, protocol, ready, resume.epoch if resume is not None else None)
        session._backlog = backlog
        yield session
