"""Speech tracks over a real server and real WebSockets on loopback, with real whisper base on the
``pytest-audioeval`` clips: Spanish speech gets an ``en`` track (whisper's translate task) with drafts
and exactly one final per caption window, and a ``pt`` track through it (the embedded en -> pt-BR
translator); ``source_lang: "auto"`` is announced (``language``) before the captions, on the server's
MQTT bridge too (a real Mosquitto), and decides the routes. The latencies are printed (``-s``) for
bench/README.md."""

from __future__ import annotations

import asyncio
import json
import statistics
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.python.client import connect
from stream.config import MqttConfig, ServerConfig
from stream.errors import ErrorCode, ProtocolError
from stream.server import LivecanvasServer
from stream.wire.messages import Bye, DraftMsg, ErrorMsg, FinalMsg, LanguageMsg, ServerMessage
from tests.integration.mosquitto import Mosquitto, Recorder
from tests.integration.test_audio import stream_audio
from tests.integration.test_mqtt import wait_until
from tests.speech import audioeval_clips, read_wav_16k, silence


@pytest.fixture
async def asr_server(
    livecanvas_cache: Path, mosquitto: Mosquitto, tmp_path: Path
) -> AsyncIterator[LivecanvasServer]:
    mqtt = MqttConfig(host="127.0.0.1", port=mosquitto.port, spill_dir=str(tmp_path / "spill"))
    config = ServerConfig(host="127.0.0.1", port=0, drain_timeout_s=120, asr=True, mqtt=mqtt)
    async with LivecanvasServer(config) as running:
        yield running


def healthz(port: int) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
        return json.loads(reply.read())


def spoken(language: str, *names: str) -> bytes:
    clips = audioeval_clips(language)
    return b"".join(read_wav_16k(clips[n].path).tobytes() + silence(1.0) for n in names)


def track(messages: list[ServerMessage], name: str) -> tuple[list[DraftMsg], list[FinalMsg]]:
    drafts = [m for m in messages if isinstance(m, DraftMsg) and m.track == name]
    finals = [m for m in messages if isinstance(m, FinalMsg) and m.track == name]
    return drafts, finals


def check_one_final_per_window(messages: list[ServerMessage], name: str, windows: int) -> list[FinalMsg]:
    """One final per caption window, in window order, each after its drafts; revs rise (a draft queued
    behind a newer one of its window may be skipped: docs/protocol.md), the final's above them all."""
    drafts, finals = track(messages, name)
    assert [f.window for f in finals] == list(range(windows)), name
    for final in finals:
        own = [d for d in drafts if d.window == final.window]
        revs = [d.rev for d in own]
        assert revs == sorted(set(revs))
        assert all(0 <= rev < final.rev for rev in revs)
        assert final.rev >= len(own)
        assert all(messages.index(d) < messages.index(final) for d in own)
    return finals


def report(name: str, drafts: list[DraftMsg], finals: list[FinalMsg]) -> None:
    def median(values: list[int]) -> str:
        return f"{statistics.median(values) / 1000:.2f} s" if values else "-"

    first: dict[int, int] = {}
    for draft in drafts:
        first.setdefault(draft.window, draft.latency_ms)
    print(
        f"\n{name}: {len(drafts)} drafts, {len(finals)} finals; first draft per window "
        f"{median(list(first.values()))}, final {median([f.latency_ms for f in finals])} (median)"
    )


async def test_spanish_speech_gets_en_from_whisper_and_pt_through_it(asr_server: LivecanvasServer) -> None:
    url = f"ws://127.0.0.1:{asr_server.port}"
    pcm = spoken("es", "conteo", "hola_mundo", "pangrama")
    messages, _ = await stream_audio(url, "talk-es", pcm, source_lang="es", tracks=("caption", "en", "pt"))
    assert isinstance(messages[-1], Bye)
    assert not [m for m in messages if isinstance(m, ErrorMsg)]
    captions = track(messages, "caption")[1]
    assert len(captions) >= 2
    english = check_one_final_per_window(messages, "en", len(captions))
    portuguese = check_one_final_per_window(messages, "pt", len(captions))
    assert [(f.t0_ms, f.t1_ms) for f in english] == [(f.t0_ms, f.t1_ms) for f in captions]
    assert all(f.error is None for f in english + portuguese)
    said = " ".join(f.text for f in english).lower()
    assert "hello" in said or "world" in said, said  # "Hola mundo." (base keeps "mundo" in some passes)
    assert track(messages, "en")[0], "the English was never drafted"
    # every pt final translates its window's English (empty where whisper placed none)
    assert [bool(p.text) for p in portuguese] == [bool(e.text) for e in english]
    assert "mundo" in " ".join(p.text for p in portuguese).lower()
    for name in ("caption", "en", "pt"):
        report(name, *track(messages, name))


async def test_auto_is_announced_then_whispers_en_track_follows_the_language(
    asr_server: LivecanvasServer, mosquitto: Mosquitto
) -> None:
    url = f"ws://127.0.0.1:{asr_server.port}"
    pcm = spoken("fr", "comptage", "bonjour_monde")
    messages, _ = await stream_audio(url, "talk-auto", pcm, source_lang="auto", tracks=("caption", "en"))
    assert asr_server.mqtt is not None
    await wait_until(lambda: asr_server.mqtt is not None and asr_server.mqtt.idle, 10, "the bridge to drain")
    async with Recorder(mosquitto.port, ["livecanvas/talk-auto/language"]) as late_subscriber:
        await late_subscriber.wait_for(
            lambda: bool(late_subscriber.on("language")), 10, "the retained language"
        )
    retained = late_subscriber.on("language")[0]
    assert retained.retain
    assert {k: retained.fields()[k] for k in ("type", "stream", "language")} == {
        "type": "language",
        "stream": "talk-auto",
        "language": "fr",
    }
    assert not [m for m in messages if isinstance(m, ErrorMsg)]
    announced = [m for m in messages if isinstance(m, LanguageMsg)]
    assert [(m.stream, m.language) for m in announced] == [("talk-auto", "fr")]
    assert 0.5 <= announced[0].probability <= 1
    first_caption = next(i for i, m in enumerate(messages) if isinstance(m, DraftMsg | FinalMsg))
    assert messages.index(announced[0]) < first_caption
    captions = track(messages, "caption")[1]
    english = check_one_final_per_window(messages, "en", len(captions))
    said = " ".join(f.text for f in english).lower()
    assert "hello" in said or "world" in said, said  # "Bonjour le monde."
    assert "monde" in " ".join(f.text for f in captions).lower()  # captioned in French


async def test_auto_refuses_text_and_en_is_refused_for_english(asr_server: LivecanvasServer) -> None:
    url = f"ws://127.0.0.1:{asr_server.port}"
    health = await asyncio.to_thread(healthz, asr_server.port)
    assert health == {
        "status": "ok",
        "pairs": [["en", "pt-BR"], ["pt-BR", "en"]],
        "from_speech": [["en", "whisper"], ["pt-BR", "en"]],
    }
    async with connect(url, stream="typed", tracks=("caption",), source_lang="auto") as session:
        await session.send_text("Hola a todos.")
        await session.end()
        messages = [m async for m in session]
    errors = [m for m in messages if isinstance(m, ErrorMsg)]
    assert [(e.code, e.ref) for e in errors] == [(ErrorCode.UNSUPPORTED, "text")]
    assert "identified from speech" in errors[0].message
    assert not [m for m in messages if isinstance(m, FinalMsg)]  # nothing was taken
    with pytest.raises(ProtocolError) as refused:
        async with connect(url, stream="english", tracks=("caption", "en"), source_lang="en"):
            pass
    assert refused.value.code == ErrorCode.UNSUPPORTED
    assert "into en (whisper), and through en into pt-BR" in refused.value.message
