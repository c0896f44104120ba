"""A user's Marian translator served beside the embedded one (``serve --translator DIR``), over real
WebSockets on loopback: its pair's windows get drafts, then exactly one final each, the final being the
checkpoint's own greedy translation; the embedded pairs still work; the server offers the union of
pairs, in ``/healthz`` and in the refusal of a track no model serves."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch

from clients.python.client import connect
from engine.errors import ModelResolutionError
from stream.config import ServerConfig
from stream.errors import ErrorCode, ProtocolError
from stream.server import LivecanvasServer
from stream.wire.messages import DraftMsg, FinalMsg
from tests.integration.conftest import url_of
from tests.integration.serve_process import running_serve

SENTENCES = ("The house is red.", "Thank you for coming here now!", "She reads a book tomorrow?")
PAIRS = [["es", "en"], ["en", "pt-BR"], ["pt-BR", "en"]]


@pytest.fixture
async def server(tiny_marian: Path, livecanvas_cache: Path) -> AsyncIterator[LivecanvasServer]:
    config = ServerConfig(
        host="127.0.0.1", port=0, idle_ms=300, drain_timeout_s=60, asr=False, translators=(str(tiny_marian),)
    )
    async with LivecanvasServer(config) as running:
        yield running


def healthz(port: int) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
        return json.loads(reply.read())


def greedy(checkpoint: Path, source: str) -> str:
    from transformers import AutoTokenizer, MarianMTModel

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = MarianMTModel.from_pretrained(checkpoint).eval()
    with torch.inference_mode():
        output = model.generate(**tokenizer(source, return_tensors="pt"), num_beams=1, do_sample=False)
    return str(tokenizer.decode(output[0], skip_special_tokens=True))


async def check_spanish_session(server: LivecanvasServer, checkpoint: Path) -> None:
    """Spanish sentences on an ``en`` track: a draft before each window's final, exactly one final per
    window, that final the checkpoint's own greedy translation; no engine error."""
    async with connect(
        url_of(server), stream="es-talk", tracks=("caption", "en"), source_lang="es"
    ) as session:
        for sentence in SENTENCES:
            await session.send_text(sentence)
        await session.end()
        received = [m async for m in session]
    finals = [m for m in received if isinstance(m, FinalMsg)]
    captions = {f.window: f.text for f in finals if f.track == "caption"}
    translated = [f for f in finals if f.track == "en"]
    assert sorted(f.window for f in translated) == sorted(captions) == [0, 1, 2]  # exactly once each
    for final in translated:
        assert final.error is None
        assert final.text == greedy(checkpoint, captions[final.window])
        first_final = received.index(final)
        drafts = [m for m in received[:first_final] if isinstance(m, DraftMsg) and m.track == "en"]
        assert any(d.window == final.window for d in drafts), "a draft before the final"
    assert server.worker.stats.errors == 0


async def test_a_users_marian_pair_gets_drafts_then_its_greedy_final_once_per_window(
    server: LivecanvasServer, tiny_marian: Path
) -> None:
    await check_spanish_session(server, tiny_marian)


async def test_the_embedded_pairs_are_still_served_beside_it(server: LivecanvasServer) -> None:
    async with connect(url_of(server), stream="en-talk", tracks=("caption", "pt")) as session:
        await session.send_text("Thank you all for being here.")
        await session.end()
        finals = {m.track: m for m in [m async for m in session] if isinstance(m, FinalMsg)}
    assert finals["pt"].error is None
    assert "obrigad" in finals["pt"].text.lower()


async def test_a_track_no_model_serves_is_refused_naming_every_pair(server: LivecanvasServer) -> None:
    with pytest.raises(ProtocolError) as refused:
        async with connect(url_of(server), stream="s", tracks=("caption", "pt"), source_lang="es"):
            pass
    assert refused.value.code == ErrorCode.UNSUPPORTED
    assert "es -> en, en -> pt-BR, pt-BR -> en only; no track pt for es sources" in refused.value.message


async def test_serve_takes_translator_flags_and_healthz_lists_the_union_of_pairs(
    tiny_marian: Path, livecanvas_cache: Path, tmp_path: Path
) -> None:
    async with running_serve(livecanvas_cache, tmp_path, "s3cret", "--translator", str(tiny_marian)) as (
        port,
        _,
    ):
        health = await asyncio.to_thread(healthz, port)
    assert health == {"status": "ok", "pairs": PAIRS}


async def test_a_translator_whose_pair_is_unknown_stops_the_server_at_start(
    tiny_marian: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "my-marian"
    shutil.copytree(tiny_marian, bare)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("source_lang"), config.pop("target_lang")
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    server = LivecanvasServer(ServerConfig(host="127.0.0.1", port=0, asr=False, translators=(str(bare),)))
    with pytest.raises(ModelResolutionError, match=r"give them: --translator .*my-marian:SRC:TGT"):
        await server.start()
    await asyncio.to_thread(server.worker.stop, drain=False, timeout=10)


def test_models_shows_a_translators_pair(tiny_marian: Path) -> None:
    from livecanvas.cli import offered_pairs, translator_entry

    entry = translator_entry(str(tiny_marian))
    assert (entry.verified, entry.detail) == (True, "user translator (es -> en), Marian, greedy")
    assert not translator_entry(f"{tiny_marian}-missing").verified
    assert offered_pairs([str(tiny_marian)]) == ["es -> en", "en -> pt-BR", "pt-BR -> en"]
