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
it. The encoder and embeddings are the canvas translator's own (they are the teacher's, frozen).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from engine.marian.layers import MarianDims, members, sinusoidal_positions
from engine.marian.teacher import EOS_ID, MarianTeacher, TeacherDecoderLayer

VERIFIER_WEIGHTS = "verifier.safetensors"
LOOKAHEAD_FLOOR = 4
"""After a correction, a round reads at most ``max(LOOKAHEAD_FLOOR, 2 * (a + 1))`` slots, ``a`` being
the drafted slots the last round accepted: a draft that went astray (a piece missing or extra) would
otherwise be read to its end round after round for one settled slot each."""

_Context = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (B, H, S, D/H) keys, values


@dataclass
class Reading:
    """Where the teacher stands on one canvas: ``settled`` slots are final (the teacher's own choices)
    and ``cells`` (per layer, (D,)) is its SSRU state after reading them."""

    settled: int
    cells: list[torch.Tensor]
    lookahead: int | None = None  # at most this many slots read next round (None: up to </s>)


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
        self.slots_read = 0  # slots the verification rounds have read (a measure of their work)

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

    def context_keys_values(self, memory: torch.Tensor) -> _Context:
        """Each layer's cross-attention keys and values for encoder states (B, S, D), once per window."""
        return [layer.context.keys_values(memory) for layer in self.layers]

    def start(self) -> Reading:
        return Reading(settled=0, cells=[torch.zeros(self.dims.dim) for _ in self.layers])

    def verify(
        self,
        embedding: nn.Embedding,
        canvases: list[torch.Tensor],
        readings: list[Reading],
        context: _Context,
        source_mask: torch.Tensor,
        outputs: Sequence[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]],
    ) -> list[Verdict]:
        """One round for a batch of windows: ``canvases`` (T_b,), their ``readings`` (updated in
        place), their stacked teacher ``context`` with ``source_mask`` (B, S), and per window its
        output restriction ``(candidates (C,) or None, weight rows (C, D), bias (C,))``."""
        dim = self.dims.dim
        starts = [r.settled for r in readings]
        spans = [
            min(_drafted_length(c, r.settled), r.lookahead or c.shape[0])
            for c, r in zip(canvases, readings, strict=True)
        ]
        width = max(spans)
        self.slots_read += sum(spans)
        # slot i reads the piece in slot i - 1 (slot 0 a zero vector), at position i
        previous = torch.zeros(len(canvases), width, dtype=torch.long)
        first = torch.zeros(len(canvases), width, dtype=torch.bool)
        position = torch.zeros(len(canvases), width, dtype=torch.long)
        real = torch.arange(width)[None, :] < torch.tensor(spans)[:, None]  # (B, W)
        for row, (canvas, start, span) in enumerate(zip(canvases, starts, spans, strict=True)):
            slots = torch.arange(start, start + span)
            position[row, :span] = slots
            previous[row, :span] = canvas[(slots - 1).clamp(min=0)]
            first[row, :span] = slots == 0
        table = sinusoidal_positions(int(position.max()) + 1, dim)
        vectors = torch.where(first[..., None], 0.0, embedding(previous))
        x = vectors * math.sqrt(dim) + table[position]  # (B, W, D)
        key_mask = source_mask[:, None, None, :]
        layer_cells = []
        for index, layer in enumerate(self.layers):
            forget = torch.sigmoid(layer.ssru.forget(x))
            update = (1 - forget) * layer.ssru.w(x)
            cell = torch.stack([r.cells[index] for r in readings])  # (B, D)
            states = []
            for step in range(width):
                cell = forget[:, step] * cell + update[:, step]
                states.append(cell)
            cells = torch.stack(states, dim=1)  # (B, W, D)
            layer_cells.append(cells)
            x = layer.ssru.norm(x + torch.relu(cells))
            x = layer.context(x, context[index], key_mask)
            x = x.masked_scatter(real[..., None], layer.ffn(x[real]))
        verdicts = []
        for row, (canvas, reading, span) in enumerate(zip(canvases, readings, spans, strict=True)):
            candidates, weight, bias = outputs[row]
            chosen = nn.functional.linear(x[row, :span], weight, bias).argmax(dim=-1)
            teacher = chosen if candidates is None else candidates[chosen]  # (span,)
            verdicts.append(self._judge(canvas, reading, teacher, [c[row] for c in layer_cells]))
        return verdicts

    @staticmethod
    def _judge(
        canvas: torch.Tensor, reading: Reading, teacher: torch.Tensor, cells: list[torch.Tensor]
    ) -> Verdict:
        """Accept the canvas's slots while they are the teacher's; correct the first that is not."""
        start = reading.settled
        drafted = canvas[start : start + teacher.shape[0]]  # up to its first </s>
        differ = (teacher != drafted).nonzero()
        if not differ.numel():
            reading.settled = start + drafted.shape[0]
            ended = int(drafted[-1]) == EOS_ID or reading.settled == canvas.shape[0]
            if not ended:  # a capped read: every slot it read is the teacher's; read on
                reading.cells = [layer[drafted.shape[0] - 1].clone() for layer in cells]
                reading.lookahead = 2 * drafted.shape[0]
            return Verdict(canvas, final=ended)  # accepted up to </s>, or the canvas is full
        wrong = int(differ[0])
        tokens = canvas.clone()
        slot = start + wrong
        if slot + 1 < canvas.shape[0] and int(canvas[slot + 1]) == int(teacher[wrong]):
            # the draft has one piece too many here: drop it, and the rest moves one slot left
            tokens[slot:-1] = canvas[slot + 1 :].clone()
            tokens[-1] = EOS_ID
        tokens[slot] = teacher[wrong]
        if int(teacher[wrong]) == EOS_ID:
            tokens[slot:] = EOS_ID
        reading.settled = start + wrong + 1
        reading.lookahead = max(LOOKAHEAD_FLOOR, 2 * (wrong + 1))
        reading.cells = [layer[wrong].clone() for layer in cells]
        final = int(teacher[wrong]) == EOS_ID or reading.settled == canvas.shape[0]
        return Verdict(tokens, final=final)

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


def _drafted_length(canvas: torch.Tensor, start: int) -> int:
    """How many slots from ``start`` the teacher reads: up to and including the first ``</s>``."""
    ends = (canvas[start:] == EOS_ID).nonzero()
    return int(ends[0]) + 1 if ends.numel() else canvas.shape[0] - start
