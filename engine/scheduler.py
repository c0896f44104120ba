"""Continuous batching of canvases, sans I/O: which canvases step together, and what each step means.

The contract follows vLLM's scheduler: ``add(request)`` queues a canvas; ``schedule()`` returns the
next ``Batch`` (sequences to start, blocks to append, sequences to release, and the sequences that one
forward advances by one denoising step); ``update(batch, results)`` folds the step's results back in and
returns the ``Draft``/``Final`` events they produce. New canvases join at step boundaries, finished ones
leave at step boundaries, and every canvas keeps its own step count, so one forward can hold canvases of
many sessions at different points of their schedules.

The scheduler alone decides what a step means; a backend only reports what the step produced (its
canvas and how much of it is settled: :class:`engine.diffusion.denoiser.StepResult`). Per canvas: a
block ends when the backend reports it done or its step budget is spent; the window ends at the first
end-of-sequence token or when ``max_new_tokens`` is reached, otherwise the next block starts. Drafts
follow the early-exit policy, and every window shows a draft before its final: a window that ends
before it showed one sends its final text as a draft in that round and its final in the next one
(``Batch.finish``), without stepping again. The final is emitted exactly once, unless the canvas is
aborted first (``abort``: nobody is left to read it), which emits nothing.

Windows still open (:attr:`engine.types.CanvasRequest.provisional`) are translated while their source
grows, and a canvas is edited, not restarted, when its source changes. ``add`` with the key of a
canvas already here is newer news about that window: a waiting canvas takes the new request; a live
one is *revised* (``Batch.revise``: the backend re-reads the source and keeps what of its canvas still
holds) and steps again from its block's first step, keeping its draft numbering. A provisional
canvas sends no early-exit drafts: it sends one draft each time it is done (its text for that
source) and then stays *parked*, taking no place in the batch and stepping no more, until the next
source for its window arrives or it is aborted. The window's final request (not provisional)
revises it one last time; when its source is the one the parked canvas already finished, its final
is that text, sent in the next round without stepping. A revised canvas sends no early-exit drafts
either (its window already shows the drafts of its provisional sources). A provisional request never
replaces a final one.

No threads, clocks or tensors here; :func:`engine.batch_round.run_round` carries the batches out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from engine.diffusion.denoiser import StepResult
from engine.diffusion.early_exit import draft_due
from engine.diffusion.rules import truncate_at_eos
from engine.types import CanvasKey, CanvasRequest, Draft, Final


class CanvasStatus(IntEnum):
    WAITING = 0  # queued, not yet started on the denoiser
    RUNNING = 1  # stepping
    FINISHED = 2  # final emitted; its sequence is released at the next schedule()
    FINAL_DUE = 3  # done, its text shown as a draft; its final goes out in the next round
    PARKED = 4  # provisional and done: kept, not stepped, until its window's next request


@dataclass(frozen=True, slots=True)
class Batch:
    """One scheduling decision; run it in field order: release, start, revise, extend, then step;
    ``update`` then emits the finals of ``finish`` (canvases done in an earlier round, not stepped
    again). ``revise`` gives live canvases a newer request for their window (the backend keeps their
    state and re-reads the source)."""

    release: tuple[int, ...] = ()
    start: tuple[tuple[int, CanvasRequest], ...] = ()
    revise: tuple[tuple[int, CanvasRequest], ...] = ()
    extend: tuple[tuple[int, tuple[int, ...]], ...] = ()
    step: tuple[int, ...] = ()
    steps_remaining: tuple[int, ...] = ()
    finish: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.release or self.start or self.revise or self.extend or self.step or self.finish)

    def without(self, seq_ids: set[int]) -> Batch:
        """The same batch with some sequences no longer stepped (they failed to start or extend)."""
        if not seq_ids:
            return self
        kept = [(i, n) for i, n in zip(self.step, self.steps_remaining, strict=True) if i not in seq_ids]
        return Batch(
            release=self.release,
            start=self.start,
            revise=self.revise,
            extend=self.extend,
            step=tuple(i for i, _ in kept),
            steps_remaining=tuple(n for _, n in kept),
            finish=self.finish,
        )


@dataclass(eq=False)
class _Canvas:
    seq_id: int
    request: CanvasRequest
    status: CanvasStatus = CanvasStatus.WAITING
    block_step: int = 0  # steps done in the current block
    total_steps: int = 0
    tokens: list[int] = field(default_factory=list)  # finished blocks of this window
    pending_block: tuple[int, ...] | None = None  # finished block to append before the next step
    draft_rev: int = 0
    last_draft_step: int | None = None
    last_draft_tokens: tuple[int, ...] = ()
    final_tokens: tuple[int, ...] = ()  # FINAL_DUE: the final's tokens; PARKED: its source's text
    revising: bool = False  # its request changed while live: the next batch revises it
    revised: bool = False  # it was revised at least once: no early-exit drafts


class Scheduler:
    """See the module docstring. ``decode`` turns token ids into text (special tokens removed)."""

    def __init__(
        self,
        *,
        canvas_length: int,
        eos_token_ids: frozenset[int],
        decode: Callable[[Sequence[int]], str],
        max_batch: int = 32,
    ) -> None:
        if max_batch <= 0:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        self.canvas_length = canvas_length
        self.eos_token_ids = eos_token_ids
        self.decode = decode
        self.max_batch = max_batch
        self._next_seq_id = 0
        self._waiting: deque[_Canvas] = deque()
        self._running: dict[int, _Canvas] = {}
        self._to_release: list[int] = []

    # -- queries -----------------------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Canvases that take a place in the batch (a canvas whose final is due takes none)."""
        return sum(c.status is CanvasStatus.RUNNING for c in self._running.values())

    @property
    def parked(self) -> int:
        """Provisional canvases done with their source, waiting for their window's next request."""
        return sum(c.status is CanvasStatus.PARKED for c in self._running.values())

    @property
    def idle(self) -> bool:
        """Nothing to run: no canvas waiting, stepping or due, none to release (parked ones may stay)."""
        busy = any(c.status is not CanvasStatus.PARKED for c in self._running.values())
        return not (self._waiting or busy or self._to_release)

    def status(self, seq_id: int) -> CanvasStatus:
        if seq_id in self._running:
            return self._running[seq_id].status
        if any(c.seq_id == seq_id for c in self._waiting):
            return CanvasStatus.WAITING
        return CanvasStatus.FINISHED

    def steps_done(self, seq_id: int) -> int:
        """Denoising steps a running canvas has taken so far, over all its blocks."""
        return self._running[seq_id].total_steps

    # -- the contract ------------------------------------------------------------------------------
    def add(self, request: CanvasRequest) -> int:
        """Queue a canvas, or hand a canvas of the same key its window's newer request (see the module
        docstring); returns its sequence id."""
        known = self._find(request.key)
        if known is not None:
            self._renew(known, request)
            return known.seq_id
        seq_id = self._next_seq_id
        self._next_seq_id += 1
        self._waiting.append(_Canvas(seq_id=seq_id, request=request))
        return seq_id

    def schedule(self) -> Batch:
        """Admit waiting canvases up to ``max_batch`` stepping ones and step every running one (a
        canvas whose final is due takes no place in the batch)."""
        release, self._to_release = tuple(self._to_release), []
        start: list[tuple[int, CanvasRequest]] = []
        stepping = self.running
        while self._waiting and stepping < self.max_batch:
            stepping += 1
            canvas = self._waiting.popleft()
            canvas.status = CanvasStatus.RUNNING
            self._running[canvas.seq_id] = canvas
            start.append((canvas.seq_id, canvas.request))
        revise: list[tuple[int, CanvasRequest]] = []
        for canvas in self._running.values():
            if canvas.revising:
                revise.append((canvas.seq_id, canvas.request))
                canvas.revising = False
        extend: list[tuple[int, tuple[int, ...]]] = []
        for canvas in self._running.values():
            if canvas.pending_block is not None:
                extend.append((canvas.seq_id, canvas.pending_block))
                canvas.pending_block = None
        step = tuple(i for i, c in self._running.items() if c.status is CanvasStatus.RUNNING)
        finish = tuple(i for i, c in self._running.items() if c.status is CanvasStatus.FINAL_DUE)
        remaining = tuple(
            self._running[i].request.diffusion.max_denoising_steps - self._running[i].block_step for i in step
        )
        return Batch(
            release=release,
            start=tuple(start),
            revise=tuple(revise),
            extend=tuple(extend),
            step=step,
            steps_remaining=remaining,
            finish=finish,
        )

    def update(self, batch: Batch, results: Sequence[StepResult]) -> list[Draft | Final]:
        """Fold one step's results in; returns the drafts and finals it produced, in batch order (the
        finals of ``batch.finish`` first)."""
        if len(results) != len(batch.step):
            raise ValueError(f"{len(batch.step)} canvases stepped but {len(results)} results")
        events: list[Draft | Final] = []
        for seq_id in batch.finish:
            canvas = self._running.get(seq_id)
            if canvas is not None and canvas.status is CanvasStatus.FINAL_DUE:
                events.append(self._finish(canvas, tokens=canvas.final_tokens, error=None))
        for seq_id, result in zip(batch.step, results, strict=True):
            canvas = self._running[seq_id]
            canvas.block_step += 1
            canvas.total_steps += 1
            block_done = result.done or canvas.block_step >= canvas.request.diffusion.max_denoising_steps
            if block_done:
                events.extend(self._finish_block(canvas, result.tokens))
            else:
                draft = self._maybe_draft(canvas, result)
                if draft is not None:
                    events.append(draft)
        return events

    def abort(self, keys: Collection[CanvasKey]) -> list[CanvasKey]:
        """Drop the canvases of ``keys`` (no one will read them): waiting ones leave the queue, running
        ones leave the batch and are released at the next ``schedule()``. No final is emitted for them.
        Returns the keys found (a key already finished, or never added, is not)."""
        wanted = set(keys)
        dropped = [c for c in self._waiting if c.request.key in wanted]
        self._waiting = deque(c for c in self._waiting if c.request.key not in wanted)
        for canvas in [c for c in self._running.values() if c.request.key in wanted]:
            canvas.status = CanvasStatus.FINISHED
            del self._running[canvas.seq_id]
            self._to_release.append(canvas.seq_id)
            dropped.append(canvas)
        return [c.request.key for c in dropped]

    def fail(self, seq_ids: Sequence[int], reason: str) -> list[Final]:
        """End canvases that the denoiser could not run: each gets an error final."""
        finals: list[Final] = []
        for seq_id in seq_ids:
            canvas = self._running.get(seq_id)
            if canvas is None or canvas.status is CanvasStatus.FINISHED:
                continue
            finals.append(self._finish(canvas, tokens=[], error=reason))
        return finals

    # -- internals ---------------------------------------------------------------------------------
    def _find(self, key: CanvasKey) -> _Canvas | None:
        for canvas in self._waiting:
            if canvas.request.key == key:
                return canvas
        for canvas in self._running.values():
            if canvas.request.key == key:
                return canvas
        return None

    def _renew(self, canvas: _Canvas, request: CanvasRequest) -> None:
        """A newer request for a canvas's window (module docstring)."""
        if request.provisional and not canvas.request.provisional:
            return  # the window's final request is here already: a provisional source adds nothing
        old, canvas.request = canvas.request, request
        if canvas.status is CanvasStatus.WAITING:
            return  # not started: it simply starts with the newer request
        canvas.revised = True
        same_source = request.prompt_ids == old.prompt_ids and request.max_new_tokens == old.max_new_tokens
        if same_source and canvas.status is CanvasStatus.RUNNING:
            return  # still stepping on this very source: it goes on, now under the newer request
        if same_source and canvas.status is CanvasStatus.PARKED:
            if request.provisional:
                return
            if canvas.draft_rev > 0:  # the final is the text the parked canvas finished and showed
                canvas.status = CanvasStatus.FINAL_DUE
                return
        canvas.status = CanvasStatus.RUNNING
        canvas.revising = True
        canvas.block_step = 0
        canvas.tokens = []
        canvas.pending_block = None
        canvas.last_draft_step = None

    def _maybe_draft(self, canvas: _Canvas, result: StepResult) -> Draft | None:
        if canvas.request.provisional or canvas.revised:
            return None  # a provisional canvas drafts when done; a revised one showed those drafts
        window_tokens = self._window_tokens(canvas, result.tokens)
        due = draft_due(
            canvas.request.early_exit,
            block_step=canvas.block_step,
            mean_entropy=result.mean_entropy,
            last_draft_step=canvas.last_draft_step,
            changed=window_tokens != canvas.last_draft_tokens,
        )
        return self._draft(canvas, window_tokens) if due else None

    def _draft(self, canvas: _Canvas, window_tokens: tuple[int, ...]) -> Draft:
        canvas.last_draft_step = canvas.block_step
        canvas.last_draft_tokens = window_tokens
        draft = Draft(
            key=canvas.request.key,
            rev=canvas.draft_rev,
            text=self.decode(window_tokens),
            steps=canvas.total_steps,
        )
        canvas.draft_rev += 1
        return draft

    def _finish_block(self, canvas: _Canvas, block: tuple[int, ...]) -> list[Draft | Final]:
        canvas.tokens.extend(block)
        text_tokens, ended = truncate_at_eos(canvas.tokens, self.eos_token_ids)
        if ended or len(canvas.tokens) >= canvas.request.max_new_tokens:
            final = tuple(text_tokens[: canvas.request.max_new_tokens])
            if canvas.request.provisional:  # its source's text: a draft, then it waits for news
                canvas.status, canvas.final_tokens = CanvasStatus.PARKED, final
                return [self._draft(canvas, final)] if final != canvas.last_draft_tokens else []
            if canvas.draft_rev > 0:
                return [self._finish(canvas, tokens=final, error=None)]
            # no draft shown yet: the final's text goes out as the draft now, the final next round
            canvas.status, canvas.final_tokens = CanvasStatus.FINAL_DUE, final
            return [self._draft(canvas, final)]
        canvas.pending_block = block
        canvas.block_step = 0
        canvas.last_draft_step = None
        return []

    def _finish(self, canvas: _Canvas, *, tokens: Sequence[int], error: str | None) -> Final:
        canvas.status = CanvasStatus.FINISHED
        del self._running[canvas.seq_id]
        self._to_release.append(canvas.seq_id)
        return Final(
            key=canvas.request.key,
            rev=canvas.draft_rev,
            text=self.decode(tokens) if error is None else "",
            steps=canvas.total_steps,
            tokens=len(tokens),
            error=error,
        )

    def _window_tokens(self, canvas: _Canvas, argmax: tuple[int, ...]) -> tuple[int, ...]:
        tokens, _ = truncate_at_eos([*canvas.tokens, *argmax], self.eos_token_ids)
        return tuple(tokens[: canvas.request.max_new_tokens])
