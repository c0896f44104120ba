"""The canvas translator backend: ``Denoiser`` over :class:`engine.diffusion.canvas.CanvasTranslator`.

One backend serves several translation directions (one model each) in one joint id space: direction
``r``'s piece ``p`` is id ``r * V + p`` (``V`` pieces per student), so prompts, canvases and the
scheduler's token tuples say which model they belong to, and the scheduler needs no new field. A
step groups its canvases by direction and runs one decoder forward per direction.

A window goes through two phases, each with its own state: denoising (:class:`Denoising`), then, in a
direction whose teacher verifies, verification (:class:`engine.diffusion.verifier.Reading`).

* ``start``: the window's shortlist candidates and a canvas of ``[MASK]`` slots (length from the
  source) are set up; its first step encodes the source once, in one encoder forward with every other
  window starting in that round, and keeps its cross-attention keys and values;
* a denoising step (Mask-Predict, Ghazvininejad et al. 2019, arXiv:1904.09324, with an adaptive
  acceptance): the decoder reads the whole canvas; only masked slots get logits, over the window's
  shortlist alone (Bergamot's lexical shortlist); each takes its most likely piece, its probability
  and its entropy. Then at most ``remask_quota`` slots are masked again
  (:mod:`engine.diffusion.mask_schedule`), the least probable first, never one that the
  entropy-bounded rule (:func:`engine.diffusion.rules.acceptance_mask`) accepts, and before the fill
  step (:func:`engine.diffusion.mask_schedule.fill_step`) at least one;
* a canvas with no slot masked again is filled (at its fill step, or later while refining). Without
  a verifier it is done. With one, the teacher
  verifies it from that same step on: each step is then a round of the teacher's verifier
  (:mod:`engine.diffusion.verifier`), which settles at least one more slot, until the canvas is the
  teacher's greedy translation.

Each step reports what it produced (:class:`engine.diffusion.denoiser.StepResult`: the canvas and
how many of its slots are settled) and nothing more: when a draft or the final goes out is the
scheduler's decision alone.

Re-masking runs for all the windows of a step at once; the windows' stacked context and output
layers (gathered once from the embedding over their candidates) are kept while the same windows step
together.

*Revising* (``revise``: the window's source changed while it was live, a longer caption draft or
its final text): the window reads the new source (re-encoded with the next step's encoder forward,
its shortlist taken again) and keeps its canvas's text, all but its last :data:`REVISE_TAIL` pieces,
as given pieces at their slots; the slots after them, up to the new source's canvas length, are
masked. The drafter fills those in :data:`REVISE_FILL_STEPS` step(s), reading the kept pieces, and
the teacher (where it verifies) then reads the whole canvas from its first slot under the new
source: the kept pieces that still hold are accepted in its first rounds, the first that does not
is corrected there, so a revised window's verified text is the teacher's for the new source, as a
fresh window's is. With ``edit_in_place`` off a revised window starts from a blank canvas (the
benchmark's re-translation mode).

A denoised canvas's text drops a piece that repeats its left neighbour (the usual remedy for the
repeated tokens of parallel decoders; subword pieces seldom repeat in real text); a verified canvas's
text is the teacher's, repeats and all.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from engine.diffusion.canvas import MASK_ID, MAX_CANVAS, CanvasTranslator, canvas_length_for
from engine.diffusion.denoiser import StepResult
from engine.diffusion.marian_canvas import MarianCanvasDrafter, MarianVerifier
from engine.diffusion.mask_schedule import CanvasSettings, fill_step, remask_quota, without_repeats
from engine.diffusion.rules import acceptance_mask
from engine.diffusion.stacking import Batch, Context, row_of, stack, stack_batch
from engine.diffusion.verifier import FIRST_READ, Reading, TeacherVerifier
from engine.errors import EngineError
from engine.marian.binary import Shortlist
from engine.marian.teacher import EOS_ID, pad_batch
from engine.types import CanvasRequest

REVISE_TAIL = 2
"""A revised canvas masks again this many of its kept pieces at the end of its text: the translation
of a source's last words is the part a longer source most often changes."""
REVISE_FILL_STEPS = 1
"""A revised canvas is filled by this step after its revision (its kept pieces are given, so little
is left to fill; measured in bench/README.md, *Translating open windows*)."""
REVISED_FIRST_READ: int | None = None
"""The teacher's first round on a revised canvas reads up to its ``</s>``: the kept pieces mostly
hold, so a capped first read would only read them again in a second round (bench/README.md)."""


@dataclass
class Direction:
    """One translation direction: its model, tokenizer (``tokenizers.Tokenizer``, or one with its
    ``encode(...).ids`` and ``decode``), shortlist, how it fills a canvas, and the teacher's decoder
    when the teacher verifies its canvases. The model and verifier are the Bergamot-based ones
    (:mod:`engine.diffusion.canvas`, :mod:`engine.diffusion.verifier`) or those of a user's Hugging
    Face Marian checkpoint (:mod:`engine.diffusion.marian_canvas`)."""

    name: str  # e.g. "en-pt"
    model: CanvasTranslator | MarianCanvasDrafter
    tokenizer: object
    shortlist: Shortlist | None  # None: logits over the whole vocabulary
    settings: CanvasSettings = field(default_factory=CanvasSettings)
    verifier: TeacherVerifier | MarianVerifier | None = None  # set: every canvas is verified once filled

    def __post_init__(self) -> None:
        if self.verifier is not None and self.settings.refine_share is not None:
            raise EngineError(
                f"{self.name}: refine_share does nothing when the teacher verifies (nothing is re-masked)"
            )


@dataclass(eq=False)
class Denoising:
    """What denoising keeps of one window's canvas, each (T,).

    Invariant: ``tokens`` holds ``MASK_ID`` exactly at the slots the next step predicts and a piece
    everywhere else; ``probability`` and ``entropy`` are, per slot, those of the distribution its
    current piece was chosen from (0 and +inf for a slot never predicted; 1 and 0 for a piece a
    revision kept, which the drafter takes as given)."""

    tokens: torch.Tensor
    probability: torch.Tensor
    entropy: torch.Tensor

    @classmethod
    def empty(cls, length: int) -> Denoising:
        tokens = torch.full((length,), MASK_ID, dtype=torch.long)
        return cls(tokens, torch.zeros(length), torch.full((length,), math.inf))


@dataclass(eq=False)
class _Window:
    """One live window: what it reads (fixed at its start or its last revision; ``context`` and
    ``teacher_context`` set by the next step's encoder forward) and the state of its phase (``reading``
    None while denoising). ``revised``: its canvas was carried over from an earlier source, so it is
    filled on the revision schedule (:data:`REVISE_FILL_STEPS`)."""

    serial: int  # unique over the denoiser's life: a new one whenever what the window reads changes
    direction: int
    request: CanvasRequest
    source: list[int]  # pieces plus </s>
    candidates: torch.Tensor | None  # (C,) piece ids the output may use (None: the whole vocabulary)
    canvas: Denoising
    context: Context | None = None  # per layer (1, H, S, D/H) cross-attention keys and values
    teacher_context: Context | None = None  # the teacher's, as ``context`` (verifying directions)
    reading: Reading | None = None  # set once the canvas is filled and the teacher verifies it
    revised: bool = False


class CanvasDenoiser:
    """See the module docstring."""

    def __init__(self, directions: Sequence[Direction], *, edit_in_place: bool = True) -> None:
        if not directions:
            raise EngineError("a canvas denoiser needs at least one direction")
        self.directions = list(directions)
        self.edit_in_place = edit_in_place
        self.vocab = directions[0].model.dims.vocab
        self._windows: dict[int, _Window] = {}
        self._serials = itertools.count()
        # per (direction, teacher's?): the windows last stepped together, stacked (see _batch)
        self._stacked: dict[tuple[int, bool], Batch] = {}

    def encode_source(self, direction: int, text: str) -> tuple[int, ...]:
        """Source text to joint ids (pieces plus ``</s>``) for ``direction``."""
        tokenizer = self.directions[direction].tokenizer
        pieces = [*tokenizer.encode(text, add_special_tokens=False).ids, EOS_ID]  # type: ignore[attr-defined]
        offset = direction * self.vocab
        return tuple(offset + p for p in pieces)

    def canvas_budget(self, prompt_ids: Sequence[int]) -> int:
        """A window's output budget (its ``max_new_tokens``): where the teacher verifies, the longest
        output the teacher's greedy search gives its source (a verified canvas grows to it while the
        teacher's output goes on); else its canvas length, from its source's length."""
        verifier = self.directions[self._split_ids(prompt_ids)[0]].verifier
        if verifier is not None:
            return verifier.output_limit(len(prompt_ids))
        return canvas_length_for(len(prompt_ids) - 1, maximum=MAX_CANVAS)

    @staticmethod
    def _canvas_length(pieces: Sequence[int], request: CanvasRequest) -> int:
        """A window's first canvas: from its source's length, within its output budget."""
        return min(canvas_length_for(len(pieces) - 1, maximum=MAX_CANVAS), request.max_new_tokens)

    # -- Denoiser protocol -------------------------------------------------------------------------
    @property
    def canvas_length(self) -> int:
        return MAX_CANVAS

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset(i * self.vocab + EOS_ID for i in range(len(self.directions)))

    @property
    def max_context_tokens(self) -> int:
        return 2 * MAX_CANVAS

    def start(self, seq_id: int, request: CanvasRequest) -> None:
        if seq_id in self._windows:
            raise EngineError(f"sequence {seq_id} is already live")
        direction, pieces, candidates = self._read_source(request)
        self._windows[seq_id] = _Window(
            serial=next(self._serials),
            direction=direction,
            request=request,
            source=pieces,
            candidates=candidates,
            canvas=Denoising.empty(self._canvas_length(pieces, request)),
        )

    def revise(self, seq_id: int, request: CanvasRequest) -> None:
        """Edit the window's canvas for its newer source (module docstring, *Revising*): with
        ``edit_in_place`` off, start it afresh from a blank canvas instead."""
        window = self._windows[seq_id]
        direction, pieces, candidates = self._read_source(request)
        if not self.edit_in_place or direction != window.direction:
            self.release(seq_id)
            self.start(seq_id, request)
            return
        old = window.canvas.tokens.tolist()
        text = old[: old.index(EOS_ID)] if EOS_ID in old else old
        length = self._canvas_length(pieces, request)
        kept = text[: max(0, min(len(text) - REVISE_TAIL, length - 1))]
        canvas = Denoising.empty(length)
        canvas.tokens[: len(kept)] = torch.tensor(kept, dtype=torch.long)
        given = canvas.tokens != MASK_ID  # a kept piece is given: certain, never masked again by the drafter
        canvas.probability[given], canvas.entropy[given] = 1.0, 0.0
        window.serial = next(self._serials)
        window.request = request
        window.source = pieces
        window.candidates = candidates
        window.canvas = canvas
        window.context = window.teacher_context = window.reading = None
        window.revised = True

    def next_block(self, seq_id: int, block: Sequence[int]) -> None:
        raise EngineError("a canvas translator fills a window in one canvas; there is no next block")

    def release(self, seq_id: int) -> None:
        self._windows.pop(seq_id, None)

    def decode(self, tokens: Sequence[int]) -> str:
        if not tokens:
            return ""
        direction = tokens[0] // self.vocab
        kept = [t % self.vocab for t in tokens if t % self.vocab != EOS_ID]
        return str(self.directions[direction].tokenizer.decode(kept))  # type: ignore[attr-defined]

    def step(self, seq_ids: Sequence[int], steps_remaining: Sequence[int]) -> list[StepResult]:
        if len(seq_ids) != len(steps_remaining):
            raise EngineError("seq_ids and steps_remaining differ in length")
        results: dict[int, StepResult] = {}
        windows = [self._windows[i] for i in seq_ids]
        with torch.inference_mode():
            self._encode([w for w in windows if w.context is None])
            for direction in sorted({w.direction for w in windows}):
                mine = [k for k, w in enumerate(windows) if w.direction == direction]
                denoising = [k for k in mine if windows[k].reading is None]
                if denoising:
                    stepped = self._step_direction(
                        direction, [windows[k] for k in denoising], [steps_remaining[k] for k in denoising]
                    )
                    results.update(zip(denoising, stepped, strict=True))
                # the teacher verifies every filled canvas, from the step that filled it on
                verifying = [k for k in mine if windows[k].reading is not None]
                if verifying:
                    verified = self._verify_direction(direction, [windows[k] for k in verifying])
                    results.update(zip(verifying, verified, strict=True))
        return [results[k] for k in range(len(seq_ids))]

    # -- internals ---------------------------------------------------------------------------------
    def _encode(self, windows: list[_Window]) -> None:
        """Encode the sources of newly started windows, one encoder forward per direction (windows
        that join in the same round share it), keeping each window's cross-attention keys/values."""
        for direction in sorted({w.direction for w in windows}):
            group = [w for w in windows if w.direction == direction]
            model = self.directions[direction].model
            verifier = self.directions[direction].verifier
            source, mask = pad_batch([w.source for w in group])  # (B, S)
            memory = model.encoder(source, mask)
            context = model.context_keys_values(memory)
            teacher = verifier.context_keys_values(memory) if verifier is not None else None
            for row, window in enumerate(group):
                window.context = row_of(context, row, len(window.source))
                if teacher is not None:
                    window.teacher_context = row_of(teacher, row, len(window.source))

    def _read_source(self, request: CanvasRequest) -> tuple[int, list[int], torch.Tensor | None]:
        """A request's direction, source pieces (within the budget) and shortlist candidates."""
        direction, pieces = self._split_ids(request.prompt_ids)
        if len(pieces) > self.max_context_tokens:
            raise EngineError(f"a window holds at most {self.max_context_tokens} pieces, got {len(pieces)}")
        shortlist = self.directions[direction].shortlist
        candidates = torch.from_numpy(shortlist.candidates(pieces)) if shortlist is not None else None
        return direction, pieces, candidates

    def _split_ids(self, ids: Sequence[int]) -> tuple[int, list[int]]:
        direction = ids[0] // self.vocab
        if not 0 <= direction < len(self.directions) or any(i // self.vocab != direction for i in ids):
            raise EngineError("prompt ids do not belong to one direction of this translator")
        return direction, [i % self.vocab for i in ids]

    def _step_direction(
        self, direction: int, windows: list[_Window], steps_remaining: list[int]
    ) -> list[StepResult]:
        model = self.directions[direction].model
        canvas, canvas_mask = stack([w.canvas.tokens for w in windows], MASK_ID)  # (B, T)
        batch = self._batch((direction, False), windows)
        wanted = (canvas == MASK_ID) & canvas_mask  # (B, T): the slots that get logits
        hidden, real = model.wanted_states(canvas, canvas_mask, batch.context, batch.source_mask, wanted)
        log_probs = torch.log_softmax(batch.outputs.logits(hidden).float(), dim=-1)  # (B, W, C)
        best, chosen = log_probs.max(dim=-1)  # (B, W): row b's wanted slots in slot order
        entropy = -(log_probs.exp() * log_probs.clamp(min=-1e30)).sum(dim=-1)  # padding candidates: 0
        order = torch.argsort((~wanted).to(torch.int8), dim=1, stable=True)[:, : hidden.shape[1]]

        def put(stacked: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            return stacked.scatter(1, order, torch.where(real, new, stacked.gather(1, order)))

        probability, _ = stack([w.canvas.probability for w in windows], math.inf)
        entropies, _ = stack([w.canvas.entropy for w in windows], math.inf)
        filled = (
            put(canvas, batch.outputs.pieces(chosen)),
            put(probability, best.exp()),
            put(entropies, entropy),
        )
        return self._remask(direction, windows, filled, canvas_mask, steps_remaining)

    def _verify_direction(self, direction: int, windows: list[_Window]) -> list[StepResult]:
        """One round of the teacher's verification for the direction's verifying windows."""
        verifier = self.directions[direction].verifier
        assert verifier is not None  # only a direction with a verifier starts a reading
        batch = self._batch((direction, True), windows)
        readings = [w.reading for w in windows if w.reading is not None]
        verdicts = verifier.verify(
            self.directions[direction].model.embedding,
            [w.canvas.tokens for w in windows],
            readings,
            batch.context,
            batch.source_mask,
            batch.outputs,
        )
        offset = direction * self.vocab
        results = []
        for window, reading, verdict in zip(windows, readings, verdicts, strict=True):
            window.canvas.tokens = verdict.tokens
            length = verdict.tokens.shape[0]
            results.append(
                StepResult(
                    tokens=tuple((verdict.tokens + offset).tolist()),
                    settled=length if verdict.final else reading.settled,
                    mean_entropy=0.0,
                )
            )
        return results

    def _batch(self, key: tuple[int, bool], windows: list[_Window]) -> Batch:
        """The windows' stacked cross-attention keys/values and output layers (``key``: direction, and
        whether the teacher's), kept while the same windows step together (the usual case between a
        round's joins and leaves)."""
        members = tuple(w.serial for w in windows)
        cached = self._stacked.get(key)
        if cached is None or cached.members != members:
            direction, teacher = key
            model, verifier = self.directions[direction].model, self.directions[direction].verifier
            contexts = [w.teacher_context if teacher else w.context for w in windows]
            if any(c is None for c in contexts):
                raise EngineError("a window stepped before its source was encoded")  # never: see step()
            bias = verifier.output_bias if teacher and verifier is not None else model.output_bias
            cached = stack_batch(
                members,
                [c for c in contexts if c is not None],
                [len(w.source) for w in windows],
                ([w.candidates for w in windows], model.output_weight, bias),
            )
            self._stacked[key] = cached
        return cached

    def _remask(
        self,
        direction: int,
        windows: list[_Window],
        filled: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        real: torch.Tensor,
        steps_remaining: list[int],
    ) -> list[StepResult]:
        """Choose every window's slots to mask again, for all the windows of a step at once
        (right-padded to the longest canvas; ``real`` (B, T) marks the slots, padding is never chosen).
        A window with none masked again is filled: done, or handed to the teacher."""
        settings, verifier = self.directions[direction].settings, self.directions[direction].verifier
        lengths = [w.canvas.tokens.shape[0] for w in windows]
        tokens, probability, entropy = filled  # (B, T) each, after this step's predictions
        bounds = torch.tensor([w.request.diffusion.entropy_bound for w in windows])
        doubtful = real & ~acceptance_mask(entropy, bounds)  # (B, T)
        budgets = [w.request.diffusion.max_denoising_steps for w in windows]
        revision = replace(settings, fill_steps=REVISE_FILL_STEPS)
        schedules = [revision if w.revised else settings for w in windows]
        quota = torch.tensor(
            [
                remask_quota(length, last - remaining + 1, last, schedule, verify=verifier is not None)
                for length, remaining, last, schedule in zip(
                    lengths, steps_remaining, budgets, schedules, strict=True
                )
            ]
        )
        # the quota's least probable doubtful slots: rank each slot among its row's doubtful ones
        order = torch.argsort(torch.where(doubtful, probability, math.inf), dim=1, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
        remask = doubtful & (rank < quota[:, None])  # (B, T)
        # before its fill step a canvas keeps at least one slot masked: its least probable one
        filling = torch.tensor(
            [
                last - remaining + 1 < fill_step(last, schedule)
                for remaining, last, schedule in zip(steps_remaining, budgets, schedules, strict=True)
            ]
        )
        lone = filling & ~remask.any(dim=1)
        if bool(lone.any()):
            least = probability.argmin(dim=1)  # padding holds +inf: never the least probable
            remask[lone, least[lone]] = True
        mean_entropy = (torch.where(real, entropy, 0.0).sum(dim=1) / torch.tensor(lengths)).tolist()
        filled_rows = (~remask.any(dim=1)).tolist()
        refilled = tokens.masked_fill(remask, MASK_ID)
        offset = direction * self.vocab
        argmax = (tokens + offset).tolist()
        results = []
        for b, window in enumerate(windows):
            length = lengths[b]
            window.canvas = Denoising(refilled[b, :length], probability[b, :length], entropy[b, :length])
            done = filled_rows[b]
            if done and verifier is not None:
                # the teacher reads it from this step on; a revised canvas's kept text mostly holds
                first_read = REVISED_FIRST_READ if window.revised else FIRST_READ
                limit = window.request.max_new_tokens
                window.reading, done = verifier.start(first_read=first_read, limit=limit), False
            results.append(
                StepResult(
                    tokens=without_repeats(argmax[b][:length], offset + EOS_ID),
                    settled=length if done else 0,
                    mean_entropy=float(mean_entropy[b]),
                )
            )
        return results
