"""Sans-I/O tests of the protocol client side, client-server round trips and decoder fuzzing."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.errors import ErrorCode, LivecanvasStreamError, ProtocolError
from stream.wire.protocol import (
    Audio,
    Bye,
    ClientMessage,
    ClientProtocol,
    DraftMsg,
    End,
    Ended,
    ErrorMsg,
    FinalMsg,
    Flush,
    Hello,
    Ready,
    Resume,
    Role,
    ServerMessage,
    ServerProtocol,
    State,
    StatsMsg,
    Text,
    Wire,
    encode_frame,
)
from tests.unit.protocol_helpers import (
    PCM,
    WIRES,
    decode,
    frame,
    open_server,
    ready_for,
)

# --------------------------------------------------------------------------- client <-> server


def pump(src: ServerProtocol | ClientProtocol, dst: ServerProtocol | ClientProtocol) -> None:
    for data in src.data_to_send():
        dst.receive_frame(data)


@pytest.mark.parametrize("wire", WIRES)
def test_client_server_round_trip(wire: Wire) -> None:
    client, server = ClientProtocol(wire=wire), ServerProtocol()
    hello = Hello(stream="room-1", role=Role.PUBLISH, tracks=("caption", "pt"), token="tok")
    inputs: list[ClientMessage] = [Text("Hello.", t_ms=10), Audio(PCM), Flush()]
    client.send(hello)
    for message in inputs:  # pipelined before ready
        client.send(message)
    data = client.data_to_send()
    assert all(isinstance(d, str if wire == "json" else bytes) for d in data)
    server.receive_frame(data[0])
    assert server.events_received() == [hello]
    server.accept(ready_for(hello))
    for d in data[1:]:
        server.receive_frame(d)
    assert server.events_received() == inputs

    outputs: list[ServerMessage] = [
        DraftMsg(
            stream="room-1", track="pt", window=0, rev=0, text="Olá", t0_ms=10, t1_ms=900, latency_ms=30
        ),
        FinalMsg(
            stream="room-1", track="pt", window=0, rev=1, text="Olá.", t0_ms=10, t1_ms=900, latency_ms=55
        ),
        FinalMsg(
            stream="room-1",
            track="caption",
            window=0,
            rev=0,
            text="",
            t0_ms=10,
            t1_ms=900,
            latency_ms=9,
            error="oom",
        ),
        StatsMsg(values={"rtf": 0.25, "windows": 1}),
        ErrorMsg(code="overloaded", message="slow down"),
    ]
    for output in outputs:
        server.send(output)
    client.send(End())
    pump(client, server)
    assert server.events_received() == [End()]
    server.finish("end")
    pump(server, client)
    events = client.events_received()
    assert events[0] == replace(ready_for(hello), seq=1)
    assert events[1:-1] == [replace(m, seq=i) for i, m in enumerate(outputs, 2)]
    assert events[-1] == Bye(reason="end", seq=7)
    assert client.state is State.CLOSED
    assert client.last_seq == 7
    with pytest.raises(ProtocolError, match="after bye"):
        client.receive_frame(frame({"type": "stats", "seq": 8}, wire))


def server_frame(mapping: dict[str, Any]) -> bytes | str:
    return frame(mapping, "msgpack")


def opened_client(role: Role = Role.SUBSCRIBE) -> ClientProtocol:
    client = ClientProtocol()
    client.send(Hello(stream="s", role=role, tracks=("pt",)))
    client.receive_frame(
        encode_frame(
            Ready(session="x", stream="s", role=role, tracks=("pt",), seq=1).to_wire("msgpack"), "msgpack"
        )
    )
    client.events_received()
    return client


def test_client_detects_seq_gap() -> None:
    client = opened_client()
    client.receive_frame(server_frame({"type": "stats", "seq": 2}))
    with pytest.raises(ProtocolError, match="expected seq 3, got 5") as exc_info:
        client.receive_frame(server_frame({"type": "stats", "seq": 5, "x": 1}))
    assert exc_info.value.code == ErrorCode.SEQ_GAP
    assert ErrorCode.SEQ_GAP.value == "seq_gap"
    assert isinstance(exc_info.value, LivecanvasStreamError)
    assert client.events_received() == [StatsMsg(seq=2), StatsMsg(values={"x": 1}, seq=5)]
    client.receive_frame(server_frame({"type": "stats", "seq": 6}))  # resynchronised
    with pytest.raises(ProtocolError, match="expected seq 7, got 6"):
        client.receive_frame(server_frame({"type": "stats", "seq": 6}))  # duplicate


def test_client_resume_expects_continuation() -> None:
    client = opened_client()
    client.send(Resume(41))
    client.receive_frame(server_frame({"type": "stats", "seq": 2}))  # in flight before the server saw resume
    client.receive_frame(server_frame({"type": "stats", "seq": 42}))
    client.receive_frame(server_frame({"type": "stats", "seq": 43}))
    assert client.last_seq == 43
    with pytest.raises(ProtocolError, match="seq"):
        client.receive_frame(server_frame({"type": "stats", "seq": 50}))


def test_client_resume_with_real_server() -> None:
    client, server = ClientProtocol(wire="json"), ServerProtocol()
    hello = Hello(stream="s", role=Role.SUBSCRIBE, tracks=("pt",))
    client.send(hello)
    client.send(Resume(100))
    data = client.data_to_send()
    server.receive_frame(data[0])
    [event] = server.events_received()
    assert event == hello
    server.accept(ready_for(hello))
    server.receive_frame(data[1])
    assert server.events_received() == [Resume(100)]
    server.send(StatsMsg())
    pump(server, client)
    assert [m.seq for m in client.events_received()] == [1, 101]


def test_client_send_rules() -> None:
    client = ClientProtocol()
    with pytest.raises(ProtocolError, match="hello") as exc_info:
        client.send(Text("hi"))
    assert exc_info.value.code == "not_ready"
    with pytest.raises(ProtocolError, match="token") as exc_info:
        client.send(Hello(stream="s", role=Role.PUBLISH, tracks=("pt",), token="x" * 5000))
    assert exc_info.value.code == "bad_field"
    client = opened_client(Role.SUBSCRIBE)
    with pytest.raises(ProtocolError, match="subscriber"):
        client.send(Text("hi"))
    client = opened_client(Role.PUBLISH)
    with pytest.raises(ProtocolError, match="segment"):
        client.send(Text("   "))
    with pytest.raises(ProtocolError, match="already"):
        client.send(Hello(stream="s", role=Role.PUBLISH, tracks=("pt",)))
    client.send(End())
    with pytest.raises(ProtocolError, match="ENDING"):
        client.send(Flush())


def test_client_rejects_bad_server_frames() -> None:
    client = ClientProtocol()
    with pytest.raises(ProtocolError, match="before ready"):
        client.receive_frame(server_frame({"type": "stats", "seq": 1}))
    client = ClientProtocol()
    client.send(Hello(stream="s", role=Role.PUBLISH, tracks=("pt",)))
    client.receive_frame(
        server_frame({"type": "error", "code": "unauthorized", "message": "no", "ref": "hello", "seq": 1})
    )
    assert client.state is State.AWAITING_HELLO
    client.send(Hello(stream="s", role=Role.PUBLISH, tracks=("pt",)))  # retry allowed after rejection
    for bad, code in [
        (b"\xc1", "bad_frame"),
        (server_frame({"type": "bye", "seq": "2", "reason": "x"}), "bad_field"),
        (server_frame({"type": "ready", "protocol": 2, "seq": 2}), "unsupported_version"),
    ]:
        with pytest.raises(ProtocolError) as exc_info:
            client.receive_frame(bad)
        assert exc_info.value.code == code
    draft = {
        "type": "draft",
        "stream": "s",
        "track": "pt",
        "window": 0,
        "rev": 0,
        "text": "",
        "latency_ms": 0,
    }
    with pytest.raises(ProtocolError, match="t1_ms"):
        client.receive_frame(server_frame(draft | {"t0_ms": 5, "t1_ms": 4, "seq": 2}))


@pytest.mark.parametrize("wire", WIRES)
def test_ended_after_the_last_final_and_the_connection_goes_on(wire: Wire) -> None:
    client, server = ClientProtocol(wire=wire), ServerProtocol()
    hello = Hello(stream="talk", role=Role.SUBSCRIBE, tracks=("caption",))
    client.send(hello)
    pump(client, server)
    server.events_received()
    server.accept(ready_for(hello))
    final = FinalMsg(
        stream="talk", track="caption", window=0, rev=0, text="Hi.", t0_ms=0, t1_ms=0, latency_ms=0,
        epoch="e1",
    )  # fmt: skip
    server.send(final)
    server.send(Ended(stream="talk", reason="end", windows=1, epoch="e1"))
    frames = server.data_to_send()
    assert decode(frames[-1]) == {
        "type": "ended", "stream": "talk", "reason": "end", "windows": 1, "epoch": "e1", "seq": 3,
    }  # fmt: skip
    for data in frames:
        client.receive_frame(data)
    assert client.events_received()[1:] == [
        replace(final, seq=2),
        Ended(stream="talk", reason="end", windows=1, epoch="e1", seq=3),
    ]
    assert client.state is State.OPEN  # no bye: the viewer stays
    assert server.state is State.OPEN
    server.send(replace(final, window=1))  # a publisher started again
    pump(server, client)
    assert [m.TYPE for m in client.events_received()] == ["final"]


def test_ended_fields_are_checked_and_its_epoch_is_optional() -> None:
    base: dict[str, Any] = {"type": "ended", "stream": "s", "reason": "disconnected", "windows": 0}
    assert "epoch" not in Ended(stream="s", reason="end", windows=0).to_wire("json")
    client = opened_client()
    client.receive_frame(server_frame(base | {"seq": 2}))  # from a server that gives no epoch
    assert client.events_received() == [Ended(stream="s", reason="disconnected", windows=0, seq=2)]
    for bad, name in [
        ({"reason": ""}, "reason"),
        ({"reason": None}, "reason"),
        ({"windows": -1}, "windows"),
        ({"windows": True}, "windows"),
        ({"windows": None}, "windows"),
        ({"stream": "a b"}, "stream"),
        ({"epoch": ""}, "epoch"),
    ]:
        with pytest.raises(ProtocolError, match=name) as exc_info:
            client.receive_frame(server_frame(base | bad | {"seq": client.last_seq + 1}))
        assert exc_info.value.code == ErrorCode.BAD_FIELD
    with pytest.raises(ProtocolError, match="before ready"):
        ClientProtocol().receive_frame(server_frame(base | {"seq": 1}))
    server = open_server(role="subscribe")
    server.receive_frame(frame(base, "msgpack"))  # a server message, never one a client sends
    [reply] = [decode(data) for data in server.data_to_send()]
    assert (reply["code"], reply["ref"]) == (ErrorCode.UNKNOWN_TYPE, "ended")


def test_a_message_type_from_a_newer_server_is_skipped_and_its_seq_still_counts() -> None:
    client = opened_client()
    client.events_received()
    client.receive_frame(server_frame({"type": "intermission", "minutes": 5, "seq": 2}))
    assert client.events_received() == []
    assert client.unknown_types == {"intermission": 1}
    client.receive_frame(server_frame({"type": "bye", "reason": "end", "seq": 3}))  # no seq gap
    assert [type(m).__name__ for m in client.events_received()] == ["Bye"]
    other = ClientProtocol()
    with pytest.raises(ProtocolError) as exc_info:  # a skipped message that skips seqs is still a gap
        other.receive_frame(server_frame({"type": "intermission", "seq": 5}))
    assert exc_info.value.code == ErrorCode.SEQ_GAP


# --------------------------------------------------------------------------- property tests

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "type",
        "protocol",
        "token",
        "stream",
        "role",
        "tracks",
        "source_lang",
        "pcm",
        "pcm_b64",
        "segment",
        "t_ms",
        "last_seq",
    ]
)
message_like = st.builds(
    lambda t, fields: {**fields, "type": t},
    st.sampled_from(["hello", "audio", "text", "flush", "end", "resume", "ready", "ended", "x"]),
    st.dictionaries(field_names, msgpack_values, max_size=6),
)


def _exactly_one_outcome(proto: ServerProtocol, data: bytes | str) -> None:
    proto.receive_frame(data)
    events, output = proto.events_received(), proto.data_to_send()
    assert len(events) + len(output) == 1
    if output:
        reply = decode(output[0])
        assert reply["type"] == "error"
        assert reply["code"] in {code.value for code in ErrorCode} - {ErrorCode.INTERNAL}, reply  # ours


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200) | st.text(max_size=200), opened=st.booleans())
def test_arbitrary_frames_never_raise(data: bytes | str, opened: bool) -> None:
    _exactly_one_outcome(open_server() if opened else ServerProtocol(), data)


@settings(max_examples=300, deadline=None)
@given(value=json_values | message_like, opened=st.booleans(), role=st.sampled_from(["publish", "subscribe"]))
def test_arbitrary_json_values_never_raise(value: object, opened: bool, role: str) -> None:
    try:
        data = json.dumps(value)
    except (TypeError, ValueError):  # bytes from message_like: send them through msgpack instead
        data = None
    proto = open_server("json", role) if opened else ServerProtocol()
    if data is not None:
        _exactly_one_outcome(proto, data)


@settings(max_examples=300, deadline=None)
@given(
    value=msgpack_values | message_like, opened=st.booleans(), role=st.sampled_from(["publish", "subscribe"])
)
def test_arbitrary_msgpack_values_never_raise(value: object, opened: bool, role: str) -> None:
    proto = open_server("msgpack", role) if opened else ServerProtocol()
    _exactly_one_outcome(proto, msgpack.packb(value, use_bin_type=True))
