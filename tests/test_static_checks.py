"""The code standards as tests: ruff (lint and format) over the tree, mypy --strict on livecanvas/, stream/
and engine/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_lint_is_clean() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_command_line_stream_and_engine() -> None:
    result = run("mypy")  # packages and strictness come from pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_says_what_it_owns() -> None:
    missing = []
    for path in sorted(
        [
            *ROOT.glob("livecanvas/*.py"),
            *ROOT.glob("engine/**/*.py"),
            *ROOT.glob("stream/*.py"),
            *ROOT.glob("clients/**/*.py"),
        ]
    ):
        text = path.read_text()
        if path.name == "__init__.py" and not text.strip():
            continue
        if not text.lstrip().startswith('"""'):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"modules without a docstring: {missing}"


def test_no_module_is_over_500_lines() -> None:
    long = [
        f"{p.relative_to(ROOT)} ({n})"
        for p in ROOT.glob("*/**/*.py")
        if ".venv" not in p.parts and (n := len(p.read_text().splitlines())) > 500
    ]
    assert not long, long
