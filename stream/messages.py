"""Wire protocol v1 messages: typed dataclasses and their pure codecs.

This module owns what a message *is*: its fields, their types and limits (validated in exactly one
place, the message's ``from_wire`` classmethod) and how it maps onto a wire mapping (``to_wire``).
Everything here is stateless; framing, who may send what and when, and ``seq`` numbering live in
``stream.protocol``. The normative description is docs/protocol.md.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, ClassVar, Final, Literal, Self, TypeAlias, TypedDict, cast

from stream.errors import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Wire: TypeAlias = Literal["msgpack", "json"]

PROTOCOL_VERSION: Final = 1
MAX_INT: Final = 2**53
"""Largest integer accepted where the protocol wants a non-negative integer (exact in JavaScript)."""
MAX_TRACKS: Final = 16
MAX_SEGMENT_CHARS: Final = 4096
MAX_TOKEN_CHARS: Final = 4096
MAX_NAME_CHARS: Final = 128

_STREAM_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_TRACK_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_STATS_INT_MIN: Final = -(2**63)
_STATS_INT_MAX: Final = 2**64 - 1


class Role(StrEnum):
    """What a client does on a stream: publishers feed input, subscribers only receive captions."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"


# --------------------------------------------------------------------------- field parsers (pure)


def _bad(name: str, reason: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FIELD, f"field {name!r} {reason}")


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _require(m: Mapping[str, object], name: str) -> object:
    if name not in m:
        raise _bad(name, "is missing")
    return m[name]


def _as_uint(name: str, value: object) -> int:
    if type(value) is not int:  # excludes bool, float, big-float-from-JSON, ...
        raise _bad(name, f"must be an integer, not {_kind(value)}")
    if not 0 <= value <= MAX_INT:
        raise _bad(name, "must be in 0..2**53")
    return value


def _uint(m: Mapping[str, object], name: str) -> int:
    return _as_uint(name, _require(m, name))


def _opt_uint(m: Mapping[str, object], name: str) -> int | None:
    value = m.get(name)
    return None if value is None else _as_uint(name, value)


def _as_str(
    name: str,
    value: object,
    *,
    max_len: int | None = None,
    pattern: re.Pattern[str] | None = None,
    nonblank: bool = False,
) -> str:
    if not isinstance(value, str):
        raise _bad(name, f"must be a string, not {_kind(value)}")
    if max_len is not None and len(value) > max_len:
        raise _bad(name, f"must be at most {max_len} characters")
    if pattern is not None and pattern.fullmatch(value) is None:
        raise _bad(name, f"must match {pattern.pattern}")
    if nonblank and not value.strip():
        raise _bad(name, "must not be empty")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad(name, "is not valid Unicode (lone surrogate)") from None
    return value


def _str(
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
    return _as_str(name, _require(m, name), max_len=max_len, pattern=pattern, nonblank=nonblank)


def _opt_str(m: Mapping[str, object], name: str) -> str | None:
    value = m.get(name)
    return None if value is None else _as_str(name, value)


def _tracks(m: Mapping[str, object], name: str = "tracks") -> tuple[str, ...]:
    value = _require(m, name)
    if not isinstance(value, list):
        raise _bad(name, f"must be a list of strings, not {_kind(value)}")
    if not 1 <= len(value) <= MAX_TRACKS:
        raise _bad(name, f"must hold 1..{MAX_TRACKS} track names")
    items = tuple(_as_str(f"{name}[{i}]", v, pattern=_TRACK_RE) for i, v in enumerate(value))
    if len(set(items)) != len(items):
        raise _bad(name, "must not name a track twice")
    return items


def _role(m: Mapping[str, object], name: str = "role") -> Role:
    value = _require(m, name)
    if isinstance(value, str) and value in (Role.PUBLISH, Role.SUBSCRIBE):
        return Role(value)
    raise _bad(name, "must be 'publish' or 'subscribe'")


def _version(m: Mapping[str, object]) -> int:
    version = _uint(m, "protocol")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version} is not supported (supported: {PROTOCOL_VERSION})",
        )
    return version


def _pcm(m: Mapping[str, object], wire: Wire) -> bytes:
    if wire == "json":
        name = "pcm_b64"
        text = _as_str(name, _require(m, name))
        try:
            pcm = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _bad(name, "is not valid base64") from None
    else:
        name = "pcm"
        value = _require(m, name)
        if not isinstance(value, bytes):
            raise _bad(name, f"must be binary, not {_kind(value)}")
        pcm = value
    if len(pcm) % 2:
        raise _bad(name, "must hold an even number of bytes (PCM16LE)")
    return pcm


def _is_stat(value: object) -> bool:
    if type(value) is int:
        return _STATS_INT_MIN <= value <= _STATS_INT_MAX
    return type(value) is float and math.isfinite(value)


def _wire_value(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


# --------------------------------------------------------------------------- messages


class _Message:
    """Behaviour shared by all messages; ``TYPE`` is the value of the ``type`` field on the wire."""

    __slots__ = ()
    TYPE: ClassVar[str]
    _OMIT_NONE: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        """Validate a decoded mapping and build the message; raises ``ProtocolError`` (``bad_field``,
        ``unsupported_version``). Unknown extra fields are ignored."""
        raise NotImplementedError

    def to_wire(self, wire: Wire) -> dict[str, object]:
        """The mapping to encode; ``None`` values listed in ``_OMIT_NONE`` are left out."""
        out: dict[str, object] = {"type": self.TYPE}
        for f in fields(cast("DataclassInstance", self)):
            value = getattr(self, f.name)
            if value is None and f.name in self._OMIT_NONE:
                continue
            out[f.name] = _wire_value(value)
        return out


# ---- client -> server


@dataclass(frozen=True, slots=True)
class Hello(_Message):
    TYPE: ClassVar[str] = "hello"
    stream: str
    role: Role
    tracks: tuple[str, ...]
    token: str = ""
    source_lang: str = "en"
    protocol: int = PROTOCOL_VERSION

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        protocol = _version(m)  # first: a newer client may have other fields
        return cls(
            stream=_str(m, "stream", pattern=_STREAM_RE),
            role=_role(m),
            tracks=_tracks(m),
            token=_str(m, "token", default="", max_len=MAX_TOKEN_CHARS),
            source_lang=_str(m, "source_lang", default="en", pattern=_TRACK_RE),
            protocol=protocol,
        )


@dataclass(frozen=True, slots=True)
class Audio(_Message):
    """PCM16LE, 16 kHz, mono. JSON carries it base64-encoded in ``pcm_b64``."""

    TYPE: ClassVar[str] = "audio"
    pcm: bytes

    def __repr__(self) -> str:
        return f"Audio(<{len(self.pcm)} bytes>)"

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls(pcm=_pcm(m, wire))

    def to_wire(self, wire: Wire) -> dict[str, object]:
        if wire == "json":
            return {"type": self.TYPE, "pcm_b64": base64.b64encode(self.pcm).decode("ascii")}
        return {"type": self.TYPE, "pcm": self.pcm}


@dataclass(frozen=True, slots=True)
class Text(_Message):
    TYPE: ClassVar[str] = "text"
    _OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"t_ms"})
    segment: str
    t_ms: int | None = None

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls(
            segment=_str(m, "segment", max_len=MAX_SEGMENT_CHARS, nonblank=True),
            t_ms=_opt_uint(m, "t_ms"),
        )


@dataclass(frozen=True, slots=True)
class Flush(_Message):
    TYPE: ClassVar[str] = "flush"

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class End(_Message):
    TYPE: ClassVar[str] = "end"

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class Resume(_Message):
    """After a reconnect: the last ``seq`` seen on the old connection, and that connection's
    ``session`` (from its ``ready``), which the server needs to replay what was missed."""

    TYPE: ClassVar[str] = "resume"
    _OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"session"})
    last_seq: int
    session: str | None = None

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        session = m.get("session")
        return cls(
            last_seq=_uint(m, "last_seq"),
            session=None if session is None else _as_str("session", session, max_len=MAX_NAME_CHARS),
        )


# ---- server -> client (keyword-only; ``seq`` is filled in by the protocol object)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready(_Message):
    TYPE: ClassVar[str] = "ready"
    session: str
    stream: str
    role: Role
    tracks: tuple[str, ...]
    protocol: int = PROTOCOL_VERSION
    seq: int = 0

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls(
            protocol=_version(m),
            session=_str(m, "session", max_len=MAX_NAME_CHARS, nonblank=True),
            stream=_str(m, "stream", pattern=_STREAM_RE),
            role=_role(m),
            tracks=_tracks(m),
            seq=_uint(m, "seq"),
        )


class _CanvasFields(TypedDict):
    stream: str
    track: str
    window: int
    rev: int
    seq: int
    text: str
    t0_ms: int
    t1_ms: int
    latency_ms: int


def _canvas_fields(m: Mapping[str, object]) -> _CanvasFields:
    """Fields shared by ``draft`` and ``final``."""
    t0_ms, t1_ms = _uint(m, "t0_ms"), _uint(m, "t1_ms")
    if t1_ms < t0_ms:
        raise _bad("t1_ms", "must not be before t0_ms")
    return {
        "stream": _str(m, "stream", pattern=_STREAM_RE),
        "track": _str(m, "track", pattern=_TRACK_RE),
        "window": _uint(m, "window"),
        "rev": _uint(m, "rev"),
        "seq": _uint(m, "seq"),
        "text": _str(m, "text"),
        "t0_ms": t0_ms,
        "t1_ms": t1_ms,
        "latency_ms": _uint(m, "latency_ms"),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class DraftMsg(_Message):
    """A provisional text for (stream, track, window); a later draft or the final replaces it."""

    TYPE: ClassVar[str] = "draft"
    stream: str
    track: str
    window: int
    rev: int
    text: str
    t0_ms: int
    t1_ms: int
    latency_ms: int
    seq: int = 0

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls(**_canvas_fields(m))


@dataclass(frozen=True, slots=True, kw_only=True)
class FinalMsg(_Message):
    """The settled text for (stream, track, window), sent exactly once; ``error`` set on failure."""

    TYPE: ClassVar[str] = "final"
    stream: str
    track: str
    window: int
    rev: int
    text: str
    t0_ms: int
    t1_ms: int
    latency_ms: int
    error: str | None = None
    seq: int = 0

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls(**_canvas_fields(m), error=_opt_str(m, "error"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMsg(_Message):
    """``code`` is an ``ErrorCode`` value; ``ref`` names the offending message's type when known."""

    TYPE: ClassVar[str] = "error"
    _OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"ref"})
    code: str
    message: str
    ref: str | None = None
    seq: int = 0

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls(
            code=_str(m, "code", max_len=MAX_NAME_CHARS, nonblank=True),
            message=_str(m, "message"),
            ref=_opt_str(m, "ref"),
            seq=_uint(m, "seq"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsMsg(_Message):
    """Free-form numeric counters. On the wire the values sit next to ``type`` and ``seq``.

    Local construction is strict (keys must not be ``type``/``seq``; values finite int/float, not
    bool); decoding keeps numeric fields and ignores any others, for forward compatibility.
    """

    TYPE: ClassVar[str] = "stats"
    values: Mapping[str, int | float] = field(default_factory=dict)
    seq: int = 0

    def __post_init__(self) -> None:
        for key, value in self.values.items():
            if not isinstance(key, str) or key in ("type", "seq"):
                raise ValueError(f"stats key {key!r} is not allowed")
            if not _is_stat(value):
                raise ValueError(f"stats value for {key!r} must be a finite int or float, got {value!r}")

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        values = {
            k: cast("int | float", v)
            for k, v in m.items()
            if isinstance(k, str) and k not in ("type", "seq") and _is_stat(v)
        }
        return cls(values=values, seq=_uint(m, "seq"))

    def to_wire(self, wire: Wire) -> dict[str, object]:
        return {"type": self.TYPE, "seq": self.seq, **self.values}


@dataclass(frozen=True, slots=True, kw_only=True)
class Bye(_Message):
    """Last message of a connection; the server closes the socket after it."""

    TYPE: ClassVar[str] = "bye"
    reason: str
    seq: int = 0

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls(reason=_str(m, "reason", max_len=MAX_NAME_CHARS, nonblank=True), seq=_uint(m, "seq"))


ClientMessage: TypeAlias = Hello | Audio | Text | Flush | End | Resume
ServerMessage: TypeAlias = Ready | DraftMsg | FinalMsg | ErrorMsg | StatsMsg | Bye

CLIENT_MESSAGES: Final[Mapping[str, type[ClientMessage]]] = {
    c.TYPE: c for c in (Hello, Audio, Text, Flush, End, Resume)
}
SERVER_MESSAGES: Final[Mapping[str, type[ServerMessage]]] = {
    c.TYPE: c for c in (Ready, DraftMsg, FinalMsg, ErrorMsg, StatsMsg, Bye)
}
