"""Wire protocol v1 field rules: the value types, limits and pure field readers messages are built from.

This module owns what a single *field* may hold on the wire (docs/protocol.md section 1, *Value
rules*): the limits and name patterns, the ``Role`` and ``Wire`` value types, and the stateless
readers that take one field out of a decoded mapping, check it and raise ``ProtocolError``
(``bad_field``, or ``unsupported_version`` for ``protocol``) naming that field. Which fields make up
which message is ``stream.wire.messages``' business; nothing here knows a message type.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from enum import Enum, StrEnum
from typing import Final, Literal, TypeAlias, TypedDict

from stream.errors import ErrorCode, ProtocolError

Wire: TypeAlias = Literal["msgpack", "json"]

PROTOCOL_VERSION: Final = 1
MAX_INT: Final = 2**53
"""Largest integer accepted where the protocol wants a non-negative integer (exact in JavaScript)."""
MAX_TRACKS: Final = 16
MAX_SEGMENT_CHARS: Final = 4096
MAX_TOKEN_CHARS: Final = 4096
MAX_NAME_CHARS: Final = 128

STREAM_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
TRACK_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_STATS_INT_MIN: Final = -(2**63)
_STATS_INT_MAX: Final = 2**64 - 1


class Role(StrEnum):
    """What a client does on a stream: publishers feed input, subscribers only receive captions."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"


def bad_field(name: str, reason: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FIELD, f"field {name!r} {reason}")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _require(m: Mapping[str, object], name: str) -> object:
    if name not in m:
        raise bad_field(name, "is missing")
    return m[name]


def as_uint(name: str, value: object) -> int:
    if type(value) is not int:  # excludes bool, float, big-float-from-JSON, ...
        raise bad_field(name, f"must be an integer, not {_kind(value)}")
    if not 0 <= value <= MAX_INT:
        raise bad_field(name, "must be in 0..2**53")
    return value


def uint(m: Mapping[str, object], name: str) -> int:
    return as_uint(name, _require(m, name))


def opt_uint(m: Mapping[str, object], name: str) -> int | None:
    value = m.get(name)
    return None if value is None else as_uint(name, value)


def as_str(
    name: str,
    value: object,
    *,
    max_len: int | None = None,
    pattern: re.Pattern[str] | None = None,
    nonblank: bool = False,
) -> str:
    if not isinstance(value, str):
        raise bad_field(name, f"must be a string, not {_kind(value)}")
    if max_len is not None and len(value) > max_len:
        raise bad_field(name, f"must be at most {max_len} characters")
    if pattern is not None and pattern.fullmatch(value) is None:
        raise bad_field(name, f"must match {pattern.pattern}")
    if nonblank and not value.strip():
        raise bad_field(name, "must not be empty")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise bad_field(name, "is not valid Unicode (lone surrogate)") from None
    return value


def string(
    m: Mapping[str, object],
    name: str,
    *,
    default: str | None = None,
    max_len: int | None = None,
    pattern: re.Pattern[str] | None = None,
    nonblank: bool = False,
) -> str:
    if default is not None and name not in m:
        return default
    return as_str(name, _require(m, name), max_len=max_len, pattern=pattern, nonblank=nonblank)


def opt_string(m: Mapping[str, object], name: str) -> str | None:
    value = m.get(name)
    return None if value is None else as_str(name, value)


def epoch_of(m: Mapping[str, object]) -> str | None:  # optional: servers before it sent none
    value = m.get("epoch")
    return None if value is None else as_str("epoch", value, max_len=MAX_NAME_CHARS, nonblank=True)


def tracks_of(m: Mapping[str, object], name: str = "tracks") -> tuple[str, ...]:
    value = _require(m, name)
    if not isinstance(value, list):
        raise bad_field(name, f"must be a list of strings, not {_kind(value)}")
    if not 1 <= len(value) <= MAX_TRACKS:
        raise bad_field(name, f"must hold 1..{MAX_TRACKS} track names")
    items = tuple(as_str(f"{name}[{i}]", v, pattern=TRACK_RE) for i, v in enumerate(value))
    if len(set(items)) != len(items):
        raise bad_field(name, "must not name a track twice")
    return items


def role_of(m: Mapping[str, object], name: str = "role") -> Role:
    value = _require(m, name)
    if isinstance(value, str) and value in (Role.PUBLISH, Role.SUBSCRIBE):
        return Role(value)
    raise bad_field(name, "must be 'publish' or 'subscribe'")


def version_of(m: Mapping[str, object]) -> int:
    version = uint(m, "protocol")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version} is not supported (supported: {PROTOCOL_VERSION})",
        )
    return version


def pcm_of(m: Mapping[str, object], wire: Wire) -> bytes:
    if wire == "json":
        name = "pcm_b64"
        text = as_str(name, _require(m, name))
        try:
            pcm = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise bad_field(name, "is not valid base64") from None
    else:
        name = "pcm"
        value = _require(m, name)
        if not isinstance(value, bytes):
            raise bad_field(name, f"must be binary, not {_kind(value)}")
        pcm = value
    if len(pcm) % 2:
        raise bad_field(name, "must hold an even number of bytes (PCM16LE)")
    return pcm


def is_stat(value: object) -> bool:
    """A ``stats`` value: an int in the 64-bit range or a finite float (never a bool)."""
    if type(value) is int:
        return _STATS_INT_MIN <= value <= _STATS_INT_MAX
    return type(value) is float and math.isfinite(value)


def wire_value(value: object) -> object:
    """A message attribute as it goes into the wire mapping: enums by value, tuples as lists."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


class CanvasFields(TypedDict):
    stream: str
    track: str
    window: int
    rev: int
    seq: int
    text: str
    t0_ms: int
    t1_ms: int
    latency_ms: int
    epoch: str | None


def canvas_fields(m: Mapping[str, object]) -> CanvasFields:
    """Fields shared by ``draft`` and ``final``."""
    t0_ms, t1_ms = uint(m, "t0_ms"), uint(m, "t1_ms")
    if t1_ms < t0_ms:
        raise bad_field("t1_ms", "must not be before t0_ms")
    return {
        "stream": string(m, "stream", pattern=STREAM_RE),
        "track": string(m, "track", pattern=TRACK_RE),
        "window": uint(m, "window"),
        "rev": uint(m, "rev"),
        "seq": uint(m, "seq"),
        "text": string(m, "text"),
        "t0_ms": t0_ms,
        "t1_ms": t1_ms,
        "latency_ms": uint(m, "latency_ms"),
        "epoch": epoch_of(m),
    }
