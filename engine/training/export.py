"""Exporting a trained translator: ``save_pretrained`` layout, livecanvas card, checksums.

This module owns the shipped checkpoint directory: weights (safetensors), config, generation config,
tokenizer, ``livecanvas.json`` (how the service should use it) and ``SHA256SUMS``, which
``engine.models`` verifies before loading so a corrupted or partial copy is refused, not served.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

CHECKSUM_FILE = "SHA256SUMS"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(directory: Path) -> None:
    lines = [
        f"{sha256_of(path)}  {path.name}"
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != CHECKSUM_FILE
    ]
    (directory / CHECKSUM_FILE).write_text("\n".join(lines) + "\n")


def verify_checksums(directory: Path) -> list[str]:
    """Problems found (empty when every listed file is present with its recorded hash)."""
    listing = directory / CHECKSUM_FILE
    problems = []
    for line in listing.read_text().splitlines():
        expected, _, name = line.partition("  ")
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_of(path) != expected:
            problems.append(f"{name} does not match its sha256")
    return problems


def export_checkpoint(
    model: Any,
    tokenizer: Any,
    card: dict[str, Any],
    target: Path,
    *,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write the checkpoint to ``target`` atomically (staged next to it, then renamed over it).

    ``extra_files`` (name -> text) are written alongside: the model card and its evaluation figures."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "livecanvas.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
        write_checksums(staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the checkpoint is meant to be shared
        for path in staging.iterdir():
            path.chmod(0o644)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
