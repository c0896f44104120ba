"""Prompt templates: how a source window and its context become the prompt token ids of a checkpoint.

Two kinds, chosen per checkpoint:

* ``tagged``: livecanvas's own checkpoints. Special tags mark context pairs, the source and the target
  language: ``<bos><ctx>{src}<sep>{tgt}...<src>{lang}:{source}<tgt>{lang}:``.
* ``chat``: instruction-tuned checkpoints such as ``google/diffusiongemma-26B-A4B-it``: one user turn
  asking for the translation, rendered with the tokenizer's own chat template.

Both drop the oldest context first until the prompt fits the token budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import EngineError

LANGUAGE_NAMES = {
    "en": "English",
    "pt": "Portuguese",
    "pt-BR": "Brazilian Portuguese",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "nl": "Dutch",
    "ja": "Japanese",
    "zh": "Chinese",
    "ko": "Korean",
    "ru": "Russian",
    "ar": "Arabic",
    "hi": "Hindi",
}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, LANGUAGE_NAMES.get(code.split("-")[0], code))


@dataclass(frozen=True, slots=True)
class ContextEntry:
    """A previous committed window of the same track: its source text and its final in the track."""

    source: str
    target: str


class PromptTemplate(Protocol):
    @property
    def kind(self) -> str: ...

    def render(
        self, *, source: str, context: Sequence[ContextEntry], source_lang: str, target_lang: str, budget: int
    ) -> list[int]:
        """Prompt token ids, at most ``budget`` long (oldest context dropped first)."""
        ...


def _fit(render_with: Any, context: Sequence[ContextEntry], budget: int) -> list[int]:
    """Render with as much recent context as fits ``budget``; the source itself must fit."""
    for first in range(len(context) + 1):
        ids: list[int] = render_with(context[first:])
        if len(ids) <= budget:
            return ids
    raise EngineError(f"the source window alone needs {len(ids)} prompt tokens, over the budget of {budget}")


@dataclass(frozen=True, slots=True)
class TaggedTemplate:
    tokenizer: Any
    kind: str = "tagged"

    def render(
        self, *, source: str, context: Sequence[ContextEntry], source_lang: str, target_lang: str, budget: int
    ) -> list[int]:
        def render_with(entries: Sequence[ContextEntry]) -> list[int]:
            history = "".join(f"<ctx>{e.source}<sep>{e.target}" for e in entries)
            text = f"<bos>{history}<src>{source_lang}:{source}<tgt>{target_lang}:"
            return list(self.tokenizer.encode(text, add_special_tokens=False))

        return _fit(render_with, context, budget)


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    tokenizer: Any
    kind: str = "chat"

    def render(
        self, *, source: str, context: Sequence[ContextEntry], source_lang: str, target_lang: str, budget: int
    ) -> list[int]:
        def render_with(entries: Sequence[ContextEntry]) -> list[int]:
            return list(self._render_chat(source, entries, source_lang, target_lang))

        return _fit(render_with, context, budget)

    def _render_chat(
        self, source: str, entries: Sequence[ContextEntry], source_lang: str, target_lang: str
    ) -> list[int]:
        src, tgt = language_name(source_lang), language_name(target_lang)
        lines = [f"Translate this live caption from {src} to {tgt}. Reply with the translation only."]
        if entries:
            lines.append("Earlier captions, for context (do not translate them again):")
            lines.extend(f"- {e.source} => {e.target}" for e in entries)
        lines.append(f"Caption: {source}")
        messages = [{"role": "user", "content": "\n".join(lines)}]
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        if isinstance(rendered, dict) or hasattr(rendered, "input_ids"):
            rendered = rendered["input_ids"]
        return [int(t) for t in rendered]


def make_template(kind: str, tokenizer: Any) -> PromptTemplate:
    if kind == "tagged":
        return TaggedTemplate(tokenizer)
    if kind == "chat":
        return ChatTemplate(tokenizer)
    raise EngineError(f"unknown prompt kind {kind!r} (expected 'tagged' or 'chat')")
