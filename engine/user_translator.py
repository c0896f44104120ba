"""A user's own Marian translator (``serve --translator DIR``): its spec, its language pair, and the
serving model that turns a window job into a request for :class:`engine.marian_greedy.MarianGreedyDenoiser`.

A spec is ``DIR`` or ``DIR:SRC:TGT``. ``DIR`` is a Hugging Face ``MarianMTModel`` checkpoint on disk (a
``save_pretrained`` directory, such as the snapshot directory of an opus-mt download in the local hub
cache) or a Hugging Face id already in that cache (``Helsinki-NLP/opus-mt-es-en``); nothing is ever
downloaded. Its language pair comes from the checkpoint where it says it: the tokenizer's
``source_lang``/``target_lang`` (opus-mt's ``tokenizer_config.json``), else an ``opus-mt-SRC-TGT`` name
(the checkpoint's ``_name_or_path`` or the directory). ``:SRC:TGT`` names the pair itself and overrides
both; a checkpoint whose pair cannot be read, or whose target names a group of languages (opus-mt's
multi-target models such as ``en-ROMANCE``), needs it. Where the vocabulary has a ``>>TGT<<`` token
(multi-target models), the source is prefixed with it.

``DIR`` may also be an export of ``livecanvas train --teacher`` (:mod:`engine.training.teacher_recipe`:
the checkpoint in ``teacher/`` with its canvas drafter): its pair is its card's, and it is served by the
canvas backend (:func:`load_drafted`), the drafter drafting and the checkpoint verifying every final.

A window's request is the source's pieces (with ``</s>``), an output budget of about twice the source
(:func:`engine.runtime.output_budget`), one decoding step per token (``max_denoising_steps`` = the
block length) and drafts every :data:`DRAFT_EVERY` tokens.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError, ModelResolutionError
from engine.models import ModelCard, ResolvedModel, resolve_model
from engine.types import CanvasRequest, DiffusionParams, EarlyExitParams, WindowJob

if TYPE_CHECKING:
    from engine.marian_greedy import MarianGreedyDenoiser
    from engine.translator import CanvasModel

logger = logging.getLogger("livecanvas.engine")

DRAFT_EVERY = 4
"""Tokens between two drafts of a window (the greedy prefix as it grows)."""

_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_OPUS_NAME = re.compile(r"opus-mt-(?:tc-big-|tc-base-)?([A-Za-z]{2,3})-([A-Za-z]{2,3})(?:$|[^A-Za-z])")


@dataclass(frozen=True, slots=True)
class TranslatorSpec:
    """A parsed ``--translator`` value: where the checkpoint is, and the pair given with it (if any)."""

    location: str
    pair: tuple[str, str] | None = None

    @classmethod
    def parse(cls, value: str) -> TranslatorSpec:
        """``DIR`` or ``DIR:SRC:TGT``; ``ValueError`` for a pair that is not two language tags."""
        if Path(value).expanduser().is_dir() or value.count(":") < 2:
            return cls(value)
        location, source, target = value.rsplit(":", 2)
        for tag in (source, target):
            if not _TAG.match(tag):
                raise ValueError(
                    f"--translator {value!r}: {tag!r} is not a language tag (expected DIR or DIR:SRC:TGT, "
                    "e.g. ./opus-mt-es-en:es:en)"
                )
        return cls(location, (source, target))


def is_marian_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds a Hugging Face Marian checkpoint (its config's ``model_type``)."""
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return bool(json.loads(config.read_text()).get("model_type") == "marian")
    except (OSError, ValueError):
        return False


def checkpoint_pair(
    path: Path, tokenizer_config: dict[str, Any], config: dict[str, Any]
) -> tuple[str, str] | None:
    """The pair the checkpoint names: its tokenizer's languages, else an opus-mt name; None when
    neither says, or when the target is a group of languages rather than one."""
    source, target = tokenizer_config.get("source_lang"), tokenizer_config.get("target_lang")
    if not (isinstance(source, str) and isinstance(target, str)):
        for name in (str(config.get("_name_or_path", "")), *(p.name for p in (path, *path.parents))):
            found = _OPUS_NAME.search(name.split("--")[-1] if "--" in name else name)
            if found:
                source, target = found.group(1), found.group(2)
                break
        else:
            return None
    if not (_TAG.match(source) and _TAG.match(target)) or target.isupper() or source.isupper():
        return None  # a group such as ROMANCE: its members need >>xx<< tokens the user must pick
    return source, target


def describe_spec(spec: TranslatorSpec) -> tuple[Path, tuple[str, str]]:
    """Where ``spec``'s checkpoint (or export with a drafter) is and the pair it serves, without
    loading its weights (``livecanvas models``; the server's start-up through
    :func:`load_user_translator`)."""
    path = Path(spec.location).expanduser()
    if not (path.is_dir() and is_drafted(path)):
        path = resolve_model(spec.location).path
    if is_drafted(path):
        from engine.translator import DirectionCard

        card = DirectionCard.read(path)
        return path, spec.pair or (card.source, card.target)
    if not is_marian_checkpoint(path):
        raise ModelResolutionError(
            f"--translator {spec.location}: {path} is not a Hugging Face Marian checkpoint "
            "(its config.json has no model_type 'marian')"
        )
    tokenizer_config = _read_json(path / "tokenizer_config.json")
    pair = spec.pair or checkpoint_pair(path, tokenizer_config, _read_json(path / "config.json"))
    if pair is None:
        raise ModelResolutionError(
            f"--translator {spec.location}: the checkpoint does not say which languages it translates "
            f"(no source_lang/target_lang in its tokenizer config, no opus-mt-SRC-TGT name, or a target "
            f"group); give them: --translator {spec.location}:SRC:TGT"
        )
    return path, pair


@dataclass
class MarianModel:
    """A loaded user translator: one direction, its greedy backend, and window jobs to requests. Only
    the engine thread that owns it uses it."""

    resolved: ResolvedModel
    denoiser: MarianGreedyDenoiser
    card: ModelCard
    tokenizer: Any
    target_prefix: str = ""  # ">>por<< " for a multi-target checkpoint, else empty
    seed: int = 0

    def request_for(self, job: WindowJob) -> CanvasRequest:
        from engine.runtime import output_budget

        if not self.card.serves(job.source_lang, job.target_lang):
            raise EngineError(
                f"model {self.card.name} translates {self.card.describe()} only, "
                f"not {job.source_lang} -> {job.target_lang}"
            )
        prompt = tuple(self.tokenizer(self.target_prefix + job.source)["input_ids"])
        denoiser = self.denoiser
        if len(prompt) > denoiser.max_context_tokens:
            raise EngineError(
                f"the window has {len(prompt)} source tokens, "
                f"over this translator's {denoiser.max_context_tokens}"
            )
        budget = output_budget(len(prompt), denoiser.canvas_length, 2 * denoiser.rules.max_new_tokens)
        return CanvasRequest(
            key=job.key,
            prompt_ids=prompt,
            max_new_tokens=budget,
            seed=job.seed(self.seed),
            diffusion=DiffusionParams(max_denoising_steps=denoiser.canvas_length),  # a token a step
            early_exit=job.early_exit or self.card.early_exit,
            submitted_ns=job.submitted_ns,
            provisional=job.provisional,
        )


def is_drafted(path: Path) -> bool:
    """Whether ``path`` is an export of ``livecanvas train --teacher``: a checkpoint with its drafter."""
    from engine.diffusion.marian_canvas import DRAFTER_WEIGHTS

    return (path / DRAFTER_WEIGHTS).is_file()


def load_user_translator(
    spec: TranslatorSpec, *, device: str = "cpu", seed: int = 0
) -> MarianModel | CanvasModel:
    """Resolve ``spec`` offline and load the checkpoint in float32 on ``device``: greedy, or, for an
    export of ``livecanvas train --teacher``, its drafter with the teacher verifying every canvas."""
    from transformers import AutoTokenizer, MarianMTModel

    from engine.marian_greedy import GreedyRules, MarianGreedyDenoiser

    path, (source, target) = describe_spec(spec)
    if is_drafted(path):
        return load_drafted(spec, path, (source, target), device=device, seed=seed)
    model: Any = MarianMTModel.from_pretrained(path, local_files_only=True)
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    target_prefix = target_prefix_of(tokenizer, target)
    rules = GreedyRules.of(model.generation_config, model.config)
    name = name_of(path, spec)
    card = ModelCard(
        name=name,
        prompt_kind="source",
        trained=True,
        diffusion=DiffusionParams(),
        early_exit=EarlyExitParams(draft_step=DRAFT_EVERY, redraft_every=DRAFT_EVERY),
        target_languages=(target,),
        pairs=((source, target),),
    )
    logger.info("translator %s (%s -> %s, greedy, Marian) from %s", name, source, target, path)
    resolved = ResolvedModel(spec.location, path)
    return MarianModel(
        resolved, MarianGreedyDenoiser(model, tokenizer, rules), card, tokenizer, target_prefix, seed
    )


def load_drafted(
    spec: TranslatorSpec, path: Path, pair: tuple[str, str], *, device: str, seed: int
) -> CanvasModel:
    """An export of ``livecanvas train --teacher`` (checked against its ``SHA256SUMS``) as a canvas
    model: its drafter fills canvases, its teacher (``teacher/``) verifies them, so finals are the
    teacher's greedy translations."""
    from transformers import AutoTokenizer, MarianMTModel

    from engine.diffusion.canvas_denoiser import CanvasDenoiser, Direction
    from engine.diffusion.marian_canvas import (
        DRAFTER_WEIGHTS,
        TEACHER_DIR,
        MarianCanvasDrafter,
        MarianPieces,
        MarianVerifier,
    )
    from engine.marian_greedy import GreedyRules
    from engine.models import verified
    from engine.translator import CanvasModel, DirectionCard

    verified(path)
    card = replace(DirectionCard.read(path), source=pair[0], target=pair[1])
    teacher: Any = MarianMTModel.from_pretrained(path / TEACHER_DIR, local_files_only=True)
    if device != "cpu":
        logger.warning("--device applies to greedy Marian translators; %s runs on the CPU", path.name)
    teacher = teacher.eval()
    tokenizer = AutoTokenizer.from_pretrained(path / TEACHER_DIR, local_files_only=True)
    rules = GreedyRules.of(teacher.generation_config, teacher.config)
    drafter = MarianCanvasDrafter.load(path / DRAFTER_WEIGHTS, teacher, rules.banned)
    direction = Direction(
        card.name,
        drafter,
        MarianPieces(tokenizer, target_prefix_of(tokenizer, pair[1])),
        None,
        card.settings,
        verifier=MarianVerifier.of(teacher, rules) if card.verify else None,
    )
    model_card = ModelCard(
        name=card.name,
        prompt_kind="source",
        trained=True,
        diffusion=card.diffusion,
        early_exit=card.early_exit,
        target_languages=(pair[1],),
        pairs=(pair,),
    )
    logger.info("translator %s (%s -> %s, canvas drafter, teacher-verified) from %s", card.name, *pair, path)
    denoiser = CanvasDenoiser([direction])
    return CanvasModel(ResolvedModel(spec.location, path), denoiser, model_card, [card], seed)


def target_prefix_of(tokenizer: Any, target: str) -> str:
    """``">>TGT<< "`` where the vocabulary has that token (a multi-target checkpoint), else empty."""
    prefix = f">>{target}<<"
    codes = getattr(tokenizer, "supported_language_codes", None) or []
    return f"{prefix} " if prefix in codes else ""


def name_of(path: Path, spec: TranslatorSpec) -> str:
    """A readable name: the hub id of a cache snapshot (``models--A--B/snapshots/x``), else the directory."""
    for part in path.parts:
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    return path.name or spec.location


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}
