"""MQTT topics, payloads and input parsing (sans-I/O), and the hub's observer hook the bridge relies on."""

from __future__ import annotations

import json

import msgpack
import pytest

from engine.types import CAPTION_TRACK, CanvasKey, Draft, Final
from livecanvas.cli import build_parser
from livecanvas.cli_serve import server_config
from stream.config import MqttConfig, parse_host_port
from stream.draft_display import DraftDisplay
from stream.errors import ErrorCode, ProtocolError
from stream.hub import StreamHub
from stream.mqtt.codec import (
    EndInput,
    FlushInput,
    TextInput,
    Topics,
    check_settings,
    decode_map,
    draft_fields,
    encode,
    final_fields,
    parse_payload,
)
from stream.wire.messages import DraftMsg, FinalMsg

T = Topics("studio/livecanvas")


def test_topic_tree() -> None:
    assert T.draft("talk-1", "pt-BR") == "studio/livecanvas/talk-1/pt-BR/draft"
    assert T.final("talk-1", "caption") == "studio/livecanvas/talk-1/caption/final"
    assert T.current("talk-1", "caption") == "studio/livecanvas/talk-1/caption/current"
    assert T.error("talk-1") == "studio/livecanvas/talk-1/error"
    assert T.error(None) == "studio/livecanvas/error"
    assert T.status == "studio/livecanvas/status"
    assert T.input_filter == "studio/livecanvas/+/in/+"
    assert T.parse_input("studio/livecanvas/talk-1/in/text") == ("talk-1", "text")


@pytest.mark.parametrize("prefix", ["", "a/", "/a", "a//b", "a/+", "a/#"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Topics(prefix)


@pytest.mark.parametrize(
    ("topic", "code"),
    [
        ("other/talk/in/text", ErrorCode.BAD_FIELD),
        ("studio/livecanvas/talk/text", ErrorCode.BAD_FIELD),
        ("studio/livecanvas/bad name/in/text", ErrorCode.BAD_FIELD),
        ("studio/livecanvas/talk/in/audio", ErrorCode.UNKNOWN_TYPE),
        ("studio/livecanvas/talk/in/text/more", ErrorCode.BAD_FIELD),
    ],
)
def test_bad_input_topics(topic: str, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as caught:
        T.parse_input(topic)
    assert caught.value.code == code


def test_text_payloads_json_msgpack_and_plain() -> None:
    assert parse_payload("s", "text", b'{"text": "Bom dia.", "t_ms": 1200}') == TextInput(
        "s", "Bom dia.", 1200
    )
    assert parse_payload("s", "text", json.dumps({"text": "x"}).encode()) == TextInput("s", "x", None)
    packed = msgpack.packb({"text": "Olá", "t_ms": None})
    assert parse_payload("s", "text", packed) == TextInput("s", "Olá", None)
    assert parse_payload("s", "text", "Good evening — à tous.".encode()) == TextInput(
        "s", "Good evening — à tous.", None
    )
    assert parse_payload("s", "flush", b"") == FlushInput("s")
    assert parse_payload("s", "end", b"anything") == EndInput("s")


@pytest.mark.parametrize(
    ("payload", "code", "needle"),
    [
        (b"", ErrorCode.BAD_FIELD, "empty"),
        (b"   \n", ErrorCode.BAD_FIELD, "empty"),
        (b"\xff\xfe\x00", ErrorCode.BAD_FRAME, "UTF-8"),
        (b'{"text": 5}', ErrorCode.BAD_FIELD, "string"),
        (b'{"txt": "hi"}', ErrorCode.BAD_FIELD, "missing"),
        (b'{"text": "hi", "t_ms": -1}', ErrorCode.BAD_FIELD, "t_ms"),
        (b'{"text": "hi", "t_ms": 1.5}', ErrorCode.BAD_FIELD, "t_ms"),
        (b'{"text": "hi", "t_ms": true}', ErrorCode.BAD_FIELD, "t_ms"),
        (b'{"text": "hi", "t_ms": NaN}', ErrorCode.BAD_FRAME, "JSON"),
        (b'{"text": "\\ud800"}', ErrorCode.BAD_FIELD, "Unicode"),
        (b'{"text": "unterminated', ErrorCode.BAD_FRAME, "JSON"),
        (json.dumps({"text": "x" * 4097}).encode(), ErrorCode.BAD_FIELD, "at most"),
        (b"x" * (64 * 1024 + 1), ErrorCode.FRAME_TOO_LARGE, "bytes"),
    ],
)
def test_bad_text_payloads(payload: bytes, code: ErrorCode, needle: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_payload("s", "text", payload)
    assert caught.value.code == code
    assert needle in caught.value.message


def test_payloads_out_are_protocol_messages_with_the_bridge_seq() -> None:
    final = FinalMsg(
        stream="s", track="pt", window=4, rev=2, text="Olá", t0_ms=10, t1_ms=20, latency_ms=5, seq=99
    )
    fields = final_fields(final, seq=7, redelivered=True)
    assert fields["seq"] == 7
    assert fields["redelivered"] is True
    for payload_format in ("json", "msgpack"):
        decoded = decode_map(encode(fields, payload_format))
        assert decoded is not None
        assert FinalMsg.from_wire(decoded, "json") == FinalMsg(
            stream="s", track="pt", window=4, rev=2, text="Olá", t0_ms=10, t1_ms=20, latency_ms=5, seq=7
        )
    assert encode(fields, "json").decode("utf-8").startswith('{"type":"final"')
    draft = DraftMsg(stream="s", track="pt", window=4, rev=0, text="O", t0_ms=10, t1_ms=20, latency_ms=1)
    assert draft_fields(draft)["seq"] == 0


def test_mqtt_settings_are_checked() -> None:
    assert parse_host_port("broker", 1883) == ("broker", 1883)
    assert parse_host_port("broker:1884", 1883) == ("broker", 1884)
    assert parse_host_port("[::1]:1885", 1883) == ("::1", 1885)
    for bad in ("broker:x", ":1883", "broker:0", "broker:70000"):
        with pytest.raises(ValueError, match="HOST"):
            parse_host_port(bad, 1883)
    with pytest.raises(ValueError, match="payload"):
        MqttConfig(host="b", payload="xml")
    with pytest.raises(ValueError, match="buffer"):
        MqttConfig(host="b", buffer=0)


class _Feed:
    def __init__(self, *tracks: str) -> None:
        self.tracks = frozenset(tracks)

    def deliver(self, message: DraftMsg | FinalMsg) -> None:
        pass


def test_hub_observers_see_every_draft_and_final_of_every_stream() -> None:
    seen: list[tuple[str, str, str, int]] = []
    hub = StreamHub(lambda job: None, display=DraftDisplay(agreement=False))
    hub.add_observer(lambda m: seen.append((m.TYPE, m.stream, m.track, m.window)))
    hub.join("a", _Feed(CAPTION_TRACK, "pt"), publisher=True, source_lang="en")
    hub.join("b", _Feed("es"), publisher=True, source_lang="en")  # nobody subscribes to b's caption
    hub.publish_text("a", "One. ", None)
    hub.publish_text("b", "Two. ", None)
    hub.flush("a")
    hub.flush("b")
    hub.on_engine_events([Draft(key=CanvasKey("a", "pt", 0), rev=0, text="U", steps=1)])
    hub.on_engine_events([Final(key=CanvasKey("b", "es", 0), rev=1, text="Dos.", steps=2, tokens=2)])
    assert seen == [
        ("final", "a", "caption", 0),
        ("final", "b", "caption", 0),
        ("draft", "a", "pt", 0),
        ("final", "b", "es", 0),
    ]


def test_serve_flags_make_the_mqtt_settings() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--mqtt",
            "broker:1884",
            "--mqtt-tracks",
            "pt,es",
            "--mqtt-payload",
            "msgpack",
            "--mqtt-buffer",
            "5",
        ]
    )
    mqtt = server_config(args).mqtt
    assert mqtt is not None
    assert (mqtt.host, mqtt.port, mqtt.tracks, mqtt.payload, mqtt.buffer) == (
        "broker",
        1884,
        ("pt", "es"),
        "msgpack",
        5,
    )
    assert server_config(build_parser().parse_args(["serve"])).mqtt is None
    for bad in (
        ["--mqtt", "b", "--mqtt-tracks", "p t"],
        ["--mqtt", "b", "--mqtt-prefix", "a/#"],
        ["--mqtt", "b:x"],
    ):
        with pytest.raises(SystemExit, match="MQTT settings"):
            server_config(build_parser().parse_args(["serve", *bad]))
    check_settings("studio/livecanvas", ("pt-BR",), "en")
    with pytest.raises(ValueError, match="track"):
        check_settings("livecanvas", ("pt",), "e n")
