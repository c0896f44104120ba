"""``livecanvas train --teacher DIR`` on the tiny Marian (tests/tiny_marian.py), end to end: the dry
run distils, trains, evaluates and exports a drafter; a second run resumes its checkpoint; the export
is listed by ``livecanvas models`` and served by ``serve --translator`` over real WebSockets, drafts
first and then exactly one final per window, the final being the teacher's greedy translation; a
tampered export is refused at start; a run without sources in the teacher's language is refused,
saying what to give."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.errors import ModelResolutionError
from stream.config import ServerConfig
from stream.server import LivecanvasServer
from tests.integration.test_user_translator import check_spanish_session
from tests.tiny_marian import sentences

SENTENCES = ("The house is red.", "Thank you for coming here now!", "She reads a book tomorrow?")


@pytest.fixture(scope="module")
def drafter_run(tiny_marian: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """(work directory, export, the train command's arguments) after one dry run."""
    from livecanvas.cli import main

    root = tmp_path_factory.mktemp("teacher-run")
    sources = root / "es.txt"
    sources.write_text("\n".join(sentences(300, random.Random(5))) + "\n", encoding="utf-8")
    work, out = root / "work", root / "export"
    arguments = ["train", "--teacher", str(tiny_marian), "--sources", str(sources), "--dry-run"]
    arguments += ["--work-dir", str(work), "--out", str(out)]
    assert main(arguments) == 0
    return work, out, arguments


def test_the_dry_run_exports_a_drafter_with_its_teacher_card_and_checksums(
    drafter_run: tuple[Path, Path, list[str]],
) -> None:
    from engine.models import verified

    _, out, _ = drafter_run
    verified(out)
    listed = (out / "SHA256SUMS").read_text()
    assert "drafter.safetensors" in listed
    assert "teacher/model.safetensors" in listed
    card = json.loads((out / "livecanvas.json").read_text())
    assert card["languages"] == {"source": "es", "target": "en"}
    assert card["canvas"] == {"fill_steps": 4, "verify": True, "shortlist": False}
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["served"]["finals_identical_to_teacher"] == 1.0  # the teacher verifies every final
    assert summary["training"]["step"] == 6
    assert set(summary["draft_chrf_by_steps"]) == {"1", "2", "4"}
    readme = (out / "README.md").read_text()
    assert "opus-mt-es-en" in readme
    assert "teacher's own greedy translation" in readme


def test_models_lists_the_export_and_its_pair(drafter_run: tuple[Path, Path, list[str]]) -> None:
    from livecanvas.cli import offered_pairs, translator_entry

    _, out, _ = drafter_run
    entry = translator_entry(str(out))
    assert entry.verified
    assert entry.detail == "user translator (es -> en), Marian + canvas drafter, teacher-verified finals"
    assert offered_pairs([str(out)])[0] == "es -> en"


@pytest.fixture
async def server(
    drafter_run: tuple[Path, Path, list[str]], livecanvas_cache: Path
) -> AsyncIterator[LivecanvasServer]:
    _, out, _ = drafter_run
    config = ServerConfig(
        host="127.0.0.1", port=0, idle_ms=300, drain_timeout_s=60, asr=False, translators=(str(out),)
    )
    async with LivecanvasServer(config) as running:
        yield running


async def test_served_drafts_come_first_and_each_final_is_the_teachers_once(
    server: LivecanvasServer, tiny_marian: Path
) -> None:
    await check_spanish_session(server, tiny_marian)


async def test_a_tampered_export_is_refused_at_start(
    drafter_run: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    import shutil

    _, out, _ = drafter_run
    copy = tmp_path / "tampered"
    shutil.copytree(out, copy)
    weights = copy / "drafter.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    server = LivecanvasServer(ServerConfig(host="127.0.0.1", port=0, asr=False, translators=(str(copy),)))
    with pytest.raises(ModelResolutionError, match=r"drafter\.safetensors does not match its sha256"):
        await server.start()
    await asyncio.to_thread(server.worker.stop, drain=False, timeout=10)


def test_a_second_run_resumes_the_checkpoint_and_the_teachers_translations(
    drafter_run: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    from livecanvas.cli import main

    work, _, arguments = drafter_run
    (teacher_dir,) = work.glob("es-en-*-dry-run")  # the pair, the weights' digest, a dry run apart
    distilled = teacher_dir / "teacher.jsonl"
    before = distilled.read_text()
    again = tmp_path / "again"
    assert main([*arguments[:-1], str(again)]) == 0
    assert distilled.read_text() == before  # nothing translated twice
    assert json.loads((again / "evaluation.json").read_text())["training"]["step"] == 12  # 6 more


def test_train_refuses_what_it_cannot_do_saying_what_to_give(tiny_marian: Path, tmp_path: Path) -> None:
    from livecanvas.cli import main

    with pytest.raises(SystemExit, match=r"translates from 'es'.*--sources FILE"):
        main(["train", "--teacher", str(tiny_marian), "--dry-run", "--work-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="--sources goes with --teacher"):
        main(["train", "--sources", str(tmp_path / "x.txt"), "--dry-run", "--work-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="belong to the embedded translator's recipe"):
        main(["train", "--teacher", str(tiny_marian), "--direction", "en-pt", "--work-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="holds no checkpoint"):
        main(["train", "--teacher", str(tmp_path), "--dry-run", "--work-dir", str(tmp_path / "w")])
