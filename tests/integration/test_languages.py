"""A model card that names its target languages: matching tracks are served (``pt`` by ``pt-BR``), any
other translation track is refused at ``hello`` with a clear error instead of silent wrong output."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.python.client import connect
from stream.config import MqttConfig, ServerConfig
from stream.errors import ErrorCode, ProtocolError
from stream.server import LivecanvasServer
from stream.wire.messages import FinalMsg
from tests.integration.conftest import url_of


@pytest.fixture
async def pt_only_server(tiny_checkpoint: Path, tmp_path: Path) -> AsyncIterator[LivecanvasServer]:
    checkpoint = tmp_path / "pt-only"
    shutil.copytree(tiny_checkpoint, checkpoint)
    card = {"name": "pt-only", "prompt": "tagged", "languages": {"source": "en", "target": "pt-BR"}}
    (checkpoint / "livecanvas.json").write_text(json.dumps(card))
    config = ServerConfig(host="127.0.0.1", port=0, model=str(checkpoint), idle_ms=300, asr=False)
    async with LivecanvasServer(config) as running:
        yield running


async def test_a_track_outside_the_models_languages_is_refused_at_hello(
    pt_only_server: LivecanvasServer,
) -> None:
    with pytest.raises(ProtocolError) as refused:
        async with connect(url_of(pt_only_server), stream="s", tracks=("caption", "es")):
            pass
    assert refused.value.code == ErrorCode.UNSUPPORTED
    assert "pt-BR" in refused.value.message
    assert "es" in refused.value.message


async def test_a_base_language_track_is_served_by_the_models_regional_tag(
    pt_only_server: LivecanvasServer,
) -> None:
    async with connect(url_of(pt_only_server), stream="s", tracks=("caption", "pt")) as session:
        await session.send_text("Good morning.")
        await session.end()
        finals = [m async for m in session if isinstance(m, FinalMsg)]
    assert sorted(f.track for f in finals) == ["caption", "pt"]


async def test_mqtt_tracks_the_model_cannot_serve_stop_the_server_at_start(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "pt-only"
    shutil.copytree(tiny_checkpoint, checkpoint)
    card = {"name": "pt-only", "prompt": "tagged", "languages": {"source": "en", "target": "pt-BR"}}
    (checkpoint / "livecanvas.json").write_text(json.dumps(card))
    mqtt = MqttConfig(host="127.0.0.1", port=1, tracks=("pt", "es"))
    server = LivecanvasServer(
        ServerConfig(host="127.0.0.1", port=0, model=str(checkpoint), asr=False, mqtt=mqtt)
    )
    with pytest.raises(ValueError, match="MQTT tracks es cannot be served"):
        await server.start()
    assert not server.worker.alive


async def test_the_embedded_translator_serves_each_direction_from_its_source_language(
    server: LivecanvasServer,
) -> None:
    """The shipped v2 pair: a ``pt`` track for English sources, an ``en`` track for Portuguese ones."""
    url = url_of(server)
    async with connect(url, stream="pt-talk", tracks=("caption", "en"), source_lang="pt-BR") as session:
        await session.send_text("Obrigado a todos por estarem aqui.")
        await session.end()
        finals = {m.track: m for m in [m async for m in session] if isinstance(m, FinalMsg)}
    assert set(finals) == {"caption", "en"}
    assert finals["en"].text
    assert finals["en"].text != finals["caption"].text
    assert "thank" in finals["en"].text.lower()


@pytest.mark.parametrize(
    ("source_lang", "track"),
    [("en", "en"), ("pt", "pt"), ("de", "pt"), ("en", "es")],
)
async def test_a_pair_the_embedded_translator_cannot_serve_is_refused_at_hello(
    server: LivecanvasServer, source_lang: str, track: str
) -> None:
    with pytest.raises(ProtocolError) as refused:
        async with connect(url_of(server), stream="s", tracks=("caption", track), source_lang=source_lang):
            pass
    assert refused.value.code == ErrorCode.UNSUPPORTED
    assert "en -> pt-BR, pt-BR -> en" in refused.value.message
    assert f"no track {track} for {source_lang} sources" in refused.value.message
