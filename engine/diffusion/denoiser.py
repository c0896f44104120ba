"""The ``Denoiser`` protocol: what the scheduler needs from any block-diffusion backend.

A backend holds the tensor state of every live sequence (prompt cache, current canvas, self-conditioning
signal, stopping history, random generator) and advances any subset of them by one denoising step in a
single batched forward. It reports what the step produced (:class:`StepResult`) and decides nothing
else: it knows nothing about sessions, drafts or finals, never holds a result back and never keeps a
canvas open for the scheduler's sake. The scheduler alone decides which sequences step, what goes out
as a draft, when a block is done and when a sequence is final.

Threading: a backend is used by exactly one thread (the engine worker); it is not thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.types import CanvasRequest


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one denoising step produced for one sequence.

    ``tokens`` is the canvas as it stands after this step (DiffusionGemma: its argmax canvas, what
    ``generate()`` streams as a draft and keeps as the block's output). ``settled`` counts its leading
    positions the backend will never change again: all of them once the canvas is done (every slot
    filled with nothing left to refine, the model's own stopping rule fired, or the teacher accepted
    the text up to its end), the teacher's accepted prefix while it verifies, else 0.
    ``mean_entropy`` (nats) is the mean token entropy of the step's distributions, which the
    early-exit policy reads.
    """

    tokens: tuple[int, ...]
    settled: int
    mean_entropy: float

    @property
    def done(self) -> bool:
        """Every position is settled: stepping this canvas again would change nothing."""
        return self.settled >= len(self.tokens)


class Denoiser(Protocol):
    """One batched denoising step over many canvases; see the module docstring."""

    @property
    def canvas_length(self) -> int:
        """Tokens per canvas block."""
        ...

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Token ids that end a sequence."""
        ...

    @property
    def max_context_tokens(self) -> int:
        """Longest prompt plus generated tokens a sequence may reach."""
        ...

    def start(self, seq_id: int, request: CanvasRequest) -> None:
        """Encode the request's prompt once and set up its first canvas block."""
        ...

    def revise(self, seq_id: int, request: CanvasRequest) -> None:
        """Give a live sequence its window's newer request (a longer or corrected source): read the new
        prompt and set up its canvas again from its first block, keeping of the current canvas what
        the backend can (a backend that keeps nothing starts it afresh)."""
        ...

    def next_block(self, seq_id: int, block: Sequence[int]) -> None:
        """Append a finished block to the sequence's context and set up a fresh canvas after it."""
        ...

    def step(self, seq_ids: Sequence[int], steps_remaining: Sequence[int]) -> list[StepResult]:
        """Advance each listed sequence by one denoising step in one forward.

        ``steps_remaining[i]`` counts the steps left in the current block of ``seq_ids[i]`` including
        this one (N..1, as in the temperature schedule).
        """
        ...

    def release(self, seq_id: int) -> None:
        """Forget a sequence and free its state."""
        ...

    def decode(self, tokens: Sequence[int]) -> str:
        """Token ids to text, special tokens removed."""
        ...
