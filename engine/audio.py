"""One stream's incoming audio: a bounded rolling buffer on the stream's clock, and speech detection.

This module owns how PCM audio is held before recognition and how speech is told from silence. It is
sans-I/O: bytes come in through ``AudioBuffer.append`` and float samples come out; no clock is read.
Times are integer milliseconds since the stream's first sample, at ``SAMPLE_RATE`` (16 kHz mono,
16-bit little-endian PCM, whisper's input format).

``SpeechDetector`` runs the Silero VAD model that faster-whisper bundles (ONNX, CPU, one thread). The
model is stateless between calls, so each call costs in proportion to the audio passed (a few ms per
second of audio): pass the audio that is new or not yet confirmed, not the whole buffer every time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
"""Samples per second of every stream's audio."""

_SAMPLES_PER_MS = SAMPLE_RATE // 1000
_BYTES_PER_SAMPLE = 2


def ms_to_samples(ms: int) -> int:
    """How many samples ``ms`` milliseconds of audio hold."""
    return ms * _SAMPLES_PER_MS


class AudioBuffer:
    """A rolling window of one stream's audio with absolute times.

    The buffer's start always lies on a whole millisecond, so ``samples(from_ms)`` begins exactly at
    ``max(from_ms, start_ms)``. ``max_ms`` is a safety bound, not the trimming policy: callers trim
    with ``trim_before`` as text is committed; when an ``append`` would still overflow the bound, the
    oldest audio is dropped (in whole milliseconds) and ``dropped_ms`` grows by that much.
    """

    def __init__(self, *, max_ms: int = 30_000) -> None:
        if max_ms <= 0:
            raise ValueError(f"max_ms must be positive, got {max_ms}")
        self.max_ms = max_ms
        self._max_samples = ms_to_samples(max_ms)
        self._pcm = bytearray()
        self._start = 0  # absolute index of the first buffered sample; always a multiple of _SAMPLES_PER_MS
        self._dropped = 0  # samples dropped by the bound

    @property
    def start_ms(self) -> int:
        """Absolute time of the first buffered sample."""
        return self._start // _SAMPLES_PER_MS

    @property
    def end_ms(self) -> int:
        """Absolute time just past the last buffered sample (rounded down to a millisecond)."""
        return self._end // _SAMPLES_PER_MS

    @property
    def duration_ms(self) -> int:
        """``end_ms - start_ms``."""
        return self.end_ms - self.start_ms

    @property
    def dropped_ms(self) -> int:
        """Audio dropped so far because an ``append`` would have exceeded ``max_ms``."""
        return self._dropped // _SAMPLES_PER_MS

    @property
    def _length(self) -> int:
        return len(self._pcm) // _BYTES_PER_SAMPLE

    @property
    def _end(self) -> int:
        return self._start + self._length

    def append(self, pcm16le: bytes) -> None:
        """Add 16-bit little-endian mono PCM at the end; drops the oldest audio beyond ``max_ms``."""
        if len(pcm16le) % _BYTES_PER_SAMPLE:
            raise ValueError(f"PCM16 audio needs an even number of bytes, got {len(pcm16le)}")
        self._pcm += pcm16le
        excess = self._length - self._max_samples
        if excess > 0:
            drop = -(-excess // _SAMPLES_PER_MS) * _SAMPLES_PER_MS  # whole ms, keeps the start aligned
            self._drop(drop)
            self._dropped += drop

    def samples(self, from_ms: int | None = None) -> npt.NDArray[np.float32]:
        """The buffered audio from ``from_ms`` (clamped to the buffer) to the end, as float32 in [-1, 1)."""
        first = 0 if from_ms is None else min(max(ms_to_samples(from_ms) - self._start, 0), self._length)
        count = self._length - first
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        ints = np.frombuffer(self._pcm, dtype="<i2", count=count, offset=first * _BYTES_PER_SAMPLE)
        out: npt.NDArray[np.float32] = ints.astype(np.float32)
        out /= 32768.0
        return out

    def trim_before(self, ms: int) -> None:
        """Drop the audio before ``ms``; never past the end (a tail under 1 ms may stay)."""
        target = min(ms_to_samples(ms), ms_to_samples(self.end_ms))
        if target > self._start:
            self._drop(target - self._start)

    def _drop(self, samples: int) -> None:
        del self._pcm[: samples * _BYTES_PER_SAMPLE]
        self._start += samples


class SpeechDetector:
    """Speech spans in 16 kHz float audio, by the Silero VAD model bundled with faster-whisper.

    Construct once and reuse: the ONNX session is loaded on first construction and shared by every
    detector in the process (it is thread-safe). Options mean what they mean in faster-whisper's
    ``VadOptions``: a window is speech from ``threshold`` up, a span ends after ``min_silence_ms``
    below ``neg_threshold`` (default ``threshold - 0.15``), spans under ``min_speech_ms`` are
    discarded (except one still open at the end of the audio), and spans are padded by
    ``speech_pad_ms`` each side (within the audio).
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_speech_ms: int = 250,
        min_silence_ms: int = 500,
        speech_pad_ms: int = 200,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if neg_threshold is not None and not 0.0 < neg_threshold <= threshold:
            raise ValueError(f"need 0 < neg_threshold <= threshold, got {neg_threshold}")
        for name, value in (
            ("min_speech_ms", min_speech_ms),
            ("min_silence_ms", min_silence_ms),
            ("speech_pad_ms", speech_pad_ms),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        # faster-whisper pulls in ctranslate2 and PyAV; import it only when a detector is wanted.
        from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

        get_vad_model()  # load (or reuse) the shared ONNX session now rather than on the first call
        self._options: Any = VadOptions(
            threshold=threshold,
            neg_threshold=neg_threshold,
            min_speech_duration_ms=min_speech_ms,
            min_silence_duration_ms=min_silence_ms,
            speech_pad_ms=speech_pad_ms,
        )
        self._timestamps: Callable[..., list[dict[str, int]]] = get_speech_timestamps
        self.speech_pad_ms = speech_pad_ms

    def speech_spans(self, samples: npt.ArrayLike, offset_ms: int = 0) -> list[tuple[int, int]]:
        """Absolute ``(start_ms, end_ms)`` spans of speech in ``samples`` (1-D, 16 kHz), which begin at
        ``offset_ms``; in order, not overlapping. The input is not modified."""
        audio = np.asarray(samples, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"samples must be one-dimensional, got shape {audio.shape}")
        if audio.size == 0:
            return []
        chunks = self._timestamps(audio, self._options, sampling_rate=SAMPLE_RATE)
        return [
            (offset_ms + chunk["start"] // _SAMPLES_PER_MS, offset_ms + -(-chunk["end"] // _SAMPLES_PER_MS))
            for chunk in chunks
        ]

    def has_speech(self, samples: npt.ArrayLike) -> bool:
        """Whether ``samples`` hold any speech span."""
        return bool(self.speech_spans(samples))
