"""Evaluating the translator: translate through the service's own engine, score with sacrebleu.

This module owns the quality figures of the model card. Sentences go through the same scheduler and
batched denoiser as the live service (so the *draft* is the early-exit result a viewer sees first and
the *final* is what adaptive stopping settles on), with the number of denoising steps fixed (1, 2, 4,
8, 16: every step is run) or adaptive. chrF and BLEU come from sacrebleu, against the teacher's
outputs and against human references.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.diffusion.gemma import DiffusionGemmaDenoiser, Sampler
from engine.models import diffusion_defaults, eos_ids
from engine.prompts import ContextEntry, TaggedTemplate
from engine.runtime import output_budget
from engine.scheduler import Scheduler, advance
from engine.types import CanvasKey, CanvasRequest, DiffusionParams, Draft, EarlyExitParams, Final

FIXED_STEPS = (1, 2, 4, 8, 16)
NEVER_CONFIDENT = 1e-30  # a confidence threshold no mean entropy reaches: every step runs


@dataclass(frozen=True, slots=True)
class Translation:
    draft: str
    final: str
    steps: int
    draft_steps: int


def translate(
    model: Any,
    tokenizer: Any,
    sources: Sequence[tuple[str, Sequence[ContextEntry]]],
    *,
    diffusion: DiffusionParams,
    early_exit: EarlyExitParams,
    source_lang: str = "en",
    target_lang: str = "pt-BR",
    max_batch: int = 64,
    seed: int = 0,
    sampler: Sampler = "exact",
) -> list[Translation]:
    """Translate every source (with its context) through the continuous-batching engine."""
    import torch

    text_config = model.config.get_text_config()
    denoiser = DiffusionGemmaDenoiser(
        model, tokenizer, eos_token_ids=eos_ids(model.generation_config, text_config), sampler=sampler
    )
    template = TaggedTemplate(tokenizer)
    scheduler = Scheduler(
        canvas_length=denoiser.canvas_length,
        eos_token_ids=denoiser.eos_token_ids,
        decode=denoiser.decode,
        max_batch=max_batch,
    )
    for index, (source, context) in enumerate(sources):
        budget = output_budget(
            len(tokenizer.encode(source, add_special_tokens=False)),
            denoiser.canvas_length,
            denoiser.max_context_tokens,
        )
        prompt = template.render(
            source=source,
            context=context,
            source_lang=source_lang,
            target_lang=target_lang,
            budget=denoiser.max_context_tokens - budget,
        )
        scheduler.add(
            CanvasRequest(
                key=CanvasKey("eval", target_lang, index),
                prompt_ids=tuple(prompt),
                max_new_tokens=budget,
                seed=seed + index,
                diffusion=diffusion,
                early_exit=early_exit,
            )
        )
    drafts: dict[int, Draft] = {}
    finals: dict[int, Final] = {}
    with torch.inference_mode():
        while not scheduler.idle:
            for event in advance(scheduler, denoiser)[2]:
                if isinstance(event, Final):
                    finals[event.key.window] = event
                else:
                    drafts.setdefault(event.key.window, event)
    out = []
    for index in range(len(sources)):
        final = finals[index]
        draft = drafts.get(index)
        out.append(
            Translation(
                draft=draft.text if draft else final.text,
                final=final.text,
                steps=final.steps,
                draft_steps=draft.steps if draft else final.steps,
            )
        )
    return out


def scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    import sacrebleu

    return {
        "chrf": round(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score, 2),
        "bleu": round(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score, 2),
    }


def step_settings(model: Any) -> dict[str, DiffusionParams]:
    """Fixed step counts (every step runs) and the checkpoint's own adaptive setting."""
    adaptive = diffusion_defaults(model.generation_config)
    fixed = {
        str(n): replace(adaptive, max_denoising_steps=n, confidence_threshold=NEVER_CONFIDENT)
        for n in FIXED_STEPS
    }
    return fixed | {"adaptive": adaptive}


def quality_table(
    model: Any,
    tokenizer: Any,
    sets: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    early_exit: EarlyExitParams,
) -> list[dict[str, Any]]:
    """One row per step setting: draft and final chrF/BLEU on every ``(sources, references)`` set,
    mean steps per window and seconds per sentence (batched, this machine)."""
    rows = []
    for name, params in step_settings(model).items():
        row: dict[str, Any] = {"steps": name}
        for set_name, (sources, references) in sets.items():
            start = time.perf_counter()
            result = translate(
                model, tokenizer, [(s, ()) for s in sources], diffusion=params, early_exit=early_exit
            )
            elapsed = time.perf_counter() - start
            row[set_name] = {
                "final": scores([r.final for r in result], references),
                "draft": scores([r.draft for r in result], references),
                "mean_steps": round(sum(r.steps for r in result) / len(result), 2),
                "mean_draft_steps": round(sum(r.draft_steps for r in result) / len(result), 2),
                "seconds_per_sentence": round(elapsed / len(result), 4),
            }
        rows.append(row)
    return rows
