"""Plain value types shared by every part of the engine: windows, canvas requests, drafts and finals.

All are frozen dataclasses; times are integer milliseconds on the stream's own clock. Nothing here
imports torch, so the network layer can use these types without loading the model stack.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.prompts import ContextEntry

CAPTION_TRACK = "caption"
"""The track that carries the source language itself (no translation)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of source text as a publisher sent it."""

    text: str
    t_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """A unit of source text that becomes one canvas per target track.

    ``index`` counts windows of one stream from 0 without gaps; ``t0_ms``/``t1_ms`` span the segments
    the window was cut from.
    """

    index: int
    source: str
    t0_ms: int
    t1_ms: int


@dataclass(frozen=True, slots=True)
class CanvasKey:
    """Names one canvas: which stream, which output track, which window."""

    stream: str
    track: str
    window: int

    def __str__(self) -> str:
        return f"{self.stream}/{self.track}/{self.window}"


@dataclass(frozen=True, slots=True)
class DiffusionParams:
    """The model's own decoding rules for one canvas (same meaning as DiffusionGemma's generation config).

    ``max_denoising_steps`` bounds the steps per canvas block; the temperature falls linearly from
    ``t_max`` at the first step to ``t_min`` at the last; ``entropy_bound`` drives acceptance; a block
    stops early once its argmax canvas has been stable for ``stability_threshold`` steps and the mean
    token entropy is below ``confidence_threshold``.

    ``fill_steps`` and ``refine_share`` shape the canvas translator's re-masking schedule (the
    DiffusionGemma backend does not read them): the canvas is filled by step ``fill_steps`` (None: by
    the last step, Mask-Predict's linear schedule), then later steps re-mask at most ``refine_share``
    of it, falling linearly to none at the last step. ``verify`` (canvas translator only): once the
    canvas is filled, the teacher it came from verifies it instead (speculative decoding,
    :mod:`engine.diffusion.verifier`); the final is then the teacher's greedy translation, provided the
    step budget lasts (each verification round settles at least one slot).
    """

    max_denoising_steps: int = 48
    t_min: float = 0.4
    t_max: float = 0.8
    entropy_bound: float = 0.1
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    fill_steps: int | None = None
    refine_share: float = 1.0
    verify: bool = False

    def __post_init__(self) -> None:
        if self.fill_steps is not None and self.fill_steps <= 0:
            raise ValueError(f"fill_steps must be positive, got {self.fill_steps}")
        if not 0 <= self.refine_share <= 1:
            raise ValueError(f"refine_share must be in [0, 1], got {self.refine_share}")
        if self.max_denoising_steps <= 0:
            raise ValueError(f"max_denoising_steps must be positive, got {self.max_denoising_steps}")
        if not 0 <= self.t_min < self.t_max:
            raise ValueError(f"need 0 <= t_min < t_max, got t_min={self.t_min} t_max={self.t_max}")
        if self.entropy_bound <= 0:
            raise ValueError(f"entropy_bound must be > 0, got {self.entropy_bound}")
        if self.stability_threshold < 0:
            raise ValueError(f"stability_threshold must be >= 0, got {self.stability_threshold}")
        if self.confidence_threshold <= 0:
            raise ValueError(f"confidence_threshold must be > 0, got {self.confidence_threshold}")


@dataclass(frozen=True, slots=True)
class EarlyExitParams:
    """When a canvas shows its first draft: after ``draft_step`` steps, or earlier once the mean token
    entropy falls below ``draft_confidence``. ``redraft_every`` > 0 sends a revised draft every that many
    steps afterwards when the text changed (0: one draft per block)."""

    draft_step: int = 2
    draft_confidence: float = 0.5
    redraft_every: int = 0

    def __post_init__(self) -> None:
        if self.draft_step <= 0:
            raise ValueError(f"draft_step must be positive, got {self.draft_step}")
        if self.draft_confidence < 0:
            raise ValueError(f"draft_confidence must be >= 0, got {self.draft_confidence}")
        if self.redraft_every < 0:
            raise ValueError(f"redraft_every must be >= 0, got {self.redraft_every}")


@dataclass(frozen=True, slots=True)
class CanvasRequest:
    """Everything the engine needs to fill one window for one track.

    ``prompt_ids`` is the fully rendered prompt (template, context and source). ``max_new_tokens`` may
    span several canvas blocks; generation ends at the first end-of-sequence token or at that budget.
    """

    key: CanvasKey
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    seed: int
    diffusion: DiffusionParams = field(default_factory=DiffusionParams)
    early_exit: EarlyExitParams = field(default_factory=EarlyExitParams)
    submitted_ns: int = 0

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("prompt_ids must not be empty")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")


@dataclass(frozen=True, slots=True)
class WindowJob:
    """Fill one window of one stream for one target track."""

    key: CanvasKey
    source: str
    context: tuple[ContextEntry, ...]
    source_lang: str
    target_lang: str
    submitted_ns: int
    diffusion: DiffusionParams | None = None  # None: the checkpoint's defaults
    early_exit: EarlyExitParams | None = None
    seed_key: CanvasKey | None = None  # None: ``key``; set where a canvas runs under another key

    def seed(self, base: int) -> int:
        """The canvas's sampling seed: stable per window key (``seed_key`` when set), so one window
        gets the same translation wherever it runs."""
        return (base + zlib.crc32(str(self.seed_key or self.key).encode())) & 0x7FFF_FFFF


@dataclass(frozen=True, slots=True)
class Draft:
    """A provisional result for a canvas; a later draft or the final replaces it."""

    key: CanvasKey
    rev: int
    text: str
    steps: int


@dataclass(frozen=True, slots=True)
class Final:
    """The settled result for a canvas, sent exactly once. ``error`` is set (and ``text`` empty) when
    the engine could not produce it; the stream goes on."""

    key: CanvasKey
    rev: int
    text: str
    steps: int
    tokens: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word with its time span in the stream's audio (ms from the stream's first sample).

    ``text`` is the word as the recogniser wrote it, punctuation attached, no surrounding spaces.
    """

    text: str
    t0_ms: int
    t1_ms: int
    probability: float = 1.0
