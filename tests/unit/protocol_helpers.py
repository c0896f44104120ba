"""Shared helpers for the protocol tests: frame encoding, decoding and an opened server."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack

from stream.wire.protocol import (
    ClientProtocol,
    Hello,
    Ready,
    ServerProtocol,
    Text,
    Wire,
)

WIRES: list[Wire] = ["msgpack", "json"]
HELLO: dict[str, Any] = {
    "type": "hello",
    "protocol": 1,
    "token": "",
    "stream": "room-1",
    "role": "publish",
    "tracks": ["caption", "pt-BR"],
}
PCM = b"\x01\x00\xff\x7f" * 8


def frame(mapping: object, wire: Wire) -> bytes | str:
    """Encode any value as a frame, bypassing message validation."""
    if wire == "json":
        return json.dumps(mapping)
    return msgpack.packb(mapping, use_bin_type=True)


def decode(data: bytes | str) -> dict[str, Any]:
    obj = json.loads(data) if isinstance(data, str) else msgpack.unpackb(data, raw=False)
    assert isinstance(obj, dict)
    return obj


def sent(proto: ServerProtocol | ClientProtocol) -> list[dict[str, Any]]:
    return [decode(f) for f in proto.data_to_send()]


def audio_mapping(pcm: bytes, wire: Wire) -> dict[str, Any]:
    if wire == "json":
        return {"type": "audio", "pcm_b64": base64.b64encode(pcm).decode()}
    return {"type": "audio", "pcm": pcm}


def ready_for(hello: Hello) -> Ready:
    return Ready(session="sess-1", stream=hello.stream, role=hello.role, tracks=hello.tracks)


def open_server(wire: Wire = "msgpack", role: str = "publish") -> ServerProtocol:
    proto = ServerProtocol()
    proto.receive_frame(frame({**HELLO, "role": role}, wire))
    [hello] = proto.events_received()
    assert isinstance(hello, Hello)
    proto.accept(ready_for(hello))
    proto.data_to_send()
    return proto


def assert_still_usable(proto: ServerProtocol, wire: Wire) -> None:
    proto.receive_frame(frame({"type": "text", "segment": "still here"}, wire))
    assert proto.events_received() == [Text("still here")]
    assert proto.data_to_send() == []
