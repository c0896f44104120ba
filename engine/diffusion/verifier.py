"""The teacher as a verifier of canvases: speculative decoding with the canvas translator as drafter.

This module owns the teacher's decoder as shipped beside a canvas translator (its SSRU layers,
cross-attention, feed-forward blocks and output bias, in ``verifier.safetensors``) and one
verification round for a batch of windows.

Speculative decoding (Leviathan et al. 2023, arXiv:2211.17192; with a non-autoregressive drafter,
Xia et al. 2023, arXiv:2203.16487): the canvas translator fills the whole canvas in parallel; the
teacher then reads the filled canvas in one teacher-forced pass (its SSRU recurrence is an
element-wise scan; attention, feed-forward and output layer run for every slot at once) and predicts
every slot from the slots before it. Slots are accepted while the teacher's greedy choice is the
canvas's piece; the first slot it disagrees with takes the teacher's piece, and the next round reads
on from there. A canvas that the teacher accepts up to its ``</s>`` is exactly the teacher's greedy
translation (over the same shortlist), and every round settles at least one slot.

The teacher's recurrent state after the settled prefix is kept, so a round reads only the slots after
it. The encoder and embeddings are the canvas translator's own (they are the teacher's, frozen); the
layers are the teacher's own modules, called as greedy search calls them (the SSRU's ``scan``, the
embedding rule :func:`engine.marian.layers.embed_vectors`), so a verified canvas is computed exactly
as greedy search computes it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from engine.diffusion.canvas import MAX_CANVAS
from engine.diffusion.stacking import Context, Outputs, stack
from engine.marian.layers import MarianDims, embed_vectors, members
from engine.marian.teacher import EOS_ID, MAX_LENGTH_FACTOR, MarianTeacher, TeacherDecoderLayer

VERIFIER_WEIGHTS = "verifier.safetensors"
LOOKAHEAD_FLOOR = 4
EXTEND = 8  # slots a full canvas grows by while the teacher's output goes on (:func:`grown`)
FIRST_READ = 8
"""The first round reads at most this many slots: the drafter's first error comes after about four
(measured on the dev split), and a longer first read mostly reads slots that will be read again."""
"""After a correction, a round reads at most ``max(LOOKAHEAD_FLOOR, 2 * (a + 1))`` slots, ``a`` being
the drafted slots the last round accepted: a draft that went astray (a piece missing or extra) would
otherwise be read to its end round after round for one settled slot each."""


@dataclass
class Reading:
    """What verification keeps of one window: where the teacher stands on its canvas.

    Invariant: the canvas's first ``settled`` slots are the teacher's own greedy choices, and
    ``cells`` (per decoder layer, (D,)) is the teacher's SSRU state after reading exactly those slots
    (zeros before any), so a round reads on from slot ``settled`` as if it had read all of them."""

    settled: int
    cells: list[torch.Tensor]
    lookahead: int | None = None  # at most this many slots read next round (None: up to </s>)
    limit: int | None = None  # the longest the canvas may grow to (None: it never grows; :func:`grown`)


def grown(verdict: Verdict, reading: Reading) -> Verdict:
    """A verdict that ended only because its canvas is full, the teacher not having ended there: the
    canvas grows by :data:`EXTEND` ``</s>`` slots, within ``reading.limit``, and the next rounds read
    on from its first new slot, so an output longer than the drafted canvas is still the teacher's
    whole output."""
    tokens = verdict.tokens
    length = tokens.shape[0]
    if not verdict.final or reading.limit is None or int(tokens[-1]) == EOS_ID or length >= reading.limit:
        return verdict
    extra = min(EXTEND, reading.limit - length)
    reading.lookahead = None  # up to the first </s>: the first new slot
    return Verdict(torch.cat([tokens, torch.full((extra,), EOS_ID, dtype=tokens.dtype)]), final=False)


def spans_to_read(
    canvases: list[torch.Tensor], readings: list[Reading]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A round's canvases stacked (B, T), each one's first unsettled slot (B,), and how many slots it
    reads (B,): from there up to the first ``</s>`` after it, at most its ``lookahead``."""
    canvas, inside = stack(canvases, EOS_ID)  # (B, T)
    lengths = torch.tensor([c.shape[0] for c in canvases])
    starts = torch.tensor([r.settled for r in readings])
    slots = torch.arange(canvas.shape[1])[None, :]
    ends = (canvas == EOS_ID) & inside & (slots >= starts[:, None])
    drafted = torch.where(ends.any(dim=1), ends.int().argmax(dim=1) + 1, lengths) - starts
    caps = torch.tensor([r.lookahead or canvas.shape[1] for r in readings])
    return canvas, starts, torch.minimum(drafted, caps)


@dataclass(frozen=True)
class Verdict:
    """One window's round: its canvas with the teacher's correction, and whether it is final."""

    tokens: torch.Tensor  # (T,)
    final: bool


class TeacherVerifier(nn.Module):
    """See the module docstring."""

    def __init__(self, dims: MarianDims) -> None:
        super().__init__()
        self.dims = dims
        self.decoder = nn.ModuleList(TeacherDecoderLayer(dims) for _ in range(dims.decoder_depth))
        self.output_bias = nn.Parameter(torch.zeros(dims.vocab))

    @classmethod
    def from_teacher(cls, teacher: MarianTeacher) -> TeacherVerifier:
        verifier = cls(teacher.dims)
        with torch.no_grad():
            verifier.decoder.load_state_dict(teacher.decoder.state_dict())
            verifier.output_bias.copy_(teacher.output_bias)
        return verifier.eval()

    @property
    def layers(self) -> list[TeacherDecoderLayer]:
        return members(self.decoder, TeacherDecoderLayer)

    def context_keys_values(self, memory: torch.Tensor) -> Context:
        """Each layer's cross-attention keys and values for encoder states (B, S, D), once per window."""
        return [layer.context.keys_values(memory) for layer in self.layers]

    def start(self, *, first_read: int | None = FIRST_READ, limit: int | None = None) -> Reading:
        """A reading from the canvas's first slot; its first round reads at most ``first_read`` slots
        (None: up to its ``</s>``); the canvas may grow to ``limit`` slots (:func:`grown`)."""
        cells = [torch.zeros(self.dims.dim) for _ in self.layers]
        return Reading(settled=0, cells=cells, lookahead=first_read, limit=limit)

    @staticmethod
    def output_limit(source_pieces: int) -> int:
        """The longest output greedy search gives a source of ``source_pieces`` (its ``</s>`` included):
        Marian's ``max-length-factor`` times that, within :data:`MAX_CANVAS`."""
        return min(math.floor(MAX_LENGTH_FACTOR * source_pieces), MAX_CANVAS)

    def verify(
        self,
        embedding: nn.Embedding,
        canvases: list[torch.Tensor],
        readings: list[Reading],
        context: Context,
        source_mask: torch.Tensor,
        outputs: Outputs,
    ) -> list[Verdict]:
        """One round for a batch of windows: ``canvases`` (T_b,), their ``readings`` (updated in
        place), their stacked teacher ``context`` with ``source_mask`` (B, S), and their output layers
        (the teacher's bias over each window's shortlist)."""
        canvas, starts, spans = spans_to_read(canvases, readings)
        width = int(spans.max())
        position = starts[:, None] + torch.arange(width)[None, :]  # (B, W): slot i is read at i
        real = torch.arange(width)[None, :] < spans[:, None]
        position = torch.where(real, position, 0)
        previous = canvas.gather(1, (position - 1).clamp(min=0))  # slot i reads slot i - 1's piece
        vectors = torch.where((position == 0)[..., None], 0.0, embedding(previous))  # slot 0: zeros
        x = embed_vectors(vectors, position)  # (B, W, D): the teacher's own input rule
        key_mask = source_mask[:, None, None, :]
        layer_cells = []
        for index, layer in enumerate(self.layers):
            x, cells = layer.ssru.scan(x, torch.stack([r.cells[index] for r in readings]))  # (B, W, D)
            layer_cells.append(cells)
            x = layer.context(x, context[index], key_mask)
            x = x.masked_scatter(real[..., None], layer.ffn(x[real]))
        taught = outputs.pieces(outputs.logits(x).argmax(dim=-1))  # (B, W): the teacher's pieces
        differ = (taught != canvas.gather(1, position)) & real
        wrong = torch.where(differ.any(dim=1), differ.int().argmax(dim=1), spans)  # first disagreement
        kept = wrong.clamp(max=spans - 1)  # the last slot whose cells the next round starts from
        rows = torch.arange(len(canvases))
        kept_cells = [cells[rows, kept] for cells in layer_cells]  # per layer (B, D)
        return [
            grown(
                self.judge(canvases[b], readings[b], taught_row, first, span, [c[b] for c in kept_cells]),
                readings[b],
            )
            for b, (taught_row, first, span) in enumerate(
                zip(taught.tolist(), wrong.tolist(), spans.tolist(), strict=True)
            )
        ]

    @staticmethod
    def judge(
        canvas: torch.Tensor,
        reading: Reading,
        taught: list[int],
        wrong: int,
        span: int,
        cells: list[torch.Tensor],
    ) -> Verdict:
        """Accept the ``span`` slots read while they are the teacher's (``taught``); correct the first
        that is not (``wrong``, or ``span`` when none)."""
        start, length = reading.settled, canvas.shape[0]
        if wrong == span:
            reading.settled = start + span
            ended = taught[span - 1] == EOS_ID or reading.settled == length
            reading.cells = cells  # after the last slot read: a canvas that grows reads on from there
            if not ended:  # a capped read: every slot it read is the teacher's; read on
                reading.lookahead = 2 * span
            return Verdict(canvas, final=ended)  # accepted up to </s>, or the canvas is full
        piece, slot = taught[wrong], start + wrong
        pieces = canvas.tolist()
        if piece == EOS_ID:
            pieces[slot:] = [EOS_ID] * (length - slot)
        elif slot + 1 < length and pieces[slot + 1] == piece:
            # the draft has one piece too many here: drop it, and the rest moves one slot left
            pieces[slot:] = [*pieces[slot + 1 :], EOS_ID]
        else:
            pieces[slot] = piece
        reading.settled = slot + 1
        reading.lookahead = max(LOOKAHEAD_FLOOR, 2 * (wrong + 1))
        reading.cells = cells
        final = piece == EOS_ID or reading.settled == length
        return Verdict(torch.tensor(pieces), final=final)

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {name: t.detach().float().contiguous() for name, t in self.state_dict().items()}
        save_file(tensors, str(path), metadata={"dims": json.dumps(asdict(self.dims))})

    @classmethod
    def load(cls, path: Path) -> TeacherVerifier:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        verifier = cls(MarianDims(**json.loads(metadata["dims"])))
        verifier.load_state_dict(state)
        return verifier.eval()
