"""The engine's exception tree.

EngineError            anything the engine refuses or fails to do
├── ModelResolutionError   a model spec that cannot be resolved to a checkpoint on disk
└── CanvasError            one canvas failed; its window gets an error final, the stream goes on
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class ModelResolutionError(EngineError):
    """A ``--model`` spec names nothing usable offline (missing directory, hub id not in the local cache)."""


class CanvasError(EngineError):
    """Filling one canvas failed."""
