"""Training the translator: model config, examples, the uniform-state diffusion objective, the loop.

This module owns how a DiffusionGemma checkpoint learns to translate caption windows:

* an example is a prompt (the tagged template: optional previous pair as context, the English source,
  the target language tag, plus the target's earlier blocks for a multi-block target) and one canvas
  block of the teacher's Portuguese, closed by ``<eos>`` and padded;
* the objective is DiffusionGemma's: each canvas is corrupted by replacing tokens with uniformly drawn
  vocabulary tokens at a rate ``t`` sampled per example (``U(0, 1)`` in DiffusionGemma; here
  ``U(noise_floor, 1)``, 0.5 by default: a small model on a CPU budget otherwise learns to denoise
  from the visible canvas long before it learns to use the source), and the decoder is trained with
  cross-entropy on the clean canvas (padding after ``<eos>`` down-weighted); on half the batches the
  decoder first runs without gradient and its logits are fed back as the self-conditioning signal,
  as at inference;
* the loop checkpoints model, optimiser, schedule and data order every few minutes (atomic replace),
  so a run stopped anywhere resumes exactly where it left off, and logs JSON lines.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from engine.diffusion.config import text_only_config
from engine.embedded import BOS_ID, EOS_ID, PAD_ID
from engine.errors import EngineError
from engine.prompts import ContextEntry, TaggedTemplate

SOURCE_LANG, TARGET_LANG = "en", "pt-BR"
PROMPT_BUDGET = 160


@dataclass(frozen=True, slots=True)
class ModelSize:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    num_experts: int
    moe_intermediate_size: int
    canvas_length: int


FULL_SIZE = ModelSize(8000, 256, 4, 4, 2, 64, 512, 2, 256, 32)
DRY_RUN_SIZE = ModelSize(700, 64, 2, 2, 1, 32, 128, 2, 64, 16)


@dataclass(frozen=True, slots=True)
class TrainSettings:
    batch_size: int = 64
    learning_rate: float = 1.5e-3
    warmup_steps: int = 300
    max_steps: int = 6000
    weight_decay: float = 0.01
    self_conditioning_rate: float = 0.5
    noise_floor: float = 0.5  # corruption rates are drawn from U(noise_floor, 1)
    context_rate: float = 0.4
    checkpoint_minutes: float = 5.0
    eval_minutes: float = 15.0
    seed: int = 20261127


def build_model(size: ModelSize, *, seed: int) -> Any:
    """A freshly initialised text-only DiffusionGemma of ``size`` (minimal vision tower)."""
    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        DiffusionGemmaGenerationConfig,
        EntropyBoundSamplerConfig,
    )

    layer_types = ["sliding_attention", "full_attention"] * (size.num_hidden_layers // 2)
    text_settings: dict[str, Any] = dict(
        vocab_size=size.vocab_size,
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        head_dim=size.head_dim,
        global_head_dim=size.head_dim,
        num_experts=size.num_experts,
        top_k_experts=1,
        moe_intermediate_size=size.moe_intermediate_size,
        sliding_window=512,
        layer_types=layer_types,
        max_position_embeddings=1024,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
    )
    config = text_only_config(
        text_settings, canvas_length=size.canvas_length, image_token_ids=(PAD_ID, PAD_ID, PAD_ID)
    )
    torch.manual_seed(seed)
    model: Any = DiffusionGemmaForBlockDiffusion(config)
    generation_config: Any = DiffusionGemmaGenerationConfig
    model.generation_config = generation_config(
        max_new_tokens=4 * size.canvas_length,
        max_denoising_steps=16,
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=0.5),
        t_min=0.1,
        t_max=0.4,
        stability_threshold=1,
        confidence_threshold=0.05,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    return model


@dataclass(frozen=True, slots=True)
class Example:
    prompt: tuple[int, ...]
    canvas: tuple[int, ...]


def make_examples(
    rows: Sequence[dict[str, Any]],
    targets: dict[str, str],
    tokenizer: Any,
    canvas_length: int,
    *,
    context_rate: float,
    seed: int,
) -> list[Example]:
    """One example per canvas block of every sentence's teacher translation.

    With probability ``context_rate`` the previous sentence of the same document and its teacher
    translation are given as context, the way the service passes earlier windows of a track.
    """
    template = TaggedTemplate(tokenizer)
    rng = random.Random(seed)
    previous: dict[str, tuple[str, str]] = {}
    examples: list[Example] = []
    for row in rows:
        target = targets.get(str(row["id"]))
        if target is None:
            continue
        doc = str(row["doc"])
        context: list[ContextEntry] = []
        before = previous.get(doc)
        if before is not None and rng.random() < context_rate:
            context.append(ContextEntry(source=before[0], target=before[1]))
        previous[doc] = (str(row["text"]), target)
        try:
            prompt = template.render(
                source=str(row["text"]),
                context=context,
                source_lang=SOURCE_LANG,
                target_lang=TARGET_LANG,
                budget=PROMPT_BUDGET,
            )
        except EngineError:
            continue  # a freak sentence (symbols split into bytes): skipped, not truncated
        examples.extend(blocks_of(prompt, tokenizer.encode(target, add_special_tokens=False), canvas_length))
    return examples


def blocks_of(prompt: Sequence[int], target: Sequence[int], canvas_length: int) -> list[Example]:
    """Split ``target + <eos>`` into canvas blocks; block ``b``'s prompt ends with blocks ``0..b-1``."""
    full = [*target, EOS_ID]
    examples = []
    for start in range(0, len(full), canvas_length):
        block = full[start : start + canvas_length]
        block += [PAD_ID] * (canvas_length - len(block))
        examples.append(Example(tuple([*prompt, *full[:start]]), tuple(block)))
    return examples


def collate(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """Left-pad prompts; positions count real tokens only, so each row matches its unpadded self."""
    width = max(len(e.prompt) for e in examples)
    prompt = torch.full((len(examples), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        prompt[row, width - len(example.prompt) :] = torch.tensor(example.prompt)
        mask[row, width - len(example.prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    canvas = torch.tensor([e.canvas for e in examples], dtype=torch.long)
    lengths = mask.sum(-1, keepdim=True)
    canvas_positions = lengths + torch.arange(canvas.shape[1])[None, :]
    return {
        "prompt": prompt,
        "mask": mask,
        "positions": positions,
        "canvas": canvas,
        "canvas_positions": canvas_positions,
    }


def diffusion_logits(
    model: Any, batch: dict[str, torch.Tensor], noisy: torch.Tensor, **extra: Any
) -> torch.Tensor:
    decoder_mask = torch.cat([batch["mask"], torch.ones_like(noisy)], dim=1)
    out = model(
        input_ids=batch["prompt"],
        attention_mask=batch["mask"],
        position_ids=batch["positions"],
        decoder_input_ids=noisy,
        decoder_attention_mask=decoder_mask,
        decoder_position_ids=batch["canvas_positions"],
        **extra,
    )
    logits: torch.Tensor = out.logits
    return logits


def corrupt(
    canvas: torch.Tensor, vocab_size: int, generator: torch.Generator, *, noise_floor: float = 0.0
) -> torch.Tensor:
    """Uniform-state corruption: each token replaced by a uniform draw with a per-row rate
    t ~ U(noise_floor, 1)."""
    rate = noise_floor + (1 - noise_floor) * torch.rand((canvas.shape[0], 1), generator=generator)
    replace = torch.rand(canvas.shape, generator=generator) < rate
    noise = torch.randint(0, vocab_size, canvas.shape, generator=generator)
    return torch.where(replace, noise, canvas)


PAD_WEIGHT = 0.05
"""Loss weight of the padding after ``<eos>``: the engine cuts the canvas at the first ``<eos>``, so those
positions only need to stay out of the way; at full weight they dominate the loss and the model learns
to predict padding everywhere before it learns to translate."""


def diffusion_loss(
    model: Any,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator,
    *,
    self_condition: bool,
    noise_floor: float = 0.0,
) -> torch.Tensor:
    vocab_size = model.config.text_config.vocab_size
    clean = batch["canvas"]
    noisy = corrupt(clean, vocab_size, generator, noise_floor=noise_floor)
    extra: dict[str, Any] = {}
    if self_condition:
        with torch.no_grad():
            extra["self_conditioning_logits"] = diffusion_logits(model, batch, noisy).detach()
    logits = diffusion_logits(model, batch, noisy, **extra)
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, vocab_size), clean.reshape(-1), reduction="none"
    ).view_as(clean)
    weights = torch.where(clean == PAD_ID, PAD_WEIGHT, 1.0)
    return (per_token * weights).sum() / weights.sum()


def length_batches(examples: Sequence[Example], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar prompt length (little padding), in shuffled order."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    pools = [order[i : i + batch_size * 50] for i in range(0, len(order), batch_size * 50)]
    batches: list[list[int]] = []
    for pool in pools:
        pool.sort(key=lambda i: len(examples[i].prompt))
        batches.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
    rng.shuffle(batches)
    return batches


def learning_rate(step: int, settings: TrainSettings) -> float:
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = min(1.0, (step - settings.warmup_steps) / max(1, settings.max_steps - settings.warmup_steps))
    return settings.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    model: Any,
    examples: Sequence[Example],
    settings: TrainSettings,
    work_dir: Path,
    *,
    minutes: float | None = None,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Train until ``settings.max_steps`` or ``minutes`` of this run; resumes from ``work_dir``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path, log_path = work_dir / "checkpoint.pt", work_dir / "log.jsonl"
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    state: dict[str, Any] = {"step": 0, "epoch": 0, "position": 0, "seconds": 0.0, "tokens": 0}
    if checkpoint_path.is_file():
        saved = torch.load(checkpoint_path, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        generator = torch.Generator().manual_seed(settings.seed)
        generator.set_state(saved["generator"])
    else:
        generator = torch.Generator().manual_seed(settings.seed)
    model.train()
    started = time.monotonic()
    last_checkpoint = last_eval = started
    batches = length_batches(examples, settings.batch_size, random.Random(settings.seed + state["epoch"]))
    progress = tqdm(total=settings.max_steps, initial=state["step"], desc="train", unit="step")
    coin = random.Random(settings.seed * 7 + state["step"])

    def save() -> None:
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "state": state,
            "generator": generator.get_state(),
        }
        partial = checkpoint_path.with_suffix(".partial")
        torch.save(payload, partial)
        partial.replace(checkpoint_path)

    def log(record: dict[str, Any]) -> None:
        with log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    while state["step"] < settings.max_steps and (
        minutes is None or time.monotonic() - started < minutes * 60
    ):
        if state["position"] >= len(batches):
            state["epoch"] += 1
            state["position"] = 0
            batches = length_batches(
                examples, settings.batch_size, random.Random(settings.seed + state["epoch"])
            )
        batch = collate([examples[i] for i in batches[state["position"]]])
        tick = time.monotonic()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(state["step"], settings)
        loss = diffusion_loss(
            model,
            batch,
            generator,
            self_condition=coin.random() < settings.self_conditioning_rate,
            noise_floor=settings.noise_floor,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        elapsed = time.monotonic() - tick
        tokens = int(batch["mask"].sum()) + batch["canvas"].numel()
        state["step"] += 1
        state["position"] += 1
        state["seconds"] += elapsed
        state["tokens"] += tokens
        progress.update()
        progress.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens / elapsed:.0f}")
        if state["step"] % 20 == 0 or state["step"] == settings.max_steps:
            log(
                {
                    "step": state["step"],
                    "loss": loss.item(),
                    "tokens_per_s": tokens / elapsed,
                    "train_seconds": state["seconds"],
                    "tokens": state["tokens"],
                    "lr": learning_rate(state["step"], settings),
                }
            )
        now = time.monotonic()
        if evaluate is not None and now - last_eval >= settings.eval_minutes * 60:
            model.eval()
            scores = evaluate(model)
            model.train()
            log(
                {
                    "step": state["step"],
                    "train_seconds": state["seconds"],
                    "tokens": state["tokens"],
                    "dev": scores,
                }
            )
            last_eval = time.monotonic()
        if now - last_checkpoint >= settings.checkpoint_minutes * 60:
            save()
            last_checkpoint = time.monotonic()
    progress.close()
    save()
    model.eval()
    return dict(state) | {"settings": asdict(settings)}
