"""Property-based fuzzing of the protocol decoder (stream/wire/protocol.py, stream/wire/messages.py).

Whatever arrives - random bytes, broken msgpack or JSON, maps with wrong types, huge and negative
numbers, NaN, lone surrogates, deep nesting - the decoder raises only ``ProtocolError`` with a known
code, and the server side never raises at all: it answers with an ``error`` frame (never ``internal``,
which would be a bug of ours) and stays usable.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.errors import ErrorCode, ProtocolError
from stream.wire.messages import CLIENT_MESSAGES, SERVER_MESSAGES, DraftMsg
from stream.wire.protocol import ClientProtocol, ServerProtocol, State, decode_frame
from tests.unit.protocol_helpers import HELLO, decode, frame, open_server
from tests.unit.test_protocol_client import opened_client

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN_CODES = {code.value for code in ErrorCode}
MAX_FRAME = 4096

numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, -1, 1, 2**53, 2**53 + 1, -(2**53), 2**63 - 1, 2**64 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "\ud800", "\udfff", "\u202e", "\ufeff", "é" * 200, "x" * 5000, "1.0"]),
    st.characters(codec="utf-8").map(lambda c: c * 3),
)
leaves = st.one_of(st.none(), numbers, texts, st.binary(max_size=40))
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
FIELDS = sorted(
    {"type", "protocol", "stream", "role", "tracks", "token", "source_lang", "segment", "t_ms", "pcm",
     "pcm_b64", "last_seq", "session", "seq", "window", "rev", "text", "t0_ms", "t1_ms", "latency_ms",
     "code", "message", "ref", "reason", "error", "epoch", "windows"}
)  # fmt: skip
message_types = st.sampled_from(sorted({*CLIENT_MESSAGES, *SERVER_MESSAGES, "", "HELLO", "x" * 200}))


@st.composite
def message_like(draw: st.DrawFn) -> dict[str, Any]:
    """A map that looks like a message: a known (or near) type and known field names, any values."""
    mapping: dict[str, Any] = draw(st.dictionaries(st.sampled_from(FIELDS), values, max_size=8))
    mapping["type"] = draw(message_types | values)
    if draw(st.booleans()):  # a valid hello with one field spoiled
        spoiled = dict(HELLO)
        spoiled[draw(st.sampled_from(sorted(HELLO)))] = draw(values)
        mapping = spoiled
    return mapping


def encodable_msgpack(obj: object) -> bytes | None:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return None


def json_text(obj: object) -> str:
    def default(value: object) -> object:
        return value.hex() if isinstance(value, bytes) else str(value)

    return json.dumps(obj, default=default)  # NaN/Infinity written on purpose: the decoder must refuse them


def check_code(error: ProtocolError, expected: str | None = None) -> None:
    assert error.code in KNOWN_CODES if expected is None else error.code == expected, error


def assert_only_protocol_errors(raw: bytes | str) -> None:
    try:
        msg_type, mapping = decode_frame(raw, max_frame_bytes=MAX_FRAME)
    except ProtocolError as error:
        check_code(error)
        return
    cls = CLIENT_MESSAGES.get(msg_type) or SERVER_MESSAGES.get(msg_type)
    if cls is None:
        return
    for wire in ("msgpack", "json"):
        try:
            message = cls.from_wire(mapping, wire)
        except ProtocolError as error:
            check_code(error)
        else:
            # whatever was accepted survives its own encoder and validator
            cls.from_wire(message.to_wire("msgpack"), "msgpack")


def assert_server_answers(raw: bytes | str) -> None:
    server = ServerProtocol(max_frame_bytes=MAX_FRAME)
    server.receive_frame(raw)
    events = server.events_received()
    out = server.data_to_send()
    assert len(events) + len(out) == 1, "one event or one error per frame"
    if out:
        reply = decode(out[0])
        assert reply["type"] == "error"
        assert reply["code"] in KNOWN_CODES
        assert reply["code"] != ErrorCode.INTERNAL, reply
    assert server.state is State.AWAITING_HELLO
    server.receive_frame(frame(HELLO, "json"))  # still usable afterwards
    assert server.events_received() or server.data_to_send()


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(raw: bytes) -> None:
    assert_only_protocol_errors(raw)
    assert_server_answers(raw)


@FUZZ
@given(st.text(max_size=200))
def test_random_text(raw: str) -> None:
    assert_only_protocol_errors(raw)
    assert_server_answers(raw)


@FUZZ
@given(message_like())
def test_message_shaped_msgpack(mapping: dict[str, Any]) -> None:
    raw = encodable_msgpack(mapping)
    if raw is not None and len(raw) <= MAX_FRAME:
        assert_only_protocol_errors(raw)
        assert_server_answers(raw)


@FUZZ
@given(message_like())
def test_message_shaped_json(mapping: dict[str, Any]) -> None:
    raw = json_text(mapping)
    if len(raw.encode("utf-8", "surrogatepass")) <= MAX_FRAME:
        assert_only_protocol_errors(raw)
        assert_server_answers(raw)


@FUZZ
@given(message_like(), st.integers(min_value=0, max_value=60), st.binary(min_size=1, max_size=8))
def test_truncated_and_corrupted_msgpack(mapping: dict[str, Any], cut: int, junk: bytes) -> None:
    raw = encodable_msgpack(mapping)
    if raw is None:
        return
    for broken in (raw[:cut], raw + junk, junk + raw, raw[:cut] + junk + raw[cut:]):
        assert_only_protocol_errors(broken)
        assert_server_answers(broken)


@FUZZ
@given(st.sampled_from(["protocol", "t_ms", "last_seq", "seq", "window"]), numbers)
def test_numbers_out_of_range_name_the_field(name: str, number: object) -> None:
    """Each field where its range is checked: ``protocol`` in a hello, ``t_ms`` in a publisher's text
    and ``last_seq`` in a subscriber's resume (both after the hello), ``seq`` and ``window`` in what
    the client decodes."""
    valid = type(number) is int and 0 <= number <= 2**53 and (name != "protocol" or number == 1)
    if name in ("seq", "window"):
        draft = DraftMsg(stream="s", track="pt", window=0, rev=0, text="x", t0_ms=0, t1_ms=0, latency_ms=0)
        mapping = {**draft.to_wire("msgpack"), "seq": 2, name: number}
        raw = encodable_msgpack(mapping)
        if raw is None:
            return
        client = opened_client()
        if valid and (name == "window" or number == 2):
            client.receive_frame(raw)
            return
        with pytest.raises(ProtocolError) as refused:
            client.receive_frame(raw)
        expected = ErrorCode.SEQ_GAP if valid else ErrorCode.BAD_FIELD  # an in-range seq that skips
        assert refused.value.code == expected
        assert name in refused.value.message
        return
    if name == "protocol":
        server, mapping = ServerProtocol(max_frame_bytes=MAX_FRAME), {**HELLO, "protocol": number}
    elif name == "t_ms":
        server, mapping = open_server(), {"type": "text", "segment": "x", "t_ms": number}
    else:
        server, mapping = open_server(role="subscribe"), {"type": "resume", "last_seq": number}
    raw = encodable_msgpack(mapping)
    if raw is None:
        return
    server.receive_frame(raw)
    errors = [reply for reply in map(decode, server.data_to_send()) if reply["type"] == "error"]
    if valid:
        assert errors == []
    elif name == "protocol":
        assert errors[0]["code"] in {ErrorCode.BAD_FIELD, ErrorCode.UNSUPPORTED_VERSION}
    else:
        assert errors[0]["code"] == ErrorCode.BAD_FIELD
        assert name in errors[0]["message"]


@FUZZ
@given(st.text(min_size=1, max_size=10))
def test_lone_surrogates_from_json_escapes_are_refused(text: str) -> None:
    escaped = json.dumps({**HELLO, "token": text + "\ud83d"}, ensure_ascii=True)
    server = ServerProtocol(max_frame_bytes=MAX_FRAME)
    server.receive_frame(escaped)
    reply = decode(server.data_to_send()[0])
    assert (reply["code"], "surrogate" in reply["message"]) == (ErrorCode.BAD_FIELD, True)


def test_deep_nesting_is_a_bad_frame_not_a_crash() -> None:
    for raw in ("[" * 100_000 + "]" * 100_000, b"\x91" * 100_000 + b"\xc0"):
        server = ServerProtocol(max_frame_bytes=1 << 20)
        server.receive_frame(raw)
        assert decode(server.data_to_send()[0])["code"] == ErrorCode.BAD_FRAME


def test_huge_json_integers_are_refused_not_converted() -> None:
    for number in ("1" + "0" * 4000, "-" + "9" * 100, "1e400", "NaN", "-Infinity"):
        raw = '{"type":"resume","last_seq":' + number + "}"
        try:
            _, mapping = decode_frame(raw, max_frame_bytes=1 << 20)
        except ProtocolError as error:
            check_code(error, ErrorCode.BAD_FRAME)
            continue
        value = mapping["last_seq"]
        assert not (
            isinstance(value, float) and math.isfinite(value) and value == int(value) and value < 2**53
        )


@FUZZ
@given(message_like())
def test_the_client_decoder_raises_only_protocol_errors(mapping: dict[str, Any]) -> None:
    for raw in (encodable_msgpack(mapping), json_text(mapping)):
        if raw is None:
            continue
        try:
            ClientProtocol().receive_frame(raw)
        except ProtocolError as error:
            check_code(error)
