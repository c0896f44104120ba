"""Moonshine base English on onnxruntime: the recogniser made for live speech, behind the ``Asr`` protocol.

This module owns running Moonshine: its tokenizer (the wheel's ``tokenizer.bin``), the encoder and the
greedy decoding loop over the converted models (``engine.moonshine_convert``; placed in the model cache
by ``engine.asr_models.ensure_moonshine_base``).

* **Cost follows the audio.** Unlike whisper, which pads every pass to 30 s, Moonshine's encoder reads
  exactly the audio it is given, and the decoder runs one step per token of new text.
* **Continuing a segment.** A request may carry ``prefix``: the words already final at the start of
  its audio (the live transcriber's confirmed words of the open segment). They are fed to the decoder
  in one call, as if it had produced them, and only the text after them is decoded and returned. A pass
  over a growing segment thus costs one encoder run, one prefix call and the new tokens; the confirmed
  words cannot change, so what follows is read in their context. A request may also carry ``guess``,
  the previous pass's unconfirmed words: the first decoder call checks them all at once (as a
  speculative draft), so a pass pays one step only for the tokens that changed or are new, and its
  result is still exactly greedy decoding's.
* **Guards.** Decoding stops at ``MAX_TOKENS_PER_S`` tokens per second of audio (Moonshine's own rule
  against runaway loops on noise), and a row whose new text ends in a loop of one word or phrase
  (three repeats or more) keeps the text before the loop.
* **Word times** are estimates: Moonshine gives none. Words are spread over the request's audio in
  proportion to their length; the caller, which knows where the speech is, may place them better.
* **Batching.** Rows are decoded one after another: the encoder takes no attention mask, so rows of
  different lengths cannot share a batch without padding that changes what the model hears
  (docs/engine.md). A pass is short (tens of ms), so a round of many streams still returns quickly.

Threading: one ``MoonshineAsr`` is used by one thread (the ASR worker); onnxruntime runs each call on
``threads`` intra-op threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.asr import SEGMENT_PASS, AsrRequest
from engine.audio import SAMPLE_RATE
from engine.segment_transcriber import spread_words
from engine.types import Word

START_TOKEN, END_TOKEN = 1, 2
LAYERS, KV_HEADS, HEAD_DIM = 8, 8, 52  # Moonshine base's decoder
MAX_TOKENS_PER_S = 6.5
MIN_AUDIO_S = 0.1  # shorter input than this cannot hold a word (and the encoder needs ~64 ms)
LOOP_REPEATS = 3
WORD_SPACE = "\u2581"  # SentencePiece's word-start mark
_BYTE_TOKENS = range(3, 259)  # ids 3..258: the 256 byte-fallback pieces


class MoonshineTokenizer:
    """Moonshine's SentencePiece BPE vocabulary, read from the wheel's ``tokenizer.bin``: a sequence of
    pieces, each as a length (one byte, or two as a little-endian base-128 varint) and its UTF-8 bytes;
    a piece's id is its position. Byte-fallback pieces (ids 3..258) are the raw byte."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = list(pieces)
        self._ids = {piece: i for i, piece in enumerate(self.pieces) if i not in _BYTE_TOKENS and i > 2}

    @classmethod
    def read(cls, path: Path) -> MoonshineTokenizer:
        data = path.read_bytes()
        pieces: list[bytes] = []
        index = 0
        while index < len(data):
            length = data[index]
            index += 1
            if length >= 0x80:
                length = (length & 0x7F) | (data[index] << 7)
                index += 1
            pieces.append(data[index : index + length])
            index += length
        if len(pieces) < 259:
            raise ValueError(f"{path} holds {len(pieces)} pieces, not a Moonshine vocabulary")
        return cls(pieces)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special pieces dropped, bytes fused, the first word's space removed)."""
        raw = b"".join(self.pieces[i] for i in ids if 2 < i < len(self.pieces))
        text = raw.decode("utf-8", errors="replace").replace(WORD_SPACE, " ")
        return text[1:] if text.startswith(" ") else text

    def word_probabilities(
        self, ids: Sequence[int], probabilities: Sequence[float], words: int
    ) -> list[float]:
        """Per word of ``decode(ids)`` (``words`` of them), the lowest probability among its tokens (a
        word starts at a piece with the word-start mark). Where the pieces do not split into exactly
        ``words`` words, every word gets the lowest probability of all."""
        marked = WORD_SPACE.encode()
        per_word: list[float] = []
        for token, probability in zip(ids, probabilities, strict=True):
            piece = self.pieces[token] if 2 < token < len(self.pieces) else b""
            if piece.startswith(marked) or not per_word:
                per_word.append(probability)
            else:
                per_word[-1] = min(per_word[-1], probability)
        if len(per_word) != words:
            return [min(probabilities, default=1.0)] * words
        return per_word

    def encode(self, text: str) -> list[int]:
        """SentencePiece BPE: characters (unknown ones as their bytes), then repeatedly the adjacent pair
        whose joined piece ranks best (lowest id) is merged. Words get the leading word-start mark."""
        marked = (WORD_SPACE + WORD_SPACE.join(text.split())).encode() if text.strip() else b""
        symbols: list[bytes] = []
        for char in marked.decode():
            encoded = char.encode()
            symbols.extend([encoded] if encoded in self._ids else [bytes([b]) for b in encoded])
        while len(symbols) > 1:
            ranks = [self._ids.get(symbols[i] + symbols[i + 1]) for i in range(len(symbols) - 1)]
            candidates = [(rank, i) for i, rank in enumerate(ranks) if rank is not None]
            if not candidates:
                break
            _, best = min(candidates)
            symbols[best : best + 2] = [symbols[best] + symbols[best + 1]]
        return [self._ids[s] if s in self._ids else 3 + s[0] for s in symbols]


class MoonshineAsr:
    """``Asr`` on Moonshine base English (converted ONNX models in ``directory``)."""

    def __init__(self, directory: Path, *, threads: int = 1) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        providers = ["CPUExecutionProvider"]
        self._encoder = onnxruntime.InferenceSession(
            str(directory / "encoder_model.onnx"), options, providers=providers
        )
        self._decoder = onnxruntime.InferenceSession(
            str(directory / "decoder_model_merged.onnx"), options, providers=providers
        )
        self.tokenizer = MoonshineTokenizer.read(directory / "tokenizer.bin")

    def has_pass(self, pass_name: str) -> bool:
        return pass_name == SEGMENT_PASS

    def transcribe(self, requests: Sequence[AsrRequest]) -> list[list[Word]]:
        return [self._words(request) for request in requests]

    def _words(self, request: AsrRequest) -> list[Word]:
        if request.language not in (None, "en"):
            raise ValueError(f"Moonshine base transcribes English only, not {request.language!r}")
        if len(request.audio) < MIN_AUDIO_S * SAMPLE_RATE:
            return []
        prefix, guess = self.tokenizer.encode(request.prefix), self.tokenizer.encode(request.guess)
        ids, probabilities = self.decode_scored(request.audio, prefix, guess)
        texts = self.tokenizer.decode(ids).split()
        scores = self.tokenizer.word_probabilities(ids, probabilities, len(texts))
        heard_until = request.offset_ms + len(request.audio) * 1000 // SAMPLE_RATE
        words = spread_words(texts, [(request.offset_ms, heard_until)])
        return [replace(word, probability=score) for word, score in zip(words, scores, strict=True)]

    def decode(
        self, audio: npt.NDArray[np.float32], prefix: Sequence[int] = (), guess: Sequence[int] = ()
    ) -> list[int]:
        """Greedy token ids after ``prefix`` for ``audio`` (16 kHz float32), without the end token.

        ``guess`` (say, the previous pass's unconfirmed tokens) is checked in the first decoder call
        together with the prefix: every guessed token that greedy decoding would have produced anyway
        is kept without a step of its own, and decoding goes on from the first one it would not. The
        result is greedy decoding's, with or without a guess."""
        return self.decode_scored(audio, prefix, guess)[0]

    def decode_scored(
        self, audio: npt.NDArray[np.float32], prefix: Sequence[int] = (), guess: Sequence[int] = ()
    ) -> tuple[list[int], list[float]]:
        """``decode``'s token ids, each with the probability the model gave it when it chose it."""
        (hidden,) = self._encoder.run(None, {"input_values": audio[np.newaxis, :].astype(np.float32)})
        budget = int(np.ceil(len(audio) / SAMPLE_RATE * MAX_TOKENS_PER_S))
        past: dict[str, Any] = {
            f"past_key_values.{layer}.{side}.{kind}": np.zeros((1, KV_HEADS, 0, HEAD_DIM), np.float32)
            for layer in range(LAYERS)
            for side in ("decoder", "encoder")
            for kind in ("key", "value")
        }
        guess = list(guess)[: max(0, budget - len(prefix))]
        step_ids = [START_TOKEN, *prefix, *guess]
        new: list[int] = []
        chosen: list[float] = []  # the probability of each token in ``new``
        first = True
        while len(prefix) + len(new) < budget:
            outputs = self._decoder.run(
                None,
                {
                    "input_ids": np.array([step_ids], dtype=np.int64),
                    "encoder_hidden_states": hidden,
                    "use_cache_branch": np.array([not first]),
                    **past,
                },
            )
            logits = outputs[0][0]  # (positions, vocabulary): what follows each input
            kept: int | None = None  # decoder positions to keep in the cache (None: all)
            if first:  # keep the guessed tokens greedy decoding agrees with, up to the first it would not
                base = len(prefix)  # position of the token before the first guessed one
                predicted = logits[base:].argmax(axis=-1)  # the prefix's own positions are not read
                accepted = 0
                while accepted < len(guess) and int(predicted[accepted]) == guess[accepted]:
                    accepted += 1
                if END_TOKEN in guess[:accepted]:
                    accepted = guess.index(END_TOKEN)
                sure = chosen_probabilities(logits[base : base + accepted + 1])
                new.extend(guess[:accepted])
                chosen.extend(sure[:accepted])
                kept = 1 + base + accepted
                token, probability = int(predicted[accepted]), sure[accepted]
            else:
                token, probability = int(logits[-1].argmax()), chosen_probabilities(logits[-1:])[0]
            if token == END_TOKEN or len(prefix) + len(new) >= budget:
                break
            new.append(token)
            chosen.append(probability)
            for name, value in zip(past, outputs[1:], strict=True):
                if ".decoder." in name:
                    past[name] = value[:, :, :kept]  # the rejected guesses' keys and values go
                elif first:  # the encoder's keys and values are computed once
                    past[name] = value
            step_ids = [token]
            first = False
        ids = without_loop(new)
        return ids, chosen[: len(ids)]


def chosen_probabilities(logits: npt.NDArray[np.float32]) -> list[float]:
    """Per row of ``logits``, the probability of its most likely token (the one greedy decoding takes)."""
    return [float(p) for p in 1.0 / np.exp(logits - logits.max(axis=-1, keepdims=True)).sum(axis=-1)]


def without_loop(ids: list[int]) -> list[int]:
    """``ids`` without a trailing loop: a run of one token sequence (1..8 tokens) repeated
    ``LOOP_REPEATS`` times or more at the end is cut back to its first occurrence."""
    for size in range(1, 9):
        repeats = 1
        while len(ids) >= size * (repeats + 1) and (
            ids[len(ids) - size * (repeats + 1) : len(ids) - size * repeats] == ids[len(ids) - size :]
        ):
            repeats += 1
        if repeats >= LOOP_REPEATS:
            return ids[: len(ids) - size * (repeats - 1)]
    return ids
