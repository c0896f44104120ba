"""Benchmarks (see bench/README.md). Importing ``engine`` first sets its OpenMP wait policy before
torch loads."""

import engine  # noqa: F401
