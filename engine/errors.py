"""The engine's exception tree.

EngineError            anything the engine refuses or fails to do
└── ModelResolutionError   a model spec (or a model card) that cannot be resolved to a servable checkpoint

A window the engine cannot fill gets an error final (:func:`engine.batch_round.run_round`); the
stream goes on.
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class ModelResolutionError(EngineError):
    """A ``--model`` spec names nothing usable offline (missing directory, hub id not in the local cache)."""
