"""The MQTT side of livecanvas, without I/O: the topic tree, payload encodings, input parsing.

Topic tree (``<prefix>`` defaults to ``livecanvas``; docs/broadcast.md is the reference)::

    <prefix>/<stream>/<track>/draft     out, QoS 0: every draft (a later one replaces it)
    <prefix>/<stream>/<track>/final     out, QoS 1: every final, exactly once per window
    <prefix>/<stream>/<track>/current   out, QoS 1, retained: the track's latest final
    <prefix>/<stream>/language          out, QoS 1, retained: the language identified (``auto``)
    <prefix>/<stream>/error             out, QoS 0: answers to bad input on this stream
    <prefix>/error                      out, QoS 0: answers to input on a topic naming no valid stream
    <prefix>/status                     out, QoS 1, retained: the bridge's state (last will: offline)
    <prefix>/<stream>/in/text           in: a text segment, JSON {"text", "t_ms"?}, msgpack, or UTF-8
    <prefix>/<stream>/in/flush          in: close the stream's open window now
    <prefix>/<stream>/in/end            in: no more input for the stream

Draft and final payloads are the wire protocol's ``draft``/``final`` maps (docs/protocol.md), as JSON
or msgpack. On MQTT a final's ``seq`` is the bridge's own gapless count of finals (from 1); a draft's
``seq`` is 0 (drafts are not sequenced); finals carry ``redelivered``, true when the bridge publishes
a final again because the broker never acknowledged the earlier attempt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

import msgpack

from stream.errors import ErrorCode, ProtocolError
from stream.wire.fields import MAX_INT, MAX_SEGMENT_CHARS, STREAM_RE, TRACK_RE
from stream.wire.messages import DraftMsg, Ended, FinalMsg, LanguageMsg

PayloadFormat: TypeAlias = Literal["json", "msgpack"]
PAYLOAD_FORMATS: tuple[str, ...] = get_args(PayloadFormat)
INPUT_COMMANDS = ("text", "flush", "end")
MAX_INPUT_BYTES = 64 * 1024


def check_settings(prefix: str, tracks: tuple[str, ...], source_lang: str) -> None:
    """``ValueError`` unless the prefix is a valid topic root and the tracks valid track names."""
    Topics(prefix)
    for track in (*tracks, source_lang):
        if TRACK_RE.fullmatch(track) is None:
            raise ValueError(f"track {track!r} must match {TRACK_RE.pattern}")


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic tree under one prefix; the prefix is checked once, here."""

    prefix: str = "livecanvas"

    def __post_init__(self) -> None:
        levels = self.prefix.split("/")
        if not self.prefix or any(not level for level in levels):
            raise ValueError(f"MQTT topic prefix {self.prefix!r} must be non-empty levels joined by '/'")
        if any(char in self.prefix for char in "+#\0"):
            raise ValueError(f"MQTT topic prefix {self.prefix!r} must not contain '+', '#' or NUL")

    def draft(self, stream: str, track: str) -> str:
        return f"{self.prefix}/{stream}/{track}/draft"

    def final(self, stream: str, track: str) -> str:
        return f"{self.prefix}/{stream}/{track}/final"

    def ended(self, stream: str) -> str:
        return f"{self.prefix}/{stream}/ended"

    def current(self, stream: str, track: str) -> str:
        return f"{self.prefix}/{stream}/{track}/current"

    def language(self, stream: str) -> str:
        return f"{self.prefix}/{stream}/language"

    def error(self, stream: str | None) -> str:
        return f"{self.prefix}/error" if stream is None else f"{self.prefix}/{stream}/error"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def input_filter(self) -> str:
        """What the bridge subscribes to."""
        return f"{self.prefix}/+/in/+"

    def parse_input(self, topic: str) -> tuple[str, str]:
        """``(stream, command)`` of an input topic; ``ProtocolError`` (``bad_field``) if the topic is not
        ``<prefix>/<stream>/in/<command>`` with a valid stream name and a known command."""
        head = self.prefix + "/"
        levels = topic[len(head) :].split("/") if topic.startswith(head) else []
        if len(levels) != 3 or levels[1] != "in":
            raise ProtocolError(ErrorCode.BAD_FIELD, f"topic {topic!r} is not {head}<stream>/in/<command>")
        stream, _, command = levels
        if STREAM_RE.fullmatch(stream) is None:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"stream name {stream!r} must match {STREAM_RE.pattern}")
        if command not in INPUT_COMMANDS:
            raise ProtocolError(
                ErrorCode.UNKNOWN_TYPE, f"unknown input {command!r} (known: {', '.join(INPUT_COMMANDS)})"
            )
        return stream, command


# --------------------------------------------------------------------------- payloads out


def encode(fields: Mapping[str, object], payload_format: PayloadFormat) -> bytes:
    if payload_format == "msgpack":
        packed: bytes = msgpack.packb(dict(fields), use_bin_type=True)
        return packed
    return json.dumps(dict(fields), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def final_fields(final: FinalMsg, *, seq: int, redelivered: bool) -> dict[str, object]:
    return {**final.to_wire("json"), "seq": seq, "redelivered": redelivered}


def ended_fields(ended: Ended, *, seq: int, redelivered: bool) -> dict[str, object]:
    return {**ended.to_wire("json"), "seq": seq, "redelivered": redelivered}


def draft_fields(draft: DraftMsg) -> dict[str, object]:
    return {**draft.to_wire("json"), "seq": 0}


def language_fields(language: LanguageMsg) -> dict[str, object]:
    return {**language.to_wire("json"), "seq": 0}


def error_fields(code: str, message: str, *, topic: str) -> dict[str, object]:
    return {"type": "error", "code": code, "message": message, "ref": "input", "topic": topic}


def decode_map(payload: bytes) -> dict[str, object] | None:
    """A JSON object or a msgpack map as a dict; ``None`` for anything else (plain text, say)."""
    stripped = payload.lstrip()
    if stripped.startswith(b"{"):
        try:
            value = json.loads(stripped.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError):
            return None
    elif payload and (0x80 <= payload[0] <= 0x8F or payload[0] in (0xDE, 0xDF)):
        try:
            value = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
    else:
        return None
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        return None
    return value


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# --------------------------------------------------------------------------- input


@dataclass(frozen=True, slots=True)
class TextInput:
    stream: str
    text: str
    t_ms: int | None = None


@dataclass(frozen=True, slots=True)
class FlushInput:
    stream: str


@dataclass(frozen=True, slots=True)
class EndInput:
    stream: str


InputEvent: TypeAlias = TextInput | FlushInput | EndInput


def parse_payload(stream: str, command: str, payload: bytes) -> InputEvent:
    """The input event of a message on ``<prefix>/<stream>/in/<command>`` (see ``Topics.parse_input``);
    ``ProtocolError`` (with an ``ErrorCode``) if the payload is malformed."""
    if command == "flush":
        return FlushInput(stream)
    if command == "end":
        return EndInput(stream)
    if len(payload) > MAX_INPUT_BYTES:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"payload over {MAX_INPUT_BYTES} bytes")
    fields = decode_map(payload)
    if fields is None:
        if payload.lstrip().startswith(b"{"):
            raise ProtocolError(ErrorCode.BAD_FRAME, "payload starts with '{' but is not a JSON object")
        try:
            text: object = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.BAD_FRAME, "payload is neither a map nor UTF-8 text") from None
        t_ms: object = None
    else:
        if "text" not in fields:
            raise ProtocolError(ErrorCode.BAD_FIELD, "field 'text' is missing")
        text, t_ms = fields["text"], fields.get("t_ms")
    return TextInput(stream, _segment(text), _time(t_ms))


def _segment(text: object) -> str:
    if not isinstance(text, str):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field 'text' must be a string, not {type(text).__name__}")
    if not text.strip():
        raise ProtocolError(ErrorCode.BAD_FIELD, "field 'text' must not be empty")
    if len(text) > MAX_SEGMENT_CHARS:
        raise ProtocolError(
            ErrorCode.BAD_FIELD, f"field 'text' must be at most {MAX_SEGMENT_CHARS} characters"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(ErrorCode.BAD_FIELD, "field 'text' is not valid Unicode") from None
    return text


def _time(t_ms: object) -> int | None:
    if t_ms is None:
        return None
    if type(t_ms) is not int or not 0 <= t_ms <= MAX_INT:
        raise ProtocolError(ErrorCode.BAD_FIELD, "field 't_ms' must be an integer in 0..2**53 or null")
    return t_ms
