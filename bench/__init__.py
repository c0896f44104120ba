"""Benchmarks (see bench/README.md). Importing ``engine`` first sets its OpenMP wait policy before
torch loads; the repository root goes on ``sys.path`` for ``tests.speech`` (speech fixtures and WER:
``tests/`` is not installed), whichever benchmark runs."""

import sys
from pathlib import Path

import engine  # noqa: F401

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
