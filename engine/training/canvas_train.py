"""Training the canvas translator: mask-predict distillation from the teacher, resumable.

This module owns the training loop of a canvas drafter (:class:`engine.diffusion.canvas.CanvasTranslator`,
or a Marian checkpoint's, :mod:`engine.diffusion.marian_canvas`). Objective (Mask-Predict,
Ghazvininejad et al. 2019): per canvas draw ``t ~ U(0, 1]``, mask each slot with probability ``t``
(at least one), and minimise the cross-entropy of the teacher's pieces at the masked
slots; the softmax runs over each sentence's shortlist plus its target pieces (what the service's
output layer sees), or over the whole vocabulary for a teacher without a shortlist, and the ``</s>``
padding after the first ``</s>`` weighs ``eos_weight``.

The teacher's encoder and embeddings stay frozen; the decoder trains under bf16 autocast (about twice
as fast as float32 on a CPU with AVX512-BF16; correct, if slower, on any other), on the CPU or on an
accelerator (``device``). The learning rate warms up, then decays linearly in *time* to
``final_lr_fraction`` of its peak at the end of the planned minutes; an exponential moving average
of the weights (a running checkpoint average) is what gets evaluated and exported.
Checkpoints every few minutes; a run resumes from the last one. Beside each checkpoint lies its
*hand-off* (:mod:`engine.training.hand_off`, about 11 MB), all that evaluation and export need, so a
run on another machine (an accelerator) returns two small files. A later run with no checkpoint but a
hand-off continues from its averaged weights (with a fresh optimiser), keeping the earlier runs on
its record.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from engine.diffusion.canvas import MASK_ID, canvas_length_for
from engine.diffusion.marian_canvas import Drafter
from engine.marian.binary import Shortlist
from engine.marian.teacher import EOS_ID, pad_batch
from engine.training.distill import Pair
from engine.training.hand_off import averaged, read_hand_off, save_hand_off, trainable

log = logging.getLogger("livecanvas.train")


@dataclass(frozen=True, slots=True)
class TrainSettings:
    batch_size: int = 64
    peak_lr: float = 5e-4
    final_lr_fraction: float = 0.05
    warmup_steps: int = 200
    weight_decay: float = 0.01
    eos_weight: float = 0.2
    ema_decay: float = 0.999
    checkpoint_minutes: float = 3.0
    eval_minutes: float = 10.0
    bf16: bool = True
    seed: int = 0
    loader_workers: int = 0  # processes preparing batches (0: this one)


@dataclass(frozen=True, slots=True)
class Example:
    source: tuple[int, ...]  # pieces plus </s>
    canvas: tuple[int, ...]  # target pieces, then </s> up to the canvas length
    target_length: int  # pieces before the first </s>


def make_examples(pairs: Sequence[Pair]) -> list[Example]:
    """Canvas examples; a pair whose translation does not fit its canvas is left out."""
    examples = []
    for pair in pairs:
        length = canvas_length_for(len(pair.source_ids) - 1)
        if len(pair.target_ids) + 1 <= length:
            canvas = (*pair.target_ids, *([EOS_ID] * (length - len(pair.target_ids))))
            examples.append(Example(pair.source_ids, canvas, len(pair.target_ids)))
    return examples


def batches(examples: Sequence[Example], size: int, rng: random.Random) -> Iterator[list[Example]]:
    """Endless batches of similar canvas lengths, in random order."""
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        pool = size * 50
        chunks: list[list[Example]] = []
        for start in range(0, len(order), pool):
            chunk = sorted((examples[i] for i in order[start : start + pool]), key=lambda e: len(e.canvas))
            chunks.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
        rng.shuffle(chunks)
        yield from chunks


Memories = dict[tuple[int, ...], torch.Tensor]
"""Encoder states (S, D) in bf16 by source: the frozen encoder's output, computed once per sentence."""


def encode_all(model: Drafter, examples: Sequence[Example], *, batch: int = 128) -> Memories:
    """The frozen encoder over every distinct source, batched by length (bf16 autocast, as in training),
    on the model's device."""
    device = _device(model)
    sources = sorted({e.source for e in examples}, key=len)
    memories: Memories = {}
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        for start in tqdm(range(0, len(sources), batch), desc="encoder", unit="batch", mininterval=5.0):
            chunk = sources[start : start + batch]
            ids, mask = (t.to(device) for t in pad_batch(chunk))
            states = model.encoder(ids, mask).to(torch.bfloat16)  # (B, S, D)
            memories.update((s, states[row, : len(s)].clone()) for row, s in enumerate(chunk))
    return memories


def _memory(sources: Sequence[tuple[int, ...]], memories: Memories) -> torch.Tensor:
    """The batch's cached encoder states, right-padded: (B, S, D)."""
    states = [memories[tuple(source)] for source in sources]  # a loader hands over lists
    padded = torch.zeros(
        (len(sources), max(s.shape[0] for s in states), states[0].shape[1]),
        dtype=states[0].dtype,
        device=states[0].device,
    )
    for row, state in enumerate(states):
        padded[row, : state.shape[0]] = state
    return padded


class PreparedBatch(NamedTuple):
    """One batch's CPU side: padded ids, the drawn noise and the candidates (:func:`prepare`)."""

    sources: list[tuple[int, ...]]  # for the cached encoder states
    source: torch.Tensor  # (B, S)
    source_mask: torch.Tensor  # (B, S)
    target: torch.Tensor  # (B, T)
    canvas_mask: torch.Tensor  # (B, T)
    noise: torch.Tensor  # (B, T) the masked slots
    inputs: torch.Tensor  # (B, T) what the decoder reads
    union: torch.Tensor | None  # (U,) the batch's candidates (None: the whole vocabulary)
    allowed: torch.Tensor | None  # (B, U) each sentence's own
    lengths: torch.Tensor  # (B,) target pieces before the first </s>


def prepare(
    batch: Sequence[Example], shortlist: Shortlist | None, settings: TrainSettings, generator: torch.Generator
) -> PreparedBatch:
    """Pad a batch, draw its noise level and masked slots, gather its candidates: all on the CPU, so
    loader processes can do it while the model trains."""
    source, source_mask = pad_batch([e.source for e in batch])  # (B, S)
    target, canvas_mask = _pad_canvases([e.canvas for e in batch])  # (B, T)
    level = torch.rand((len(batch), 1), generator=generator).clamp_(min=1e-3)  # (B, 1)
    noise = (torch.rand(target.shape, generator=generator) < level) & canvas_mask  # (B, T)
    forced = (torch.rand(target.shape, generator=generator) * canvas_mask).argmax(dim=-1)  # (B,)
    noise[torch.arange(len(batch)), forced] = True  # at least one masked slot per canvas
    union, allowed = _candidates(batch, shortlist)  # (U,), (B, U)
    inputs = torch.where(noise, torch.full_like(target, MASK_ID), target)
    lengths = torch.tensor([e.target_length for e in batch])
    sources = [e.source for e in batch]
    return PreparedBatch(
        sources, source, source_mask, target, canvas_mask, noise, inputs, union, allowed, lengths
    )


def masked_loss(
    model: Drafter,
    batch: Sequence[Example],
    shortlist: Shortlist | None,
    settings: TrainSettings,
    generator: torch.Generator,
    memories: Memories | None = None,
) -> torch.Tensor:
    """The mask-predict loss of one batch (see the module docstring); ``memories`` saves the frozen
    encoder's forward."""
    return prepared_loss(model, prepare(batch, shortlist, settings, generator), settings, memories)


def prepared_loss(
    model: Drafter,
    prepared: PreparedBatch,
    settings: TrainSettings,
    memories: Memories | None = None,
) -> torch.Tensor:
    """:func:`masked_loss` of a prepared batch, on the model's device."""
    device = _device(model)

    p = prepared
    source, source_mask, target, canvas_mask, noise, inputs, lengths = (
        t.to(device, non_blocking=True)
        for t in (p.source, p.source_mask, p.target, p.canvas_mask, p.noise, p.inputs, p.lengths)
    )
    union, allowed = (None if t is None else t.to(device, non_blocking=True) for t in (p.union, p.allowed))
    if memories is not None:
        memory = _memory(prepared.sources, memories)
    else:
        with torch.no_grad():
            memory = model.encoder(source, source_mask)  # frozen: no graph
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.bf16):
        context = model.context_keys_values(memory)
        states, real = model.wanted_states(inputs, canvas_mask, context, source_mask, noise)  # (B, W, D)
        rows, slots = noise.nonzero(as_tuple=True)  # (N,), row-major: the order of states[real]
        logits = model.logits(states[real], union).float()  # (N, U)
    if union is None or allowed is None:  # no shortlist: the whole vocabulary
        wanted = target[rows, slots]
    else:
        logits = logits.masked_fill(~allowed[rows], -math.inf)
        wanted = torch.searchsorted(union, target[rows, slots])  # (N,) index into the union
    losses = torch.nn.functional.cross_entropy(logits, wanted, reduction="none")
    weights = torch.where(slots > lengths[rows], settings.eos_weight, 1.0)
    return (losses * weights).sum() / weights.sum()


class PreparedBatches(torch.utils.data.IterableDataset[PreparedBatch]):
    """Endless prepared batches for loader processes, each drawing its own order and noise."""

    def __init__(
        self, examples: Sequence[Example], shortlist: Shortlist | None, settings: TrainSettings, seed: int
    ) -> None:
        self.examples, self.shortlist, self.settings, self.seed = examples, shortlist, settings, seed

    def __iter__(self) -> Iterator[PreparedBatch]:
        info = torch.utils.data.get_worker_info()
        seed = self.seed + 1000 * (info.id if info is not None else 0)
        generator = torch.Generator().manual_seed(seed)
        for batch in batches(self.examples, self.settings.batch_size, random.Random(seed)):
            yield prepare(batch, self.shortlist, self.settings, generator)


def _prepared_stream(
    examples: Sequence[Example], shortlist: Shortlist | None, settings: TrainSettings, seed: int
) -> Iterator[PreparedBatch]:
    """Prepared batches: in this process (``loader_workers`` 0, reproducible from the seed), or from
    loader processes that keep an accelerator fed."""
    prepared = PreparedBatches(examples, shortlist, settings, seed)
    if settings.loader_workers == 0:
        yield from prepared
        return
    loader = torch.utils.data.DataLoader(
        prepared,
        batch_size=None,
        num_workers=settings.loader_workers,
        prefetch_factor=8,
        pin_memory=torch.cuda.is_available(),
    )
    yield from loader


def _describe(device: torch.device) -> str:
    """``cpu``, or the accelerator's name (e.g. ``NVIDIA H200``), for the model card."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return device.type


def _device(model: Drafter) -> torch.device:
    return model.mask_embedding.device


def _pad_canvases(canvases: Sequence[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(c) for c in canvases)
    target = torch.full((len(canvases), length), EOS_ID, dtype=torch.long)
    mask = torch.zeros((len(canvases), length), dtype=torch.bool)
    for row, canvas in enumerate(canvases):
        target[row, : len(canvas)] = torch.tensor(canvas)
        mask[row, : len(canvas)] = True
    return target, mask


def _candidates(
    batch: Sequence[Example], shortlist: Shortlist | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if shortlist is None:
        return None, None
    own = [np.union1d(shortlist.candidates(e.source), np.asarray(e.canvas)) for e in batch]
    union = np.unique(np.concatenate(own))
    allowed = np.stack([np.isin(union, ids, assume_unique=True) for ids in own])
    return torch.from_numpy(union), torch.from_numpy(allowed)


def learning_rate(settings: TrainSettings, step: int, progress: float) -> float:
    warm = min(1.0, (step + 1) / settings.warmup_steps)
    decay = 1.0 - (1.0 - settings.final_lr_fraction) * min(1.0, progress)
    return settings.peak_lr * warm * decay


def train(
    model: Drafter,
    examples: Sequence[Example],
    shortlist: Shortlist | None,
    settings: TrainSettings,
    work_dir: Path,
    *,
    minutes: float | None,
    steps: int | None = None,
    evaluate: Callable[[Drafter], dict[str, float]] | None = None,
    desc: str = "train",
    device: str = "cpu",
) -> dict[str, Any]:
    """Train (resuming from ``work_dir/checkpoint.pt``) for ``minutes`` more, or ``steps`` more
    optimiser steps, on ``device``. Returns the final state: step, elapsed seconds, the dev curve,
    and the averaged weights (on the CPU; ``evaluate`` gets them there too)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    checkpoint_path = work_dir / "checkpoint.pt"
    params = trainable(model)
    optimizer = torch.optim.AdamW(
        [p for _, p in params], lr=settings.peak_lr, weight_decay=settings.weight_decay
    )
    for parameter in model.frozen_parameters():
        parameter.requires_grad_(False)
    state: dict[str, Any] = {"step": 0, "elapsed": 0.0, "planned": 0.0, "curve": [], "losses": []}
    ema = {n: p.detach().clone() for n, p in params}
    if checkpoint_path.is_file():
        saved = torch.load(checkpoint_path, weights_only=False, map_location=device)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        ema = saved["ema"]
        state = saved["state"]
        log.info("%s: resuming at step %d (%.1f min trained)", desc, state["step"], state["elapsed"] / 60)
    elif (handed := read_hand_off(model, work_dir)) is not None and minutes != 0 and steps != 0:
        weights, state = handed  # a run elsewhere left only its averaged weights: continue from them
        with torch.no_grad():
            for name, parameter in params:
                parameter.copy_(weights[name])
        ema = {n: p.detach().clone() for n, p in params}
        earlier = {
            "step": state["step"],
            "minutes": state["elapsed"] / 60,
            "device": state.get("device", "cpu"),
        }
        if "hardware" in state:  # an exported run's record names its hardware in full
            earlier["hardware"] = state.pop("hardware")
        # a fresh optimiser warms up again; the runs before this one stay on the record
        state |= {
            "losses": [],
            "restarted_at": state["step"],
            "earlier": [*state.get("earlier", []), earlier],
        }
        log.info("%s: continuing from the hand-off at step %d (fresh optimiser)", desc, state["step"])
    state["device"] = _describe(torch.device(device))
    if minutes is not None:
        state["planned"] = state["elapsed"] + 60 * minutes
    last_step = None if steps is None else state["step"] + steps

    def done() -> bool:
        if last_step is not None and state["step"] >= last_step:
            return True
        return minutes is not None and state["elapsed"] >= state["planned"]

    def save() -> None:
        partial = checkpoint_path.with_suffix(".partial")
        torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema, "state": state},
            partial,
        )
        partial.replace(checkpoint_path)
        save_hand_off(work_dir, ema, state)

    memories = {} if done() else encode_all(model, examples)  # an export-only run encodes nothing
    stream = _prepared_stream(examples, shortlist, settings, settings.seed + state["step"])
    total = 60 * minutes if minutes is not None else None
    progress = tqdm(
        total=round(total) if total else steps,
        desc=desc,
        unit="s" if total else "step",
        mininterval=5.0,
    )
    run_started = last_checkpoint = last_eval = time.monotonic()
    elapsed_at_start = state["elapsed"]
    model.train()
    while not done():
        if state["planned"]:
            fraction = state["elapsed"] / state["planned"]
        else:
            fraction = state["step"] / last_step if last_step else 0.0
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(settings, state["step"] - state.get("restarted_at", 0), fraction)
        loss = prepared_loss(model, next(stream), settings, memories)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        optimizer.step()
        decay = min(settings.ema_decay, (1 + state["step"]) / (10 + state["step"]))  # warm-up of the average
        with torch.no_grad():
            for name, parameter in params:
                ema[name].lerp_(parameter.detach(), 1.0 - decay)
        state["step"] += 1
        state["elapsed"] = elapsed_at_start + time.monotonic() - run_started
        state["losses"].append((state["step"], float(loss.detach())))
        progress.update(round(state["elapsed"] - elapsed_at_start) - progress.n if total else 1)
        progress.set_postfix(loss=f"{float(loss.detach()):.3f}", step=state["step"], refresh=False)
        now = time.monotonic()
        if evaluate is not None and now - last_eval >= 60 * settings.eval_minutes:
            model.eval()
            scores = evaluate(averaged(model, ema))
            model.train()
            state["curve"].append({"step": state["step"], "minutes": state["elapsed"] / 60, **scores})
            log.info("%s: dev %s at step %d", desc, scores, state["step"])
            last_eval = time.monotonic()
        if now - last_checkpoint >= 60 * settings.checkpoint_minutes:
            save()
            last_checkpoint = now
    progress.close()
    save()
    model.eval()
    state["averaged"] = averaged(model, ema)
    return state
