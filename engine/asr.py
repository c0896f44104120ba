"""Speech recognition behind the ``Asr`` protocol, its faster-whisper backend, and which recogniser
serves which stream.

``RecogniserSettings.english`` names the recogniser of English streams: ``moonshine`` (the default
where the ``moonshine-cpp`` package is installed; ``engine.moonshine``, with the segment transcriber)
or ``whisper``. Every other language, and whisper's own tasks, use whisper base, or the user's own
faster-whisper model directory (``RecogniserSettings.whisper_model``).
``engine.recognisers`` loads what the settings name.

A request's ``task`` is one of whisper's: ``transcribe``; ``translate``, whisper's own translation of
the speech into English (words and times like a transcription); or ``identify``, whisper's language
identification, answered as ``language_words``: one ``Word`` per language, most likely first, its
code as text and its probability (``language_guesses`` reads them back). Language identification goes
through the same request and answer types as passes, so every worker (local or on a cluster) runs it
unchanged.

One call transcribes many audio buffers (one per live stream) at once. The faster-whisper backend
batches every request of the same model and language into one encoder pass and one batched
``generate``, with a per-row prompt: each stream keeps its own previous text as context. Then it uses
faster-whisper's own timestamp splitting and word alignment, so each row comes back as ``Word``s with
absolute times. Hallucination guards follow Whisper's: a row judged silent (high no-speech
probability with low confidence) or degenerate (high compression ratio) yields no words.

Threading: an ``Asr`` is used by one thread only (the ASR worker).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from engine.types import Word

SAMPLE_RATE = 16_000
MAX_AUDIO_S = 30  # one Whisper window
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
FULL_WINDOW_FRAMES = 3000  # 30 s of 10 ms mel frames
MIN_ENCODER_FRAMES = 500
PROMPT_TOKENS = 48  # previous-text tokens kept as a row's prompt (a fixed budget, so rows line up)
# punctuation merged into the neighbouring word when aligning words: faster-whisper's defaults, except
# that a hyphen stays inside its word ("ill-disposed", not "ill -disposed")
PREPEND_PUNCTUATION = "\"'“¿([{"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"  # noqa: RUF001


ASR_DRAFT_CHOICES = ("base-short", "tiny.en", "none")
TRANSCRIBE, TRANSLATE, IDENTIFY = "transcribe", "translate", "identify"
TASKS = (TRANSCRIBE, TRANSLATE, IDENTIFY)
ENGLISH_RECOGNISERS = ("moonshine", "whisper")
SEGMENT_PASS = "segment"  # the pass name of a segment recogniser's requests (Moonshine)


def default_english_recogniser() -> str:
    """``moonshine`` where its package is installed (x86-64 Linux), else ``whisper``."""
    import importlib.util

    return "moonshine" if importlib.util.find_spec("moonshine_cpp") is not None else "whisper"


SHORT_CONTEXT_PAD_S = 1.0  # the base-short draft pass encodes the audio plus this much padding


@dataclass(frozen=True, slots=True)
class RecogniserSettings:
    """Which models a recogniser loads: whisper base for final passes, and for draft passes ``draft``:
    ``none``, ``base-short`` (the same model on the audio + 1 s) or ``tiny.en`` (English only).
    ``final_context_pad_s`` > 0 encodes final passes on the audio plus that padding, not 30 s."""

    draft: str = "none"
    final_context_pad_s: float = 0.0
    threads: int = 0  # CTranslate2 threads per model (0: one per core, at most 4)
    english: str = field(default_factory=default_english_recogniser)  # ENGLISH_RECOGNISERS
    # a faster-whisper (CTranslate2) model directory for whisper's languages instead of whisper base
    whisper_model: Path | None = None

    def __post_init__(self) -> None:
        if self.draft not in ASR_DRAFT_CHOICES:
            raise ValueError(f"the ASR draft pass must be one of {ASR_DRAFT_CHOICES}, got {self.draft!r}")
        if self.english not in ENGLISH_RECOGNISERS:
            raise ValueError(
                f"the English recogniser must be one of {ENGLISH_RECOGNISERS}, got {self.english!r}"
            )

    def uses_segments(self, language: str) -> bool:
        """Whether a stream in ``language`` goes to the segment recogniser (Moonshine)."""
        return self.english == "moonshine" and language == "en"

    def uses_draft_pass(self, language: str) -> bool:
        """Whether a whisper stream in ``language`` gets draft passes (tiny.en knows English only)."""
        return self.draft == "base-short" or (self.draft == "tiny.en" and language == "en")


@dataclass(frozen=True, slots=True)
class AsrRequest:
    """Transcribe ``audio`` (float32, 16 kHz mono, at most 30 s) that starts at ``offset_ms``.

    ``pass_name`` picks the model (``draft`` or ``final``); ``prompt`` is the stream's recent text,
    given to the model as previous context; ``language`` is an ISO code (``en``) or None to detect.
    ``prefix`` is text already final at the start of ``audio``: a recogniser that can continue from it
    (Moonshine) returns only the words after it; whisper does not use it. ``guess`` is what probably
    follows (the previous pass's unconfirmed words): a recogniser may use it to decode faster, never
    to change its answer.
    """

    audio: np.ndarray
    offset_ms: int
    pass_name: str
    language: str | None = "en"
    prompt: str = ""
    prefix: str = ""
    guess: str = ""
    task: str = TRANSCRIBE  # TASKS; whisper's, see the module docstring

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"the task must be one of {TASKS}, got {self.task!r}")


def language_words(guesses: Sequence[tuple[str, float]], t0_ms: int, t1_ms: int) -> list[Word]:
    """Language identification's answer (``IDENTIFY``) as words: a language code per word, most
    likely first, each spanning the audio it was heard in."""
    return [Word(text=code, t0_ms=t0_ms, t1_ms=t1_ms, probability=p) for code, p in guesses]


def language_guesses(words: Sequence[Word]) -> list[tuple[str, float]]:
    """``language_words`` read back: (language code, probability), most likely first."""
    return [(w.text, w.probability) for w in words]


class Asr(Protocol):
    def transcribe(self, requests: Sequence[AsrRequest]) -> list[list[Word]]:
        """Words per request, in request order."""
        ...

    def has_pass(self, pass_name: str) -> bool: ...


class FasterWhisperAsr:
    """``Asr`` on CTranslate2 Whisper models: one model per pass name (they may be the same model)."""

    def __init__(
        self,
        models: dict[str, Path],
        *,
        cpu_threads: int = 0,
        beam_size: int = 1,
        context_pad_s: dict[str, float] | None = None,
    ) -> None:
        from faster_whisper import WhisperModel

        loaded: dict[Path, Any] = {}
        self._models: dict[str, Any] = {}
        for pass_name, path in models.items():
            if path not in loaded:
                loaded[path] = WhisperModel(
                    str(path), device="cpu", compute_type="int8", cpu_threads=cpu_threads
                )
            self._models[pass_name] = loaded[path]
        self.beam_size = beam_size
        self.context_pad_s = dict(context_pad_s or {})  # pass name -> padding after the audio, seconds
        self.calls = 0
        self.rows = 0

    def has_pass(self, pass_name: str) -> bool:
        return pass_name in self._models

    def is_multilingual(self, pass_name: str) -> bool:
        return bool(self._models[pass_name].model.is_multilingual)

    def transcribe(self, requests: Sequence[AsrRequest]) -> list[list[Word]]:
        results: list[list[Word]] = [[] for _ in requests]
        groups: dict[tuple[str, str | None, str, int], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            if request.task == IDENTIFY:
                results[index] = self._identify(request)
                continue
            # CTranslate2 needs the start-of-transcript token at one position in every row of a batch,
            # so rows are grouped by prompt length too (streams with a full context budget share one)
            prompt_length = len(self._context_tokens(request))
            groups[(request.pass_name, request.language, request.task, prompt_length)].append(index)
        for (pass_name, language, task, _), indexes in groups.items():
            batch = [requests[i] for i in indexes]
            answers = self._transcribe_group(pass_name, language, task, batch)
            for index, words in zip(indexes, answers, strict=True):
                results[index] = words
        return results

    def _identify(self, request: AsrRequest) -> list[Word]:
        """Whisper's language identification on the request's audio (one 30 s window, as
        faster-whisper's ``detect_language`` reads it): every language with its probability."""
        from faster_whisper.transcribe import get_ctranslate2_storage, pad_or_trim

        model = self._models[request.pass_name]
        if not model.model.is_multilingual:
            raise ValueError("language identification needs a multilingual whisper model")
        mel = model.feature_extractor(request.audio[: MAX_AUDIO_S * SAMPLE_RATE])[..., :-1]
        features = np.stack([pad_or_trim(mel, FULL_WINDOW_FRAMES)])  # (1, n_mels, frames)
        detected = model.model.detect_language(model.model.encode(get_ctranslate2_storage(features)))
        self.calls += 1
        self.rows += 1
        end_ms = request.offset_ms + len(request.audio) * 1000 // SAMPLE_RATE
        guesses = [(token.strip("<|>"), float(p)) for token, p in detected[0]]
        return language_words(guesses, request.offset_ms, end_ms)

    def _encoder_frames(self, pass_name: str, needed: int) -> int:
        """Mel frames given to the encoder: Whisper's full 30 s window, or (a padding set for the pass)
        the audio plus that padding, which costs the encoder proportionally less."""
        pad_s = self.context_pad_s.get(pass_name)
        if pad_s is None:
            return FULL_WINDOW_FRAMES
        padded = needed + int(pad_s * 100)
        return min(FULL_WINDOW_FRAMES, max(MIN_ENCODER_FRAMES, padded + padded % 2))

    def _context_tokens(self, request: AsrRequest) -> list[int]:
        """The request's previous text as prompt tokens, at most ``PROMPT_TOKENS`` (the most recent)."""
        if not request.prompt.strip():
            return []
        tokenizer = self._models[request.pass_name].hf_tokenizer
        ids: list[int] = tokenizer.encode(
            " " + " ".join(request.prompt.split()), add_special_tokens=False
        ).ids
        return ids[-PROMPT_TOKENS:]

    def _transcribe_group(
        self, pass_name: str, language: str | None, task: str, batch: list[AsrRequest]
    ) -> list[list[Word]]:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_compression_ratio, get_ctranslate2_storage, pad_or_trim

        model = self._models[pass_name]
        multilingual = bool(model.model.is_multilingual)
        mels = [model.feature_extractor(r.audio[: MAX_AUDIO_S * SAMPLE_RATE])[..., :-1] for r in batch]
        frames = self._encoder_frames(pass_name, max(m.shape[-1] for m in mels))
        features = np.stack([pad_or_trim(m, frames) for m in mels])  # (B, n_mels, frames)
        encoder_output = model.model.encode(get_ctranslate2_storage(features))
        if multilingual and language is None:
            detected = model.model.detect_language(encoder_output)
            language = detected[0][0][0].strip("<|>")
        if task == TRANSLATE and not multilingual:
            raise ValueError("translation into English needs a multilingual whisper model")
        tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task=task, language=language or "en")
        prompts = [
            model.get_prompt(tokenizer, previous_tokens=self._context_tokens(r), without_timestamps=False)
            for r in batch
        ]
        generated = model.model.generate(
            encoder_output,
            prompts,
            beam_size=self.beam_size,
            max_length=model.max_length,
            suppress_blank=True,
            suppress_tokens=[-1],
            return_scores=True,
            return_no_speech_prob=True,
        )
        self.calls += 1
        self.rows += len(batch)
        segments: list[list[dict[str, Any]]] = []
        sizes: list[int] = []
        for request, result in zip(batch, generated, strict=True):
            tokens = result.sequences_ids[0]
            duration = min(len(request.audio) / SAMPLE_RATE, MAX_AUDIO_S)
            size = int(np.ceil(duration) * model.frames_per_second)
            sizes.append(size)
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            silent = result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD
            text = tokenizer.decode(tokens)
            if silent or not text.strip() or get_compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
                segments.append([])
                continue
            parts, _, _ = model._split_segments_by_timestamps(
                tokenizer=tokenizer,
                tokens=tokens,
                time_offset=0.0,
                segment_size=size,
                segment_duration=duration,
                seek=0,
            )
            segments.append([{**part, "seek": 0, "text": tokenizer.decode(part["tokens"])} for part in parts])
        aligned = [s for s in segments if s]
        if aligned:
            keep = [i for i, s in enumerate(segments) if s]
            model.add_word_timestamps(
                aligned,
                tokenizer,
                _select_rows(encoder_output, keep, features, model),
                [sizes[i] for i in keep],
                PREPEND_PUNCTUATION,
                APPEND_PUNCTUATION,
                0.0,
            )
        return [_words(parts, request.offset_ms) for parts, request in zip(segments, batch, strict=True)]


def _select_rows(encoder_output: Any, keep: list[int], features: np.ndarray, model: Any) -> Any:
    """The encoder output of the kept rows (re-encoded only when some rows were dropped)."""
    if len(keep) == features.shape[0]:
        return encoder_output
    from faster_whisper.transcribe import get_ctranslate2_storage

    return model.model.encode(get_ctranslate2_storage(np.ascontiguousarray(features[keep])))


def _words(parts: list[dict[str, Any]], offset_ms: int) -> list[Word]:
    """Aligned words as ``Word``s with absolute times; a piece without a leading space (``'clock`` after
    ``o``) continues the previous word."""
    words: list[Word] = []
    for part in parts:
        for word in part.get("words", []):
            raw = str(word["word"])
            text = raw.strip()
            if not text:
                continue
            t0 = offset_ms + round(float(word["start"]) * 1000)
            t1 = max(t0, offset_ms + round(float(word["end"]) * 1000))
            probability = float(word["probability"])
            if words and not raw[:1].isspace():
                previous = words[-1]
                words[-1] = Word(
                    text=previous.text + text,
                    t0_ms=previous.t0_ms,
                    t1_ms=max(previous.t1_ms, t1),
                    probability=min(previous.probability, probability),
                )
                continue
            words.append(Word(text=text, t0_ms=t0, t1_ms=t1, probability=probability))
    return words
