"""Plain value types shared by every part of the engine: windows, canvas requests, drafts and finals.

All are frozen dataclasses; times are integer milliseconds on the stream's own clock. Nothing here
imports torch, so the network layer can use these types without loading the model stack.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from engine.prompts import ContextEntry

CAPTION_TRACK = "caption"
"""The track that carries the source language itself (no translation)."""

Sampler = Literal["exact", "fast"]
"""DiffusionGemma's sampler (:class:`engine.diffusion.gemma.DiffusionGemmaDenoiser`): ``exact`` draws
as ``generate()`` does, bit for bit; ``fast`` samples the accepted positions only."""
SAMPLERS: tuple[Sampler, ...] = get_args(Sampler)


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
    """What every backend and the scheduler read for one canvas: ``max_denoising_steps`` bounds the
    steps per canvas block (the scheduler ends a block there), and ``entropy_bound`` is the
    entropy-bounded acceptance rule's bound (:func:`engine.diffusion.rules.acceptance_mask`): how many
    positions a step accepts. A backend's own settings live with it and its card
    (:class:`engine.diffusion.config.GemmaSettings`, :class:`engine.diffusion.mask_schedule.CanvasSettings`).
    """

    max_denoising_steps: int = 48
    entropy_bound: float = 0.1

    def __post_init__(self) -> None:
        if self.max_denoising_steps <= 0:
            raise ValueError(f"max_denoising_steps must be positive, got {self.max_denoising_steps}")
        if self.entropy_bound <= 0:
            raise ValueError(f"entropy_bound must be > 0, got {self.entropy_bound}")


@dataclass(frozen=True, slots=True)
class EarlyExitParams:
    """When the scheduler sends a canvas's first draft: after ``draft_step`` steps, or earlier once the
    mean token entropy falls below ``draft_confidence`` (None: never earlier). ``redraft_every`` > 0
    sends a revised draft every that many steps afterwards when the text changed (0: one draft per
    block)."""

    draft_step: int = 2
    draft_confidence: float | None = None
    redraft_every: int = 0

    def __post_init__(self) -> None:
        if self.draft_step <= 0:
            raise ValueError(f"draft_step must be positive, got {self.draft_step}")
        if self.draft_confidence is not None and self.draft_confidence <= 0:
            raise ValueError(f"draft_confidence must be > 0 (None: off), got {self.draft_confidence}")
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
    provisional: bool = False  # see WindowJob.provisional

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("prompt_ids must not be empty")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")


@dataclass(frozen=True, slots=True)
class WindowJob:
    """Fill one window of one stream for one target track.

    A ``provisional`` job translates the text of a window that is still open (a caption draft, a
    publisher's provisional line): it produces drafts only, never a final, and a later job for the
    same key (a newer provisional source, or the window's final job once it closes) edits its canvas
    in place instead of starting another (:meth:`engine.scheduler.Scheduler.add`)."""

    key: CanvasKey
    source: str
    context: tuple[ContextEntry, ...]
    source_lang: str
    target_lang: str
    submitted_ns: int
    diffusion: DiffusionParams | None = None  # None: the checkpoint's defaults
    early_exit: EarlyExitParams | None = None
    seed_key: CanvasKey | None = None  # None: ``key``; set where a canvas runs under another key
    provisional: bool = False

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

    @classmethod
    def failed(cls, key: CanvasKey, error: str) -> Final:
        """The final of a canvas the engine could not make: ``error`` says why."""
        return cls(key=key, rev=0, text="", steps=0, tokens=0, error=error)


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word with its time span in the stream's audio (ms from the stream's first sample).

    ``text`` is the word as the recogniser wrote it, punctuation attached, no surrounding spaces.
    """

    text: str
    t0_ms: int
    t1_ms: int
    probability: float = 1.0
