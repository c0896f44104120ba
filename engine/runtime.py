"""A loaded model ready to serve: the denoiser, its prompt template and card, and the translation of a
window job into a ``CanvasRequest`` (prompt rendering, context budget, token budget, seed).

Three kinds serve: ``LoadedModel`` (a DiffusionGemma checkpoint),
:class:`engine.translator.CanvasModel` (the embedded translator v2) and
:class:`engine.user_translator.MarianModel` (a Hugging Face Marian checkpoint, decoded greedily,
loaded by ``--translator``); ``load_model`` picks between the first two by what the spec resolves
to. Only the engine worker thread touches a loaded model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, Union

from engine.diffusion.config import GemmaSettings
from engine.diffusion.gemma import DiffusionGemmaDenoiser
from engine.models import (
    ModelCard,
    ResolvedModel,
    eos_ids,
    is_canvas_translator,
    match_language,
    read_card,
    resolve_model,
)
from engine.prompts import PromptTemplate, make_template
from engine.quantize import quantize_int8
from engine.types import CanvasKey, CanvasRequest, Sampler, WindowJob

if TYPE_CHECKING:
    from engine.translator import CanvasModel
    from engine.user_translator import MarianModel

logger = logging.getLogger("livecanvas.engine")


def output_budget(source_tokens: int, canvas_length: int, max_context_tokens: int) -> int:
    """Tokens allowed for a translation: about twice the source, in whole canvas blocks, at least one,
    and at most half the model's context."""
    wanted = max(canvas_length, math.ceil((2 * source_tokens + 8) / canvas_length) * canvas_length)
    return min(wanted, (max_context_tokens // 2) // canvas_length * canvas_length or canvas_length)


@dataclass
class LoadedModel:
    resolved: ResolvedModel
    denoiser: DiffusionGemmaDenoiser
    template: PromptTemplate
    card: ModelCard
    tokenizer: Any
    seed: int = 0

    def request_for(self, job: WindowJob) -> CanvasRequest:
        """The canvas request for a window: budgeted prompt, output budget in whole blocks, stable seed."""
        source_tokens = len(self.tokenizer.encode(job.source, add_special_tokens=False))
        max_new_tokens = output_budget(
            source_tokens, self.denoiser.canvas_length, self.denoiser.max_context_tokens
        )
        prompt = self.template.render(
            source=job.source,
            context=job.context,
            source_lang=job.source_lang,
            target_lang=match_language(job.target_lang, self.card.target_languages) or job.target_lang,
            budget=self.denoiser.max_context_tokens - max_new_tokens,
        )
        return CanvasRequest(
            key=job.key,
            prompt_ids=tuple(prompt),
            max_new_tokens=max_new_tokens,
            seed=job.seed(self.seed),
            diffusion=job.diffusion or self.card.diffusion,
            early_exit=job.early_exit or self.card.early_exit,
            submitted_ns=job.submitted_ns,
            provisional=job.provisional,
        )


ServingModel: TypeAlias = Union["LoadedModel", "CanvasModel", "MarianModel"]

WARM_UP_KEY = CanvasKey("livecanvas-warm-up", "warm-up", 0)


def warm_up(model: ServingModel) -> None:
    """Run one window per direction through the model, so that lazy initialisation is not paid by
    the first user."""
    denoiser = model.denoiser
    for source_lang, target_lang in model.card.pairs or (("en", "en"),):
        job = WindowJob(WARM_UP_KEY, "Warm-up.", (), source_lang, target_lang, submitted_ns=0)
        request = model.request_for(job)
        seq_id = -1
        denoiser.start(seq_id, request)
        try:
            for remaining in (2, 1):
                denoiser.step([seq_id], [remaining])
        finally:
            denoiser.release(seq_id)


def load_model(
    spec: str | None,
    *,
    device: str = "cpu",
    dtype: str = "auto",
    seed: int = 0,
    sampler: Sampler = "fast",
    int8: bool | None = None,
    edit_in_place: bool = True,
) -> ServingModel:
    """Resolve ``spec`` offline and load it: a canvas translator (:mod:`engine.translator`), or a
    DiffusionGemma checkpoint with ``from_pretrained``. For DiffusionGemma, ``sampler`` goes to the
    denoiser; ``int8`` quantises the model's linear layers dynamically (CPU; faster, but activations
    are scaled per batch, so results then depend on the batch and differ from ``generate()``'s). None:
    the model's default (for DiffusionGemma off; for the canvas translator see ``load_canvas_model``).
    ``edit_in_place`` False: the canvas translator starts a window whose source changed from a blank
    canvas (DiffusionGemma always does)."""
    import torch
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion

    resolved = resolve_model(spec)
    if is_canvas_translator(resolved.path):
        from engine.translator import load_canvas_model

        if device != "cpu":
            logger.warning(
                "--device applies to DiffusionGemma checkpoints; the canvas translator runs on the CPU"
            )
        return load_canvas_model(resolved, seed=seed, int8=int8, edit_in_place=edit_in_place)
    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    model_class: Any = DiffusionGemmaForBlockDiffusion
    model = model_class.from_pretrained(resolved.path, dtype=torch_dtype, local_files_only=True)
    model = model.to(device).eval()
    if int8:
        model = quantize_int8(model)
    logger.info("translator on %s: %s sampler, int8 %s", device, sampler, "on" if int8 else "off")
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
    card = read_card(resolved.path, tokenizer, model.generation_config)
    denoiser = DiffusionGemmaDenoiser(
        model,
        tokenizer,
        eos_token_ids=eos_ids(model.generation_config, model.config.get_text_config()),
        settings=GemmaSettings.of(model.generation_config),
        sampler=sampler,
    )
    return LoadedModel(
        resolved=resolved,
        denoiser=denoiser,
        template=make_template(card.prompt_kind, tokenizer),
        card=card,
        tokenizer=tokenizer,
        seed=seed,
    )
