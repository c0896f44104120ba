"""Model resolution and loading, offline: a ``--model`` spec to a ready ``LoadedModel``.

Specs:

* ``embedded`` (the default): livecanvas's own translator v2 shipped in the package (``engine/models/``,
  one canvas-translator checkpoint per direction, made by ``livecanvas train``;
  :mod:`engine.translator`), or the untrained placeholder where none is shipped;
* ``placeholder``: the untrained placeholder (random weights, byte-level tokenizer), created in the
  local cache if missing: fast and deterministic, for development and tests of the machinery;
* a local directory holding a ``save_pretrained`` checkpoint;
* a Hugging Face id (``google/diffusiongemma-26B-A4B-it``) already in the local Hugging Face cache.
  Nothing is ever downloaded: resolution uses ``local_files_only``, and ``HF_HUB_OFFLINE=1`` is honoured.

DiffusionGemma checkpoints load through ``from_pretrained``. A directory with a ``SHA256SUMS`` file (the
shipped translator has one) is verified against it first and refused if anything differs. A checkpoint
may carry ``livecanvas.json``
(prompt kind, early-exit defaults); without it, a tokenizer with a chat template gets the chat prompt
and any other the tagged one. Diffusion defaults come from the checkpoint's generation config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.embedded import ensure_embedded
from engine.errors import ModelResolutionError
from engine.types import DiffusionParams, EarlyExitParams

EMBEDDED_SPEC = "embedded"
PLACEHOLDER_SPEC = "placeholder"
PACKAGED_MODELS = ("livecanvas-en-ptbr-v2", "livecanvas-ptbr-en-v2")
CANVAS_WEIGHTS = "canvas.safetensors"  # what marks a canvas-translator checkpoint (engine.translator)


def packaged_models_dir() -> Path:
    """Where the trained translators ship inside the package, one directory per direction."""
    return Path(__file__).resolve().parent / "models"


def packaged_model_dirs() -> list[Path]:
    return [packaged_models_dir() / name for name in PACKAGED_MODELS]


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    spec: str
    path: Path


def resolve_model(spec: str | None, *, cache_dir: Path | None = None) -> ResolvedModel:
    """Map a model spec to a checkpoint directory on disk, or raise ``ModelResolutionError``."""
    spec = spec or EMBEDDED_SPEC
    if spec == EMBEDDED_SPEC and any((d / CANVAS_WEIGHTS).is_file() for d in packaged_model_dirs()):
        return ResolvedModel(spec, packaged_models_dir())
    if spec in (EMBEDDED_SPEC, PLACEHOLDER_SPEC):
        return ResolvedModel(spec, ensure_embedded(cache_dir))
    candidate = Path(spec).expanduser()
    if candidate.is_dir():
        if is_canvas_translator(candidate):
            return ResolvedModel(spec, candidate)  # verified direction by direction when loaded
        if not (candidate / "config.json").is_file():
            raise ModelResolutionError(
                f"{candidate} is a directory but holds no checkpoint (config.json or {CANVAS_WEIGHTS})"
            )
        return ResolvedModel(spec, verified(candidate))
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return ResolvedModel(spec, _from_hub_cache(spec))
    raise ModelResolutionError(
        f"model {spec!r} is neither 'embedded', an existing checkpoint directory, nor a Hugging Face id"
    )


def is_canvas_translator(path: Path) -> bool:
    """Whether ``path`` is a canvas-translator checkpoint or a directory of them."""
    return (path / CANVAS_WEIGHTS).is_file() or any((c / CANVAS_WEIGHTS).is_file() for c in path.iterdir())


def verified(directory: Path) -> Path:
    """``directory``, after checking it against its ``SHA256SUMS`` where it has one."""
    from engine.training.export import CHECKSUM_FILE, verify_checksums

    if (directory / CHECKSUM_FILE).is_file():
        problems = verify_checksums(directory)
        if problems:
            raise ModelResolutionError(
                f"checkpoint {directory} failed its checksum check ({'; '.join(problems)}); "
                "reinstall livecanvas "
                "or re-export the model with `livecanvas train`"
            )
    return directory


def _from_hub_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        raise ModelResolutionError(
            f"{repo_id} is not in the local Hugging Face cache and livecanvas never downloads models; "
            f"fetch it on a connected machine (`hf download {repo_id}`) and copy the cache, "
            "or pass a directory"
        ) from None


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What livecanvas needs to know about a checkpoint beyond its transformers config."""

    name: str
    prompt_kind: str
    trained: bool
    diffusion: DiffusionParams
    early_exit: EarlyExitParams
    target_languages: tuple[str, ...] = ()  # empty: any language the prompt can name
    pairs: tuple[tuple[str, str], ...] = ()  # (source, target) directions; empty: any source

    def serves(self, source_lang: str, target: str) -> bool:
        """Whether a ``source_lang`` stream can get a ``target`` track from this model."""
        if not self.pairs:
            return match_language(target, self.target_languages) is not None
        return any(
            match_language(source_lang, (source,)) and match_language(target, (tgt,))
            for source, tgt in self.pairs
        )

    def describe(self) -> str:
        """What it translates, for error messages."""
        if self.pairs:
            return ", ".join(f"{source} -> {target}" for source, target in self.pairs)
        return f"into {', '.join(self.target_languages)}" if self.target_languages else "into any language"


def match_language(requested: str, supported: tuple[str, ...]) -> str | None:
    """The supported tag that serves ``requested``: the same tag (any case), else the same base language
    (``pt`` -> ``pt-BR``); ``requested`` itself when ``supported`` is empty (no restriction)."""
    if not supported:
        return requested
    wanted = requested.lower()
    for tag in supported:
        if tag.lower() == wanted:
            return tag
    base = wanted.split("-")[0]
    return next((tag for tag in supported if tag.lower().split("-")[0] == base), None)


def read_card(path: Path, tokenizer: Any, generation_config: Any) -> ModelCard:
    card: dict[str, Any] = {}
    card_file = path / "livecanvas.json"
    if card_file.is_file():
        card = json.loads(card_file.read_text())
    prompt_kind = card.get("prompt") or ("chat" if getattr(tokenizer, "chat_template", None) else "tagged")
    return ModelCard(
        name=str(card.get("name", path.name)),
        prompt_kind=str(prompt_kind),
        trained=bool(card.get("trained", True)),
        diffusion=diffusion_defaults(generation_config),
        early_exit=EarlyExitParams(**card.get("early_exit", {})),
        target_languages=_tags(card.get("languages", {}).get("target")),
    )


def _tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def diffusion_defaults(generation_config: Any) -> DiffusionParams:
    """The checkpoint's generation config as ``DiffusionParams`` (these defaults where unset; the rest
    of it is DiffusionGemma's own: :meth:`engine.diffusion.config.GemmaSettings.of`)."""
    defaults = DiffusionParams()
    sampler = getattr(generation_config, "sampler_config", None)
    steps = getattr(generation_config, "max_denoising_steps", None)
    return DiffusionParams(
        max_denoising_steps=defaults.max_denoising_steps if steps is None else int(steps),
        entropy_bound=float(sampler.entropy_bound) if sampler is not None else defaults.entropy_bound,
    )


def eos_ids(generation_config: Any, text_config: Any) -> list[int]:
    value = getattr(generation_config, "eos_token_id", None)
    if value is None:
        value = text_config.eos_token_id
    return [int(v) for v in (value if isinstance(value, list) else [value])]
