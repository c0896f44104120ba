"""Frames of wire protocol v1: a text frame holds JSON, a binary frame msgpack; the size limit is
checked before anything is decoded. ``decode_frame`` never raises anything but ``ProtocolError``
(``frame_too_large`` or ``bad_frame``). The session state machines that use these are in
``stream.wire.protocol``; the protocol itself is specified in docs/protocol.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

import msgpack

from stream.errors import ErrorCode, ProtocolError
from stream.wire.messages import ClientMessage, ServerMessage, Wire

DEFAULT_MAX_FRAME_BYTES: Final = 1 << 20


def frame_wire(frame: bytes | str) -> Wire:
    """Text frames carry JSON, binary frames msgpack."""
    return "json" if isinstance(frame, str) else "msgpack"


def frame_size(frame: bytes | str, limit: int) -> int:
    if not isinstance(frame, str) or len(frame) > limit or frame.isascii():
        return len(frame)
    return len(frame.encode("utf-8", "surrogatepass"))


def reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def decode_frame(frame: bytes | str, *, max_frame_bytes: int) -> tuple[str, Mapping[str, object]]:
    """Size-check and decode one frame into ``(message type, mapping)``.

    Raises ``ProtocolError`` with ``frame_too_large`` (checked before decoding) or ``bad_frame``
    (undecodable, not a map, no string ``type``). Never raises anything else.
    """
    size = frame_size(frame, max_frame_bytes)
    if size > max_frame_bytes:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {size} bytes exceeds the limit of {max_frame_bytes}"
        )
    wire = frame_wire(frame)
    try:
        if isinstance(frame, str):
            obj: object = json.loads(frame, parse_constant=reject_constant)
        else:
            obj = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # any decoder failure is the peer's fault, never ours to propagate
        raise ProtocolError(ErrorCode.BAD_FRAME, f"undecodable {wire} frame ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"a frame must hold a map, not {type(obj).__name__}")
    msg_type = obj.get("type")
    if not isinstance(msg_type, str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "a message needs a string 'type' field")
    return msg_type, obj


def encode_frame(mapping: Mapping[str, object], wire: Wire) -> bytes | str:
    """Encode a wire mapping: ``bytes`` for a binary (msgpack) frame, ``str`` for a text (JSON) one."""
    if wire == "json":
        return json.dumps(mapping, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return msgpack.packb(mapping, use_bin_type=True)


def encode_checked(message: ClientMessage | ServerMessage, wire: Wire) -> bytes | str:
    """Run the receiver's validation on our own message (so a bad one fails at the sender), then encode."""
    mapping = message.to_wire("msgpack")
    type(message).from_wire(mapping, "msgpack")
    return encode_frame(mapping if wire == "msgpack" else message.to_wire(wire), wire)


def quote(text: str, limit: int = 40) -> str:
    return ascii(text if len(text) <= limit else text[:limit] + "...")


def check_max_frame_bytes(max_frame_bytes: int) -> int:
    if max_frame_bytes <= 0:
        raise ValueError(f"max_frame_bytes must be positive, got {max_frame_bytes}")
    return max_frame_bytes
