"""Loading the recognisers a server (or a Ray recogniser replica) runs, as one ``Asr``.

``load_recogniser`` returns an ``Asr`` that routes each request by its pass name: ``segment`` to
Moonshine (``engine.moonshine``) where ``RecogniserSettings.english`` is ``moonshine``, ``final`` and
``draft`` to whisper base (``engine.asr.FasterWhisperAsr``), or to the user's own faster-whisper model
where ``RecogniserSettings.whisper_model`` names one, which is then loaded on first use, so an
English-only server never spends its memory on it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from engine.asr import (
    SEGMENT_PASS,
    SHORT_CONTEXT_PAD_S,
    Asr,
    AsrRequest,
    FasterWhisperAsr,
    RecogniserSettings,
)
from engine.types import Word


def load_recogniser(settings: RecogniserSettings) -> Asr:
    """The recognisers ``settings`` name, from the offline model files (see the module docstring)."""
    if settings.english != "moonshine":
        return load_whisper(settings)
    from engine.asr_models import ensure_moonshine_base
    from engine.moonshine import MoonshineAsr

    # one thread unless told: its passes are mostly decoder steps, which a second thread barely speeds
    # up (measured: a 3 s pass 112 ms on one thread, 106 ms on two), and the translator needs the core
    moonshine = MoonshineAsr(ensure_moonshine_base(), threads=settings.threads or 1)
    return RoutedAsr({SEGMENT_PASS: lambda: moonshine}, default=lambda: load_whisper(settings))


def _threads(settings: RecogniserSettings) -> int:
    import os

    return settings.threads or min(4, os.cpu_count() or 1)


class RoutedAsr:
    """One ``Asr`` over several: each request goes to the recogniser of its pass name (``default`` for
    any other); each recogniser is made on first use, on the calling thread."""

    def __init__(self, by_pass: dict[str, Callable[[], Asr]], *, default: Callable[[], Asr]) -> None:
        self._makers = by_pass
        self._default = default
        self._loaded: dict[str | None, Asr] = {}

    def _recogniser(self, pass_name: str) -> Asr:
        key = pass_name if pass_name in self._makers else None
        if key not in self._loaded:
            self._loaded[key] = self._makers[pass_name]() if key is not None else self._default()
        return self._loaded[key]

    def has_pass(self, pass_name: str) -> bool:
        return pass_name in self._makers or self._recogniser(pass_name).has_pass(pass_name)

    def transcribe(self, requests: Sequence[AsrRequest]) -> list[list[Word]]:
        results: list[list[Word]] = [[] for _ in requests]
        groups: dict[str | None, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[request.pass_name if request.pass_name in self._makers else None].append(index)
        for indexes in groups.values():
            recogniser = self._recogniser(requests[indexes[0]].pass_name)
            answers = recogniser.transcribe([requests[i] for i in indexes])
            for index, words in zip(indexes, answers, strict=True):
                results[index] = words
        return results


def load_whisper(settings: RecogniserSettings) -> FasterWhisperAsr:
    """The faster-whisper recogniser ``settings`` name, from the offline model files (whisper base, or
    the user's model directory in its place)."""
    from engine.asr_models import ensure_whisper_base, user_whisper_model, whisper_tiny_en

    own = settings.whisper_model
    base = ensure_whisper_base() if own is None else user_whisper_model(str(own))
    models = {"final": base}
    padding: dict[str, float] = {}
    if settings.draft == "base-short":
        models["draft"] = base  # the same model, shared; drafts encode just the audio + 1 s
        padding["draft"] = SHORT_CONTEXT_PAD_S
    elif settings.draft == "tiny.en":
        models["draft"] = whisper_tiny_en()
    if settings.final_context_pad_s > 0:
        padding["final"] = settings.final_context_pad_s
    return FasterWhisperAsr(models, cpu_threads=_threads(settings), context_pad_s=padding)
