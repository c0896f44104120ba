"""Wire protocol v1 messages: typed dataclasses and their pure codecs.

This module owns what a message *is*: which fields it has and their types (checked in exactly one
place, the message's ``from_wire`` classmethod, with the field readers of ``stream.wire.fields``) and
how it maps onto a wire mapping (``to_wire``). Everything here is stateless; framing, who may send
what and when, and ``seq`` numbering live in ``stream.wire.protocol``. The normative description is
docs/protocol.md.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, ClassVar, Final, Self, TypeAlias, cast

from stream.wire.fields import (
    MAX_NAME_CHARS,
    MAX_SEGMENT_CHARS,
    MAX_TOKEN_CHARS,
    PROTOCOL_VERSION,
    STREAM_RE,
    TRACK_RE,
    Role,
    Wire,
    as_str,
    bad_field,
    canvas_fields,
    epoch_of,
    is_stat,
    opt_string,
    opt_uint,
    pcm_of,
    role_of,
    string,
    tracks_of,
    uint,
    version_of,
    wire_value,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "CLIENT_MESSAGES",
    "PROTOCOL_VERSION",
    "SERVER_MESSAGES",
    "Audio",
    "Bye",
    "ClientMessage",
    "DraftMsg",
    "End",
    "Ended",
    "ErrorMsg",
    "FinalMsg",
    "Flush",
    "Hello",
    "LanguageMsg",
    "Partial",
    "Ready",
    "Resume",
    "Role",
    "ServerMessage",
    "StatsMsg",
    "Text",
    "Wire",
]

# --------------------------------------------------------------------------- messages


class _Message:
    """Behaviour shared by all messages; ``TYPE`` is the value of the ``type`` field on the wire."""

    __slots__ = ()
    TYPE: ClassVar[str]
    _OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"epoch"})  # a stream's epoch, where it has one

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        """Validate a decoded mapping and build the message; raises ``ProtocolError`` (``bad_field``,
        ``unsupported_version``). Unknown extra fields are ignored."""
        raise NotImplementedError

    def to_wire(self, wire: Wire) -> dict[str, object]:
        """The mapping to encode; ``None`` values listed in ``_OMIT_NONE``, and local fields, are left out."""
        out: dict[str, object] = {"type": self.TYPE}
        for f in fields(cast("DataclassInstance", self)):
            value = getattr(self, f.name)
            if f.metadata.get("local") or (value is None and f.name in self._OMIT_NONE):
                continue
            out[f.name] = wire_value(value)
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
        protocol = version_of(m)  # first: a newer client may have other fields
        return cls(
            stream=string(m, "stream", pattern=STREAM_RE),
            role=role_of(m),
            tracks=tracks_of(m),
            token=string(m, "token", default="", max_len=MAX_TOKEN_CHARS),
            source_lang=string(m, "source_lang", default="en", pattern=TRACK_RE),
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
        return cls(pcm=pcm_of(m, wire))

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
            segment=string(m, "segment", max_len=MAX_SEGMENT_CHARS, nonblank=True),
            t_ms=opt_uint(m, "t_ms"),
        )


@dataclass(frozen=True, slots=True)
class Partial(_Message):
    """The publisher's provisional text of the open window (a stenographer's or an external
    recogniser's growing line): it replaces the previous one and is never committed; may be empty."""

    TYPE: ClassVar[str] = "partial"
    _OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"t_ms"})
    segment: str
    t_ms: int | None = None

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls(segment=string(m, "segment", max_len=MAX_SEGMENT_CHARS), t_ms=opt_uint(m, "t_ms"))


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
            last_seq=uint(m, "last_seq"),
            session=None if session is None else as_str("session", session, max_len=MAX_NAME_CHARS),
        )


# ---- server -> client (keyword-only; ``seq`` is filled in by the protocol object)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready(_Message):
    TYPE: ClassVar[str] = "ready"
    session: str
    stream: str
    role: Role
    tracks: tuple[str, ...]
    epoch: str | None = None  # the stream's epoch when the session joined it (see ``FinalMsg``)
    protocol: int = PROTOCOL_VERSION
    seq: int = 0

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls(
            protocol=version_of(m),
            session=string(m, "session", max_len=MAX_NAME_CHARS, nonblank=True),
            stream=string(m, "stream", pattern=STREAM_RE),
            role=role_of(m),
            tracks=tracks_of(m),
            epoch=epoch_of(m),
            seq=uint(m, "seq"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DraftMsg(_Message):
    """A provisional text for (stream, epoch, track, window); a later draft or the final replaces it."""

    TYPE: ClassVar[str] = "draft"
    stream: str
    track: str
    window: int
    rev: int
    text: str
    t0_ms: int
    t1_ms: int
    latency_ms: int
    epoch: str | None = None
    seq: int = 0

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls(**canvas_fields(m))


@dataclass(frozen=True, slots=True, kw_only=True)
class FinalMsg(_Message):
    """The settled text for (stream, epoch, track, window), sent exactly once; ``error`` set on failure.
    Windows count from 0 in each ``epoch`` (a life of the stream in the server). ``number``: the resume
    number ``stream.final_log.FinalLog`` stamps it with; local (never sent), 0 until stamped."""

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
    epoch: str | None = None
    seq: int = 0
    number: int = field(default=0, compare=False, metadata={"local": True})

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls(**canvas_fields(m), error=opt_string(m, "error"))


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
            code=string(m, "code", max_len=MAX_NAME_CHARS, nonblank=True),
            message=string(m, "message"),
            ref=opt_string(m, "ref"),
            seq=uint(m, "seq"),
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
            if not is_stat(value):
                raise ValueError(f"stats value for {key!r} must be a finite int or float, got {value!r}")

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        values = {
            k: cast("int | float", v)
            for k, v in m.items()
            if isinstance(k, str) and k not in ("type", "seq") and is_stat(v)
        }
        return cls(values=values, seq=uint(m, "seq"))

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
        return cls(reason=string(m, "reason", max_len=MAX_NAME_CHARS, nonblank=True), seq=uint(m, "seq"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Ended(_Message):
    """To a stream's subscribers: its publisher's input is over (``reason`` ``"end"``: it sent ``end``;
    ``"disconnected"``: its connection went away and no publisher came back) and every final of the
    stream is out, so this comes after the last one. ``windows``: how many windows the stream has had
    in ``epoch`` (its ``caption`` finals are windows ``0 .. windows - 1``). The connection stays open."""

    TYPE: ClassVar[str] = "ended"
    stream: str
    reason: str
    windows: int
    epoch: str | None = None
    seq: int = 0

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        return cls(
            stream=string(m, "stream", pattern=STREAM_RE),
            reason=string(m, "reason", max_len=MAX_NAME_CHARS, nonblank=True),
            windows=uint(m, "windows"),
            epoch=epoch_of(m),
            seq=uint(m, "seq"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LanguageMsg(_Message):
    """To every connection of a stream published with ``source_lang`` ``"auto"``: the language
    whisper identified in its first seconds of speech (``language``, a code such as ``es``) and how
    sure it was (``probability``, 0..1; 0 when identification failed and the server's fallback was
    taken). Sent once per stream, and again to a connection that joins later."""

    TYPE: ClassVar[str] = "language"
    stream: str
    language: str
    probability: float
    epoch: str | None = None
    seq: int = 0

    def __post_init__(self) -> None:
        if not is_stat(self.probability) or not 0 <= self.probability <= 1:
            raise ValueError(f"probability must be a number in 0..1, got {self.probability!r}")

    @classmethod
    def from_wire(cls, m: Mapping[str, object], wire: Wire) -> Self:
        probability = m.get("probability")
        if not is_stat(probability) or not 0 <= cast("float", probability) <= 1:
            raise bad_field("probability", "must be a number in 0..1")
        return cls(
            stream=string(m, "stream", pattern=STREAM_RE),
            language=string(m, "language", pattern=TRACK_RE),
            probability=float(cast("float", probability)),
            epoch=epoch_of(m),
            seq=uint(m, "seq"),
        )


ClientMessage: TypeAlias = Hello | Audio | Text | Partial | Flush | End | Resume
ServerMessage: TypeAlias = Ready | DraftMsg | FinalMsg | ErrorMsg | StatsMsg | Ended | LanguageMsg | Bye

CLIENT_MESSAGES: Final[Mapping[str, type[ClientMessage]]] = {
    c.TYPE: c for c in (Hello, Audio, Text, Partial, Flush, End, Resume)
}
SERVER_MESSAGES: Final[Mapping[str, type[ServerMessage]]] = {
    c.TYPE: c for c in (Ready, DraftMsg, FinalMsg, ErrorMsg, StatsMsg, Ended, LanguageMsg, Bye)
}
