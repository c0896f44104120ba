"""Sans-I/O tests of the v1 session protocol (stream.wire.protocol, stream.wire.messages): no event
loop, no sockets."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from stream.errors import ProtocolError
from stream.wire.protocol import (
    Audio,
    ClientMessage,
    DraftMsg,
    End,
    ErrorMsg,
    FinalMsg,
    Flush,
    Hello,
    Ready,
    Resume,
    Role,
    ServerProtocol,
    State,
    StatsMsg,
    Text,
    Wire,
)
from tests.unit.protocol_helpers import (
    HELLO,
    PCM,
    WIRES,
    assert_still_usable,
    audio_mapping,
    decode,
    frame,
    open_server,
    ready_for,
    sent,
)

# --------------------------------------------------------------------------- hello / ready


@pytest.mark.parametrize("wire", WIRES)
def test_hello_emits_event_and_waits_for_accept(wire: Wire) -> None:
    proto = ServerProtocol()
    proto.receive_frame(frame(HELLO, wire))
    assert proto.events_received() == [
        Hello(stream="room-1", role=Role.PUBLISH, tracks=("caption", "pt-BR"), token="", source_lang="en")
    ]
    assert proto.state is State.AWAITING_HELLO
    assert proto.wire == wire
    assert proto.data_to_send() == []

    proto.accept(Ready(session="s", stream="room-1", role=Role.PUBLISH, tracks=("caption",)))
    [data] = proto.data_to_send()
    assert isinstance(data, str if wire == "json" else bytes)
    assert decode(data) == {
        "type": "ready",
        "protocol": 1,
        "session": "s",
        "stream": "room-1",
        "role": "publish",
        "tracks": ["caption"],
        "seq": 1,
    }
    assert proto.state is State.OPEN
    assert proto.role is Role.PUBLISH


def test_hello_optional_fields_and_extra_fields() -> None:
    proto = ServerProtocol()
    mapping = {k: v for k, v in HELLO.items() if k != "token"} | {"source_lang": "de", "future": [1, 2]}
    proto.receive_frame(frame(mapping, "msgpack"))
    [hello] = proto.events_received()
    assert hello == Hello(stream="room-1", role=Role.PUBLISH, tracks=("caption", "pt-BR"), source_lang="de")


def test_reject_hello_allows_retry_in_other_wire() -> None:
    proto = ServerProtocol()
    proto.receive_frame(frame(HELLO, "json"))
    proto.events_received()
    proto.reject("unauthorized", "bad token")
    [err] = proto.data_to_send()
    assert isinstance(err, str)
    assert decode(err) == {
        "type": "error",
        "code": "unauthorized",
        "message": "bad token",
        "ref": "hello",
        "seq": 1,
    }
    assert proto.state is State.AWAITING_HELLO
    proto.receive_frame(frame(HELLO, "msgpack"))
    [hello] = proto.events_received()
    assert isinstance(hello, Hello)
    proto.accept(ready_for(hello))
    [ready] = proto.data_to_send()
    assert isinstance(ready, bytes)
    assert decode(ready)["seq"] == 2


def test_error_before_hello_answers_in_frame_format() -> None:
    proto = ServerProtocol()
    proto.receive_frame("{oops")
    [data] = proto.data_to_send()
    assert isinstance(data, str)
    assert decode(data)["code"] == "bad_frame"
    proto.receive_frame(b"\xc1")
    [data] = proto.data_to_send()
    assert isinstance(data, bytes)


# --------------------------------------------------------------------------- client messages


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda w: {"type": "text", "segment": "Hello world."}, Text("Hello world.")),
        (lambda w: {"type": "text", "segment": " olá ", "t_ms": 1500}, Text(" olá ", t_ms=1500)),
        (lambda w: {"type": "text", "segment": "x", "t_ms": None}, Text("x")),
        (lambda w: {"type": "text", "segment": "x", "t_ms": 2**53}, Text("x", t_ms=2**53)),
        (lambda w: audio_mapping(PCM, w), Audio(PCM)),
        (lambda w: audio_mapping(b"", w), Audio(b"")),
        (lambda w: {"type": "flush"}, Flush()),
        (lambda w: {"type": "resume", "last_seq": 0}, Resume(0)),
        (lambda w: {"type": "text", "segment": "x", "unknown": {"a": 1}}, Text("x")),
        (lambda w: {"type": "end"}, End()),
    ],
)
def test_messages_decode(wire: Wire, make: Callable[[Wire], dict[str, Any]], expected: ClientMessage) -> None:
    proto = open_server(wire)
    proto.receive_frame(frame(make(wire), wire))
    assert proto.events_received() == [expected]
    assert proto.data_to_send() == []
    assert proto.errors == []


def test_end_then_finish() -> None:
    proto = open_server("json")
    proto.receive_frame(frame({"type": "end"}, "json"))
    assert proto.events_received() == [End()]
    assert proto.state is State.ENDING
    proto.send(
        FinalMsg(
            stream="room-1", track="caption", window=0, rev=3, text="Hi.", t0_ms=0, t1_ms=900, latency_ms=40
        )
    )
    proto.receive_frame(frame({"type": "text", "segment": "late"}, "json"))
    proto.finish("end")
    out = sent(proto)
    assert [(m["type"], m["seq"]) for m in out] == [("final", 2), ("error", 3), ("bye", 4)]
    assert out[1]["code"] == "invalid_state"
    assert out[2]["reason"] == "end"
    assert proto.state is State.CLOSED
    proto.receive_frame(frame({"type": "text", "segment": "after bye"}, "json"))
    assert proto.events_received() == []
    assert proto.data_to_send() == []
    with pytest.raises(ProtocolError, match="closed"):
        proto.send(ErrorMsg(code="internal", message="x"))


def test_end_input_by_server() -> None:
    proto = open_server()
    proto.end_input()
    proto.end_input()
    assert proto.state is State.ENDING
    proto.receive_frame(frame({"type": "flush"}, "msgpack"))
    assert [m["code"] for m in sent(proto)] == ["invalid_state"]


# --------------------------------------------------------------------------- seq


def test_seq_gapless_across_many_sends() -> None:
    proto = open_server()  # ready was seq 1
    for i in range(200):
        if i % 3 == 0:
            proto.send(
                DraftMsg(stream="s", track="pt", window=i, rev=0, text="t", t0_ms=0, t1_ms=1, latency_ms=5)
            )
        elif i % 3 == 1:
            proto.send(StatsMsg(values={"queue": i, "rtf": 0.5}))
        else:
            proto.receive_frame(b"garbage")  # error frames take seq numbers too
    proto.finish("end")
    seqs = [m["seq"] for m in sent(proto)]
    assert seqs == list(range(2, 203))
    assert proto.last_seq == 202


def test_resume_moves_server_seq_forward() -> None:
    proto = open_server()
    proto.receive_frame(frame({"type": "resume", "last_seq": 41}, "msgpack"))
    assert proto.events_received() == [Resume(41)]
    assert proto.last_seq == 41
    proto.send(StatsMsg())
    assert sent(proto) == [{"type": "stats", "seq": 42}]


# --------------------------------------------------------------------------- bad frames


def _raw(data: bytes | str) -> Callable[[Wire], bytes | str]:
    return lambda wire: data


def _msg(mapping: object) -> Callable[[Wire], bytes | str]:
    return lambda wire: frame(mapping, wire)


BIG_TEXT = {"type": "text", "segment": "x" * (1 << 20)}

OPEN_CASES: list[tuple[str, Callable[[Wire], bytes | str], str, str | None]] = [
    ("garbage bytes", _raw(b"\xc1\xff\x00garbage"), "bad_frame", None),
    ("garbage text", _raw("{not json"), "bad_frame", None),
    ("trailing data", _raw(msgpack.packb({"type": "flush"}) + b"\x00"), "bad_frame", None),
    ("json NaN", _raw('{"type": "text", "segment": "x", "t_ms": NaN}'), "bad_frame", None),
    ("json huge int", _raw('{"type": "resume", "last_seq": ' + "9" * 5000 + "}"), "bad_frame", None),
    ("json deep nesting", _raw("[" * 100_000 + "]" * 100_000), "bad_frame", None),
    ("msgpack deep nesting", _raw(b"\x91" * 100_000 + b"\xc0"), "bad_frame", None),
    ("list", _msg(["type", "text"]), "bad_frame", None),
    ("scalar", _msg(42), "bad_frame", None),
    ("missing type", _msg({"segment": "x"}), "bad_frame", None),
    ("non-string type", _msg({"type": 7}), "bad_frame", None),
    ("unknown type", _msg({"type": "subscribe"}), "unknown_type", "subscribe"),
    ("server type", _msg({"type": "ready"}), "unknown_type", "ready"),
    ("long unknown type", _msg({"type": "x" * 65}), "unknown_type", None),
    ("unprintable unknown type", _msg({"type": "a\x07b"}), "unknown_type", None),
    ("lone surrogate type", _raw('{"type": "\\ud800"}'), "unknown_type", None),
    ("segment wrong type", _msg({"type": "text", "segment": 12}), "bad_field", "text"),
    ("segment missing", _msg({"type": "text"}), "bad_field", "text"),
    ("empty text", _msg({"type": "text", "segment": "  \n "}), "bad_field", "text"),
    ("text too long", _msg({"type": "text", "segment": "x" * 4097}), "bad_field", "text"),
    ("bool as int", _msg({"type": "text", "segment": "x", "t_ms": True}), "bad_field", "text"),
    ("negative t_ms", _msg({"type": "text", "segment": "x", "t_ms": -1}), "bad_field", "text"),
    ("float t_ms", _msg({"type": "text", "segment": "x", "t_ms": 1.0}), "bad_field", "text"),
    ("huge t_ms", _msg({"type": "text", "segment": "x", "t_ms": 2**53 + 1}), "bad_field", "text"),
    ("inf t_ms", _raw('{"type": "text", "segment": "x", "t_ms": 1e400}'), "bad_field", "text"),
    ("lone surrogate", _raw('{"type": "text", "segment": "\\ud800"}'), "bad_field", "text"),
    ("odd audio", lambda w: frame(audio_mapping(b"\x00\x01\x02", w), w), "bad_field", "audio"),
    ("audio as str", _msg({"type": "audio", "pcm": "abcd", "pcm_b64": 5}), "bad_field", "audio"),
    ("bad base64", _raw('{"type": "audio", "pcm_b64": "!!!!"}'), "bad_field", "audio"),
    ("negative resume", _msg({"type": "resume", "last_seq": -5}), "bad_field", "resume"),
    ("oversized frame", _msg(BIG_TEXT), "frame_too_large", None),
    ("hello twice", _msg(HELLO), "invalid_state", "hello"),
]


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(("name", "make", "code", "ref"), OPEN_CASES, ids=[c[0] for c in OPEN_CASES])
def test_bad_frame_when_open(
    wire: Wire, name: str, make: Callable[[Wire], bytes | str], code: str, ref: str | None
) -> None:
    proto = open_server(wire)
    proto.receive_frame(make(wire))
    assert proto.events_received() == []
    [data] = proto.data_to_send()
    assert isinstance(data, str if wire == "json" else bytes)
    err = decode(data)
    assert err["type"] == "error"
    assert err["code"] == code
    assert err.get("ref") == ref
    assert err["seq"] == 2
    assert isinstance(err["message"], str)
    assert proto.errors == [ErrorMsg(code=code, message=err["message"], ref=ref, seq=2)]
    assert proto.state is State.OPEN
    assert_still_usable(proto, wire)


def test_bad_field_message_names_the_field() -> None:
    proto = open_server()
    proto.receive_frame(frame({"type": "text", "segment": "x", "t_ms": True}, "msgpack"))
    [err] = sent(proto)
    assert "'t_ms'" in err["message"]


HELLO_CASES: list[tuple[str, object, str]] = [
    ("too many tracks", {**HELLO, "tracks": [f"t{i}" for i in range(17)]}, "bad_field"),
    ("no tracks", {**HELLO, "tracks": []}, "bad_field"),
    ("duplicate tracks", {**HELLO, "tracks": ["pt", "pt"]}, "bad_field"),
    ("bad track name", {**HELLO, "tracks": ["pt BR"]}, "bad_field"),
    ("bad stream name", {**HELLO, "stream": "room/1"}, "bad_field"),
    ("stream newline", {**HELLO, "stream": "room\n"}, "bad_field"),
    ("stream too long", {**HELLO, "stream": "s" * 129}, "bad_field"),
    ("missing stream", {k: v for k, v in HELLO.items() if k != "stream"}, "bad_field"),
    ("bad role", {**HELLO, "role": "admin"}, "bad_field"),
    ("token null", {**HELLO, "token": None}, "bad_field"),
    ("bool protocol", {**HELLO, "protocol": True}, "bad_field"),
    ("protocol 2", {**HELLO, "protocol": 2, "stream": None}, "unsupported_version"),
    ("text before hello", {"type": "text", "segment": "hi"}, "not_ready"),
    ("end before hello", {"type": "end"}, "not_ready"),
]


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(("name", "mapping", "code"), HELLO_CASES, ids=[c[0] for c in HELLO_CASES])
def test_bad_frame_before_ready(wire: Wire, name: str, mapping: object, code: str) -> None:
    proto = ServerProtocol()
    proto.receive_frame(frame(mapping, wire))
    assert proto.events_received() == []
    [err] = sent(proto)
    assert (err["type"], err["code"], err["seq"]) == ("error", code, 1)
    assert proto.state is State.AWAITING_HELLO
    assert len(proto.errors) == 1
    # the client may retry, and the session then works
    proto.receive_frame(frame(HELLO, wire))
    [hello] = proto.events_received()
    assert isinstance(hello, Hello)
    proto.accept(ready_for(hello))
    assert [m["seq"] for m in sent(proto)] == [2]
    assert_still_usable(proto, wire)


def test_second_hello_while_pending() -> None:
    proto = ServerProtocol()
    proto.receive_frame(frame(HELLO, "msgpack"))
    proto.receive_frame(frame(HELLO, "msgpack"))
    assert len(proto.events_received()) == 1
    assert [m["code"] for m in sent(proto)] == ["invalid_state"]


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("msg_type", ["text", "flush", "audio"])
def test_publish_only_messages_from_subscriber(wire: Wire, msg_type: str) -> None:
    mapping = {"text": {"type": "text", "segment": "hi"}, "flush": {"type": "flush"}}.get(msg_type)
    mapping = mapping or audio_mapping(PCM, wire)
    proto = open_server(wire, role="subscribe")
    proto.receive_frame(frame(mapping, wire))
    assert proto.events_received() == []
    [err] = sent(proto)
    assert (err["code"], err["ref"]) == ("invalid_state", mapping["type"])
    proto.receive_frame(frame({"type": "resume", "last_seq": 3}, wire))
    assert proto.events_received() == [Resume(3)]
    proto.receive_frame(frame({"type": "end"}, wire))
    assert proto.events_received() == [End()]


def test_internal_error_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(cls: type[Text], m: object, wire: Wire) -> Text:
        raise RuntimeError("bug")

    monkeypatch.setattr(Text, "from_wire", classmethod(boom))
    proto = open_server()
    proto.receive_frame(frame({"type": "text", "segment": "x"}, "msgpack"))
    assert [m["code"] for m in sent(proto)] == ["internal"]
    assert proto.state is State.OPEN


def test_max_frame_bytes_is_configurable() -> None:
    proto = ServerProtocol(max_frame_bytes=64)
    proto.receive_frame(json.dumps({**HELLO, "token": "é" * 40}))  # 40 chars but 80 bytes of token
    assert [m["code"] for m in sent(proto)] == ["frame_too_large"]
    with pytest.raises(ValueError, match="positive"):
        ServerProtocol(max_frame_bytes=0)


# --------------------------------------------------------------------------- server send rules


def test_server_send_rules() -> None:
    proto = ServerProtocol()
    draft = DraftMsg(stream="s", track="pt", window=0, rev=0, text="", t0_ms=0, t1_ms=0, latency_ms=0)
    with pytest.raises(ProtocolError, match="before ready") as exc_info:
        proto.send(draft)
    assert exc_info.value.code == "invalid_state"
    with pytest.raises(ProtocolError, match="accept"):
        proto.accept(Ready(session="s", stream="s", role=Role.PUBLISH, tracks=("pt",)))
    proto = open_server()
    with pytest.raises(ProtocolError, match="accept"):
        proto.send(Ready(session="s", stream="s", role=Role.PUBLISH, tracks=("pt",)))
    with pytest.raises(ProtocolError, match="track") as exc_info:
        proto.send(
            DraftMsg(stream="s", track="bad track", window=0, rev=0, text="", t0_ms=0, t1_ms=0, latency_ms=0)
        )
    assert exc_info.value.code == "bad_field"
    proto.send(draft)
    assert [m["seq"] for m in sent(proto)] == [2]  # the rejected message used no seq


def test_stats_values() -> None:
    assert StatsMsg(values={"a": 1, "b": 2.5}, seq=3).to_wire("json") == {
        "type": "stats",
        "seq": 3,
        "a": 1,
        "b": 2.5,
    }
    bad_values: list[dict[str, Any]] = [{"seq": 1}, {"type": 1}, {"a": True}, {"a": float("nan")}, {"a": "x"}]
    for bad in bad_values:
        with pytest.raises(ValueError, match="stats"):
            StatsMsg(values=bad)
