"""Shipped checkpoint directories: written atomically, with ``SHA256SUMS``.

This module owns the checksum file, which ``engine.models`` verifies before loading so that a
corrupted or partial copy is refused, not served, and the staged write of a checkpoint directory.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

CHECKSUM_FILE = "SHA256SUMS"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(directory: Path) -> None:
    """List every file under ``directory`` (subdirectories too, by relative path) with its sha256."""
    lines = [
        f"{sha256_of(path)}  {path.relative_to(directory).as_posix()}"
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path != directory / CHECKSUM_FILE
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


def write_directory(target: Path, write: Callable[[Path], None]) -> Path:
    """Make ``target`` atomically: ``write`` fills a staging directory next to it, checksums are
    added, then it is renamed over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(staging)
        write_checksums(staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the checkpoint is meant to be shared
        for path in staging.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
