"""The canvas translator backend: ``Denoiser`` over :class:`engine.diffusion.canvas.CanvasTranslator`.

One backend serves several translation directions (one model each) in one joint id space: direction
``r``'s piece ``p`` is id ``r * V + p`` (``V`` pieces per student), so prompts, canvases and the
scheduler's token tuples say which model they belong to, and the scheduler needs no new field. A
step groups its canvases by direction and runs one decoder forward per direction.

Per canvas (Mask-Predict, Ghazvininejad et al. 2019, arXiv:1904.09324, with an adaptive acceptance):

* ``start``: the window's shortlist candidates and a canvas of ``[MASK]`` slots (length from the
  source) are set up; its first step encodes the source once, in one encoder forward with
  every other window starting in that round, and keeps its cross-attention keys and values;
* ``step``: the decoder reads the whole canvas; only masked slots get logits, over the window's
  shortlist alone (Bergamot's lexical shortlist); each takes its most likely piece, its probability
  and its entropy;
* re-masking (:mod:`engine.diffusion.mask_schedule`): after each step at most ``remask_quota`` slots
  are masked again, the least probable first, never one that DiffusionGemma's entropy-bound rule
  (:func:`engine.diffusion.rules.acceptance_mask`) accepts; until the request's draft step at least
  one stays open, so every window shows a draft before its final;
* the block stops when no slot is masked, or on DiffusionGemma's stable-and-confident rule;
* with ``DiffusionParams.verify``, a window whose canvas would stop goes on to verification instead:
  from that same step on, each step is a round of the teacher's verifier
  (:mod:`engine.diffusion.verifier`), which settles at least one slot, until the canvas is the
  teacher's greedy translation (or the budget ends). A window the teacher accepts in that first round
  reports it as not yet stopped (the scheduler shows it as the draft) and stops in the next step.

Re-masking and stopping run for all the windows of a step at once; the windows' stacked context and
output layers (gathered once from the embedding over their candidates) are kept while the same
windows step together.

A denoised canvas's text drops a piece that repeats its left neighbour (the usual remedy for the
repeated tokens of parallel decoders; subword pieces seldom repeat in real text); a verified canvas's
text is the teacher's, repeats and all.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from engine.diffusion.canvas import MASK_ID, CanvasTranslator, canvas_length_for
from engine.diffusion.denoiser import StepResult
from engine.diffusion.mask_schedule import draft_pending, remask_quota, without_repeats
from engine.diffusion.rules import acceptance_mask, stable_and_confident
from engine.diffusion.stacking import Batch, Context, row_of, stack, stack_batch, stack_rows
from engine.diffusion.verifier import Reading, TeacherVerifier
from engine.errors import EngineError
from engine.marian.binary import Shortlist
from engine.marian.teacher import EOS_ID, pad_batch
from engine.types import CanvasRequest

MAX_CANVAS = 128  # training canvases hold up to 64 slots; longer windows extrapolate


@dataclass
class Direction:
    """One translation direction: its model, tokenizer (``tokenizers.Tokenizer``) and shortlist."""

    name: str  # e.g. "en-pt"
    model: CanvasTranslator
    tokenizer: object
    shortlist: Shortlist | None  # None: logits over the whole vocabulary
    noise: str = "mask"  # what an unsettled slot holds: "mask" ([MASK]) or "uniform" (a random piece)
    verifier: TeacherVerifier | None = None  # the teacher's decoder, for requests that verify


@dataclass(eq=False)
class _Window:
    serial: int  # unique over the denoiser's life (a sequence id may be reused after a release)
    direction: int
    request: CanvasRequest
    source: list[int]  # pieces plus </s>
    # per layer (1, H, S, D/H) cross-attention keys and values; None until the first step encodes it
    context: list[tuple[torch.Tensor, torch.Tensor]] | None
    source_length: int
    candidates: torch.Tensor | None  # (C,) piece ids the output may use (None: the whole vocabulary)
    tokens: torch.Tensor  # (T,) current piece per slot (MASK_ID where masked)
    probability: torch.Tensor  # (T,) probability of each slot's piece when it was chosen
    entropy: torch.Tensor  # (T,) entropy (nats) of that distribution
    masked: torch.Tensor  # (T,) bool: slots the next step predicts
    history: torch.Tensor  # (1, S_h, T) last argmax canvases for the stability rule
    teacher_context: Context | None = None  # the teacher's cross-attention keys/values, as ``context``
    reading: Reading | None = None  # set once the teacher verifies the canvas
    held: StepResult | None = None  # a final the teacher gave in the fill step, sent in the next one


class CanvasDenoiser:
    """See the module docstring."""

    def __init__(self, directions: Sequence[Direction]) -> None:
        if not directions:
            raise EngineError("a canvas denoiser needs at least one direction")
        self.directions = list(directions)
        self.vocab = directions[0].model.dims.vocab
        self._windows: dict[int, _Window] = {}
        self._generator = torch.Generator().manual_seed(0)  # uniform noise only
        # per direction: the windows last stepped together and their stacked context (see _context)
        self._serials = itertools.count()
        self._stacked: dict[tuple[int, bool], Batch] = {}
        self.forwards = 0
        self.rows_stepped = 0

    def direction_index(self, name: str) -> int | None:
        return next((i for i, d in enumerate(self.directions) if d.name == name), None)

    def encode_source(self, direction: int, text: str) -> tuple[int, ...]:
        """Source text to joint ids (pieces plus ``</s>``) for ``direction``."""
        tokenizer = self.directions[direction].tokenizer
        pieces = [*tokenizer.encode(text, add_special_tokens=False).ids, EOS_ID]  # type: ignore[attr-defined]
        offset = direction * self.vocab
        return tuple(offset + p for p in pieces)

    def canvas_budget(self, prompt_ids: Sequence[int]) -> int:
        """A window's canvas length (its ``max_new_tokens``): from its source's length."""
        return canvas_length_for(len(prompt_ids) - 1, maximum=MAX_CANVAS)

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
        direction, pieces = self._split_ids(request.prompt_ids)
        if len(pieces) > self.max_context_tokens:
            raise EngineError(f"a window holds at most {self.max_context_tokens} pieces, got {len(pieces)}")
        shortlist = self.directions[direction].shortlist
        if request.diffusion.verify and self.directions[direction].verifier is None:
            raise EngineError(f"{self.directions[direction].name} ships no teacher verifier: cannot verify")
        candidates = torch.from_numpy(shortlist.candidates(pieces)) if shortlist is not None else None
        length = min(request.max_new_tokens, MAX_CANVAS)
        threshold = request.diffusion.stability_threshold
        self._windows[seq_id] = _Window(
            serial=next(self._serials),
            direction=direction,
            request=request,
            source=pieces,
            context=None,
            source_length=len(pieces),
            candidates=candidates,
            tokens=self._noise(direction, candidates, torch.full((length,), MASK_ID, dtype=torch.long)),
            probability=torch.zeros(length),
            entropy=torch.full((length,), math.inf),
            masked=torch.ones(length, dtype=torch.bool),
            history=torch.full((1, threshold, length), -1, dtype=torch.long),
        )

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
                held = {k: final for k in mine if (final := windows[k].held) is not None}
                results.update(held)
                denoising = [k for k in mine if windows[k].reading is None]
                if denoising:
                    stepped = self._step_direction(
                        direction, [windows[k] for k in denoising], [steps_remaining[k] for k in denoising]
                    )
                    results.update(zip(denoising, stepped, strict=True))
                # the teacher verifies every window done denoising, from the step in which it got done
                verifying = [k for k in mine if windows[k].reading is not None and k not in held]
                if verifying:
                    verified = self._verify_direction(direction, [windows[k] for k in verifying])
                    for k, result in zip(verifying, verified, strict=True):
                        if result.stopped and k in denoising:  # accepted in the fill step's round: its
                            windows[k].held = result  # draft first, its final in the next step
                            result = replace(result, stopped=False)
                        results[k] = result
        self.forwards += 1
        self.rows_stepped += len(seq_ids)
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
            verifying = [w.request.diffusion.verify for w in group]
            teacher = verifier.context_keys_values(memory) if verifier and any(verifying) else None
            for row, window in enumerate(group):
                window.context = row_of(context, row, window.source_length)
                if teacher is not None and verifying[row]:
                    window.teacher_context = row_of(teacher, row, window.source_length)

    def _noise(self, direction: int, candidates: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` with each ``MASK_ID`` slot as the direction's noise: ``[MASK]`` itself, or a
        uniformly drawn candidate piece (uniform-state diffusion)."""
        if self.directions[direction].noise == "mask":
            return tokens
        masked = tokens == MASK_ID
        pool = candidates if candidates is not None else torch.arange(self.vocab)
        drawn = pool[torch.randint(pool.numel(), tokens.shape, generator=self._generator)]
        return torch.where(masked, drawn, tokens)

    def _split_ids(self, ids: Sequence[int]) -> tuple[int, list[int]]:
        direction = ids[0] // self.vocab
        if not 0 <= direction < len(self.directions) or any(i // self.vocab != direction for i in ids):
            raise EngineError("prompt ids do not belong to one direction of this translator")
        return direction, [i % self.vocab for i in ids]

    def _step_direction(
        self, direction: int, windows: list[_Window], steps_remaining: list[int]
    ) -> list[StepResult]:
        model = self.directions[direction].model
        canvas, canvas_mask = stack([w.tokens for w in windows], MASK_ID)  # (B, T)
        batch = self._batch((direction, False), windows)
        wanted, _ = stack([w.masked for w in windows], False)  # (B, T): the slots that get logits
        hidden, real = model.wanted_states(canvas, canvas_mask, batch.context, batch.source_mask, wanted)
        log_probs = torch.log_softmax(batch.outputs.logits(hidden).float(), dim=-1)  # (B, W, C)
        best, chosen = log_probs.max(dim=-1)  # (B, W): row b's wanted slots in slot order
        entropy = -(log_probs.exp() * log_probs.clamp(min=-1e30)).sum(dim=-1)  # padding candidates: 0
        order = torch.argsort((~wanted).to(torch.int8), dim=1, stable=True)[:, : hidden.shape[1]]

        def put(stacked: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            return stacked.scatter(1, order, torch.where(real, new, stacked.gather(1, order)))

        probability, _ = stack([w.probability for w in windows], math.inf)
        entropies, _ = stack([w.entropy for w in windows], math.inf)
        filled = (
            put(canvas, batch.outputs.pieces(chosen)),
            put(probability, best.exp()),
            put(entropies, entropy),
        )
        return self._settle(windows, filled, steps_remaining, direction * self.vocab)

    def _verify_direction(self, direction: int, windows: list[_Window]) -> list[StepResult]:
        """One round of the teacher's verification for the direction's verifying windows."""
        verifier = self.directions[direction].verifier
        assert verifier is not None  # start() refuses verifying requests without one
        batch = self._batch((direction, True), windows)
        readings = [w.reading for w in windows if w.reading is not None]
        verdicts = verifier.verify(
            self.directions[direction].model.embedding,
            [w.tokens for w in windows],
            readings,
            batch.context,
            batch.source_mask,
            batch.outputs,
        )
        offset = direction * self.vocab
        results = []
        for window, verdict in zip(windows, verdicts, strict=True):
            window.tokens = verdict.tokens
            results.append(
                StepResult(
                    argmax=tuple((verdict.tokens + offset).tolist()), stopped=verdict.final, mean_entropy=0.0
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
                [w.source_length for w in windows],
                ([w.candidates for w in windows], model.embedding.weight, bias),
            )
            self._stacked[key] = cached
        return cached

    def _settle(
        self,
        windows: list[_Window],
        filled: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        steps_remaining: list[int],
        offset: int,
    ) -> list[StepResult]:
        """Choose every window's slots to mask again and decide whether its canvas is done, for all the
        windows of a step at once (right-padded to the longest canvas; padding is never chosen)."""
        params = [w.request.diffusion for w in windows]
        lengths = [w.tokens.shape[0] for w in windows]
        tokens, probability, entropy = filled  # (B, T) each, after this step's predictions
        real = (
            torch.arange(tokens.shape[1])[None, :]
            < torch.tensor([w.tokens.shape[0] for w in windows])[:, None]
        )
        accepted = acceptance_mask(entropy, torch.tensor([p.entropy_bound for p in params]))  # (B, T)
        doubtful = real & ~accepted
        quota = torch.tensor(
            [
                remask_quota(length, p.max_denoising_steps - remaining + 1, p)
                for length, p, remaining in zip(lengths, params, steps_remaining, strict=True)
            ]
        )
        # the quota's least probable doubtful slots: rank each slot among its row's doubtful ones
        order = torch.argsort(torch.where(doubtful, probability, math.inf), dim=1, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
        remask = doubtful & (rank < quota[:, None])
        # until the request's draft step, at least one slot stays open: every window shows a draft
        # (its canvas at that step) before its final (a verifying window goes on to verification at
        # its draft step, so its draft is that step's canvas after the teacher's first round)
        before_draft = torch.tensor(
            [
                draft_pending(p.max_denoising_steps - remaining + 1, w.request) and remaining > 1
                for p, remaining, w in zip(params, steps_remaining, windows, strict=True)
            ]
        )
        lone = before_draft & ~remask.any(dim=1)
        if bool(lone.any()):
            least = probability.argmin(dim=1)  # padding holds +inf: never the least probable
            remask[lone, least[lone]] = True
        mean_entropy = torch.where(real, entropy, 0.0).sum(dim=1) / torch.tensor(lengths)
        stop = torch.zeros(len(windows), dtype=torch.bool)
        for threshold in {w.history.shape[1] for w in windows}:
            rows = [b for b, w in enumerate(windows) if w.history.shape[1] == threshold]
            history = stack_rows([windows[b].history[0] for b in rows], tokens.shape[1])
            stopped, shifted = stable_and_confident(
                history,
                tokens[rows],
                mean_entropy[rows],
                torch.tensor([params[b].confidence_threshold for b in rows]),
            )
            stop[rows] = stopped
            for index, b in enumerate(rows):
                windows[b].history = shifted[index : index + 1, :, : lengths[b]]
        stop &= ~before_draft  # not before the draft step either
        remask &= ~stop[:, None]
        argmax = (tokens + offset).tolist()
        entropies = mean_entropy.tolist()
        results = []
        open_slots = remask.any(dim=1).tolist()
        refilled = tokens.masked_fill(remask, MASK_ID)
        for b, window in enumerate(windows):
            length = lengths[b]
            window.probability, window.entropy = probability[b, :length], entropy[b, :length]
            window.masked, window.tokens = remask[b, :length], refilled[b, :length]
            if open_slots[b] and self.directions[window.direction].noise != "mask":
                window.tokens = self._noise(window.direction, window.candidates, window.tokens)
            done = not open_slots[b]
            if done and window.request.diffusion.verify and steps_remaining[b] > 1:
                verifier = self.directions[window.direction].verifier
                assert verifier is not None  # start() refuses verifying requests without one
                window.reading, done = verifier.start(), False  # the teacher reads it from the next step
            results.append(
                StepResult(
                    argmax=without_repeats(argmax[b][:length], offset + EOS_ID),
                    stopped=done,
                    mean_entropy=float(entropies[b]),
                )
            )
        return results
