"""Sans-I/O session state machines for wire protocol v1 (no sockets, no asyncio).

This module owns the life of one connection: its ``State``, the per-connection ``seq`` numbering of
server messages, the choice of wire format, and the rules about which message may be sent or received
when (framing, JSON in text frames and msgpack in binary ones, is ``stream.wire.framing``'s).
``ServerProtocol`` turns incoming frames into client-message events and server messages into outgoing
frames; ``ClientProtocol`` is its mirror image for the Python client. Both follow python-websockets'
pattern: feed ``receive_frame()``, drain ``events_received()``, call ``send()``, drain
``data_to_send()`` (``bytes`` -> binary frame, ``str`` -> text frame).

Message types and their validation live in ``stream.wire.messages`` (re-exported here); the protocol
itself is specified in docs/protocol.md.
"""

from __future__ import annotations

from dataclasses import replace
from enum import IntEnum
from typing import Final, TypeVar

from stream.errors import ErrorCode, ProtocolError
from stream.wire.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    check_max_frame_bytes,
    decode_frame,
    encode_checked,
    encode_frame,
    frame_wire,
    quote,
)
from stream.wire.messages import (
    CLIENT_MESSAGES,
    PROTOCOL_VERSION,
    SERVER_MESSAGES,
    Audio,
    Bye,
    ClientMessage,
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
    StatsMsg,
    Text,
    Wire,
)

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "Audio",
    "Bye",
    "ClientMessage",
    "ClientProtocol",
    "DraftMsg",
    "End",
    "Ended",
    "ErrorCode",
    "ErrorMsg",
    "FinalMsg",
    "Flush",
    "Hello",
    "Partial",
    "ProtocolError",
    "Ready",
    "Resume",
    "Role",
    "ServerMessage",
    "ServerProtocol",
    "State",
    "StatsMsg",
    "Text",
    "Wire",
    "decode_frame",
    "encode_frame",
    "frame_wire",
]

MAX_REF_CHARS: Final = 64  # an unknown ``type`` longer than this is not echoed back as ``ref``

_M = TypeVar("_M", bound=ServerMessage)
_PUBLISH_ONLY: tuple[type[ClientMessage], ...] = (Audio, Text, Partial, Flush)


class State(IntEnum):
    """Connection state, the same four steps on both sides."""

    AWAITING_HELLO = 0  # no hello accepted yet (server: maybe one pending accept/reject)
    OPEN = 1  # ready sent / received; normal traffic
    ENDING = 2  # end received / sent; no more client input, server finalises
    CLOSED = 3  # bye sent / received; nothing more may be sent


def _echoable(text: str) -> bool:
    """Short, printable, valid Unicode: safe to send back to the client as an error's ``ref``."""
    if len(text) > MAX_REF_CHARS or not text.isprintable():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


class ServerProtocol:
    """Server side of one connection.

    A frame that breaks the protocol never raises: ``receive_frame`` queues an ``error`` frame,
    appends the sent ``ErrorMsg`` to ``errors`` (append-only; the server may read or clear it, and
    should disconnect peers that keep erring) and the connection stays usable.

    A valid ``hello`` is emitted as a ``Hello`` event while the state stays ``AWAITING_HELLO``; the
    server then calls ``accept(ready)`` or ``reject(code, message)`` before feeding the next frame.
    Until a hello is pending or accepted, replies use the format of the frame they answer; the hello
    frame then fixes ``wire`` (a rejected hello releases it again).
    """

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = check_max_frame_bytes(max_frame_bytes)
        self.state = State.AWAITING_HELLO
        self.wire: Wire = "msgpack"
        self.last_seq = 0
        self.role: Role | None = None  # granted by accept()
        self.errors: list[ErrorMsg] = []
        self._hello_pending = False
        self._events: list[ClientMessage] = []
        self._output: list[bytes | str] = []

    # ---- incoming

    def receive_frame(self, frame: bytes | str) -> None:
        """Feed one WebSocket frame (``bytes``: binary, ``str``: text). Frames after ``bye`` are dropped."""
        if self.state is State.CLOSED:
            return
        kind = frame_wire(frame)
        if not self._wire_locked:
            self.wire = kind
        try:
            message = self._parse(frame, kind)
        except ProtocolError as exc:
            self._record(exc)
            return
        except Exception:  # a bug of ours must not take the connection down; report it as internal
            self._record(ProtocolError(ErrorCode.INTERNAL, "internal error while handling the frame"))
            return
        self._apply(message, kind)
        self._events.append(message)

    def events_received(self) -> list[ClientMessage]:
        """Client messages decoded since the last call (drained)."""
        events, self._events = self._events, []
        return events

    @property
    def _wire_locked(self) -> bool:
        return self._hello_pending or self.state is not State.AWAITING_HELLO

    def _parse(self, frame: bytes | str, kind: Wire) -> ClientMessage:
        msg_type, mapping = decode_frame(frame, max_frame_bytes=self.max_frame_bytes)
        cls = CLIENT_MESSAGES.get(msg_type)
        if cls is None:
            unknown = ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {quote(msg_type)}")
            if _echoable(msg_type):
                unknown.ref = msg_type  # the client's own type string, echoed so it can match the error
            raise unknown
        try:
            self._check_allowed(cls)
            return cls.from_wire(mapping, kind)
        except ProtocolError as exc:
            exc.ref = cls.TYPE
            raise

    def _check_allowed(self, cls: type[ClientMessage]) -> None:
        if self.state is State.AWAITING_HELLO:
            if cls is not Hello:
                raise ProtocolError(ErrorCode.NOT_READY, f"{cls.TYPE} before ready; send hello first")
            if self._hello_pending:
                raise ProtocolError(ErrorCode.INVALID_STATE, "a hello is already being processed")
        elif self.state is State.OPEN:
            if cls is Hello:
                raise ProtocolError(ErrorCode.INVALID_STATE, "hello was already accepted")
            if cls in _PUBLISH_ONLY and self.role is Role.SUBSCRIBE:
                raise ProtocolError(ErrorCode.INVALID_STATE, f"{cls.TYPE} is not allowed for a subscriber")
        else:  # ENDING
            raise ProtocolError(ErrorCode.INVALID_STATE, f"{cls.TYPE} after end")

    def _apply(self, message: ClientMessage, kind: Wire) -> None:
        if isinstance(message, Hello):
            self._hello_pending = True
            self.wire = kind
        elif isinstance(message, End):
            self.state = State.ENDING
        elif isinstance(message, Resume):
            self.last_seq = max(self.last_seq, message.last_seq)

    def _record(self, exc: ProtocolError) -> None:
        self.errors.append(self._queue(ErrorMsg(code=exc.code, message=exc.message, ref=exc.ref)))

    # ---- outgoing

    def send(self, message: ServerMessage) -> None:
        """Assign the next ``seq``, validate, encode and queue. Raises ``ProtocolError`` for a message
        that is invalid (``bad_field``) or not allowed now (``invalid_state``): ``ready``/``bye`` go
        through ``accept``/``finish``; only ``error`` may precede ``ready``; nothing follows ``bye``."""
        if isinstance(message, Ready | Bye):
            raise ProtocolError(ErrorCode.INVALID_STATE, f"send {message.TYPE} with accept()/finish()")
        if self.state is State.CLOSED:
            raise ProtocolError(ErrorCode.INVALID_STATE, "the connection is closed")
        if self.state is State.AWAITING_HELLO and not isinstance(message, ErrorMsg):
            raise ProtocolError(ErrorCode.INVALID_STATE, f"cannot send {message.TYPE} before ready")
        self._queue(message)

    def data_to_send(self) -> list[bytes | str]:
        """Frames to write since the last call (drained): ``bytes`` binary, ``str`` text."""
        output, self._output = self._output, []
        return output

    def accept(self, ready: Ready) -> None:
        """Accept the pending hello: send ``ready`` and open the session with ``ready.role``."""
        if self.state is not State.AWAITING_HELLO or not self._hello_pending:
            raise ProtocolError(ErrorCode.INVALID_STATE, "accept() needs a pending hello")
        self._queue(ready)
        self._hello_pending = False
        self.state = State.OPEN
        self.role = ready.role

    def reject(self, code: str, message: str, *, ref: str | None = None) -> None:
        """Send an ``error`` frame. A pending hello is rejected by it (``ref`` defaults to ``hello``)
        and the client may send another one."""
        if self.state is State.CLOSED:
            raise ProtocolError(ErrorCode.INVALID_STATE, "the connection is closed")
        pending = self.state is State.AWAITING_HELLO and self._hello_pending
        self._queue(ErrorMsg(code=code, message=message, ref=ref or ("hello" if pending else None)))
        self._hello_pending = False

    def end_input(self) -> None:
        """Stop accepting client input (OPEN -> ENDING), as a client ``end`` does; no-op if ENDING."""
        if self.state is State.ENDING:
            return
        if self.state is not State.OPEN:
            raise ProtocolError(ErrorCode.INVALID_STATE, f"end_input() in state {self.state.name}")
        self.state = State.ENDING

    def finish(self, reason: str = "end") -> None:
        """Send ``bye`` and close (any state -> CLOSED). Call after everything was finalised."""
        if self.state is State.CLOSED:
            raise ProtocolError(ErrorCode.INVALID_STATE, "the connection is already closed")
        self._queue(Bye(reason=reason))
        self.state = State.CLOSED

    def _queue(self, message: _M) -> _M:
        message = replace(message, seq=self.last_seq + 1)
        self._output.append(encode_checked(message, self.wire))
        self.last_seq = message.seq
        return message


class ClientProtocol:
    """Client side of one connection; encodes client messages and decodes server frames.

    Unlike the server side, it raises ``ProtocolError`` from ``send`` for a message that is invalid
    or not allowed now, and from ``receive_frame`` for a frame the server should never have sent.
    A ``seq`` gap raises ``seq_gap`` *after* the message was queued as an event and ``last_seq``
    re-synchronised, so the caller may log it and carry on. After ``send(Resume(n))`` the next
    server message may jump to ``max(last_seq, n) + 1``; that jump is not a gap. A message ``type``
    it does not know (a newer server's) is skipped and counted in ``unknown_types``; its ``seq`` still
    counts, so what follows is no gap.
    """

    def __init__(self, *, wire: Wire = "msgpack", max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = check_max_frame_bytes(max_frame_bytes)
        self.wire: Wire = wire
        self.state = State.AWAITING_HELLO
        self.last_seq = 0
        self.role: Role | None = None
        self._hello_sent = False
        self._ready = False
        self._resume_from: int | None = None
        self._events: list[ServerMessage] = []
        self._output: list[bytes | str] = []
        self.unknown_types: dict[str, int] = {}  # message types skipped (a newer server's), with counts

    # ---- outgoing

    def send(self, message: ClientMessage) -> None:
        """Validate, encode and queue a client message (``seq`` is not used client -> server)."""
        self._check_sendable(message)
        self._output.append(encode_checked(message, self.wire))
        if isinstance(message, Hello):
            self._hello_sent = True
            self.role = message.role
        elif isinstance(message, End):
            self.state = State.ENDING
        elif isinstance(message, Resume):
            self._resume_from = message.last_seq

    def data_to_send(self) -> list[bytes | str]:
        """Frames to write since the last call (drained): ``bytes`` binary, ``str`` text."""
        output, self._output = self._output, []
        return output

    def _check_sendable(self, message: ClientMessage) -> None:
        if self.state in (State.ENDING, State.CLOSED):
            raise ProtocolError(ErrorCode.INVALID_STATE, f"cannot send {message.TYPE} in {self.state.name}")
        if isinstance(message, Hello):
            if self._hello_sent or self.state is not State.AWAITING_HELLO:
                raise ProtocolError(ErrorCode.INVALID_STATE, "hello was already sent")
        elif not self._hello_sent:
            raise ProtocolError(ErrorCode.NOT_READY, f"send hello before {message.TYPE}")
        elif isinstance(message, _PUBLISH_ONLY) and self.role is Role.SUBSCRIBE:
            raise ProtocolError(ErrorCode.INVALID_STATE, f"{message.TYPE} is not allowed for a subscriber")

    # ---- incoming

    def receive_frame(self, frame: bytes | str) -> None:
        """Feed one frame from the server; raises ``ProtocolError`` as described on the class."""
        if self.state is State.CLOSED:
            raise ProtocolError(ErrorCode.INVALID_STATE, "frame received after bye")
        msg_type, mapping = decode_frame(frame, max_frame_bytes=self.max_frame_bytes)
        cls = SERVER_MESSAGES.get(msg_type)
        if cls is None:  # from a newer server: skipped, but its seq still counts
            self.unknown_types[msg_type] = self.unknown_types.get(msg_type, 0) + 1
            seq = mapping.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
                gap = self._advance_seq(seq)
                if gap is not None:
                    raise ProtocolError(ErrorCode.SEQ_GAP, gap, ref=msg_type if len(msg_type) <= 64 else None)
            return
        message = cls.from_wire(mapping, frame_wire(frame))
        gap = self._advance_seq(message.seq)
        self._check_receivable(message)
        if isinstance(message, Ready):
            self._ready = True
            self.role = message.role
            if self.state is State.AWAITING_HELLO:  # else ENDING: end was pipelined before ready
                self.state = State.OPEN
        elif isinstance(message, ErrorMsg) and message.ref == "hello" and not self._ready:
            self._hello_sent = False  # hello rejected: another one may be sent
            self.role = None
        elif isinstance(message, Bye):
            self.state = State.CLOSED
        self._events.append(message)
        if gap is not None:
            raise ProtocolError(ErrorCode.SEQ_GAP, gap, ref=message.TYPE)

    def events_received(self) -> list[ServerMessage]:
        """Server messages decoded since the last call (drained)."""
        events, self._events = self._events, []
        return events

    def _advance_seq(self, seq: int) -> str | None:
        expected = self.last_seq + 1
        resumed = None if self._resume_from is None else max(self.last_seq, self._resume_from) + 1
        self.last_seq = seq
        if seq == resumed:
            self._resume_from = None
            return None
        if seq == expected:
            return None
        also = "" if resumed is None else f" (or {resumed} after resume)"
        return f"expected seq {expected}{also}, got {seq}"

    def _check_receivable(self, message: ServerMessage) -> None:
        if isinstance(message, Ready):
            if self._ready or not self._hello_sent:
                raise ProtocolError(ErrorCode.INVALID_STATE, "unexpected ready", ref=message.TYPE)
        elif not self._ready and not isinstance(message, ErrorMsg | Bye):
            raise ProtocolError(ErrorCode.INVALID_STATE, f"{message.TYPE} before ready", ref=message.TYPE)
