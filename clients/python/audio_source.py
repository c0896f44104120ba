"""Audio input for ``livecanvas send``: WAV files as 16 kHz mono PCM16, real-time pacing, the microphone.

* ``read_wav_pcm16_16k(path)``: any WAV (8/16/24/32-bit integer PCM, or float and other encodings
  through FFmpeg; any rate, any channels) as the protocol's audio format, PCM16LE 16 kHz mono bytes
  (``read_wav_16k`` gives the int16 samples).
* ``resample(samples, source_rate, target_rate)``: band-limited polyphase resampling of a whole signal;
  ``StreamResampler`` does the same chunk by chunk, for live input.
* ``paced_chunks(pcm, chunk_ms=100, speed=1.0)``: ``(audio_end_ms, chunk)`` pairs, each released when a
  live source would have it (its last sample spoken), at ``speed`` x real time against a monotonic clock.
* ``microphone_chunks(chunk_ms=100)``: the same from the default input device, through the optional
  ``sounddevice`` package (``pip install sounddevice``); ``require_microphone()`` checks for it up front.
"""

from __future__ import annotations

import asyncio
import math
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16_000  # the protocol's audio: PCM16 little-endian, 16 kHz, mono
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
MIC_HINT = "install sounddevice (pip install sounddevice) to use --mic"

FloatArray = npt.NDArray[np.float64]


# -- resampling --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FilterBank:
    """A Kaiser-windowed sinc low-pass in ``up`` phases: output n sits at source instant n * down / up."""

    up: int
    down: int
    half: int  # taps each side, in source samples
    offsets: npt.NDArray[np.int64]  # source sample k = floor(t) + offset
    bank: FloatArray  # (up, taps)

    @classmethod
    def design(cls, source_rate: int, target_rate: int, zero_crossings: int = 32) -> _FilterBank:
        if source_rate <= 0 or target_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {source_rate} and {target_rate}")
        common = gcd(source_rate, target_rate)
        up, down = target_rate // common, source_rate // common
        cutoff = 0.95 * min(1.0, target_rate / source_rate)  # in units of the source Nyquist frequency
        half = int(np.ceil(zero_crossings / cutoff))
        offsets = np.arange(-half + 1, half + 1)
        phases = np.arange(up) / up  # fractional part of the output instant, in source samples
        distance = phases[:, None] - offsets[None, :]  # t - k for every phase and tap
        window = np.i0(8.6 * np.sqrt(np.clip(1.0 - (distance / half) ** 2, 0.0, None))) / np.i0(8.6)
        return cls(up, down, half, offsets, cutoff * np.sinc(cutoff * distance) * window)

    def apply(self, padded: FloatArray, first: int, count: int, origin: int) -> FloatArray:
        """Outputs ``first .. first + count - 1``; ``padded[i]`` holds source sample ``i - origin``."""
        out = np.empty(count)
        block = 8192
        for start in range(0, count, block):
            index = np.arange(first + start, first + min(start + block, count)) * self.down
            base, phase = index // self.up, index % self.up
            taps = padded[(base + origin)[:, None] + self.offsets[None, :]]
            out[start : start + len(index)] = np.einsum("nt,nt->n", taps, self.bank[phase])
        return out


def resample(
    samples: npt.ArrayLike, source_rate: int, target_rate: int, *, zero_crossings: int = 32
) -> FloatArray:
    """Band-limited resampling (Kaiser-windowed sinc, polyphase), float64 in, float64 out.

    The low-pass sits at 95% of the lower Nyquist frequency, so nothing above the target's Nyquist aliases.
    """
    signal = np.asarray(samples, dtype=np.float64)
    if source_rate == target_rate or signal.size == 0:
        return signal.copy()
    filt = _FilterBank.design(source_rate, target_rate, zero_crossings)
    padded = np.concatenate([np.zeros(filt.half), signal, np.zeros(filt.half + 1)])
    count = int(np.ceil(signal.size * filt.up / filt.down))
    return filt.apply(padded, 0, count, filt.half)


class StreamResampler:
    """``resample`` chunk by chunk: ``push`` returns every output sample whose filter taps have arrived
    (a delay of about ``zero_crossings`` source samples), ``finish`` the rest; together they equal
    ``resample`` of the whole signal."""

    def __init__(self, source_rate: int, target_rate: int, *, zero_crossings: int = 32) -> None:
        self._same = source_rate == target_rate
        self._filter = _FilterBank.design(source_rate, target_rate, zero_crossings)
        self._buffer = np.zeros(self._filter.half)  # source samples from index -half on
        self._buffer_start = -self._filter.half  # source index of _buffer[0]
        self._received = 0  # source samples pushed
        self._produced = 0  # output samples returned

    def push(self, samples: npt.ArrayLike) -> FloatArray:
        signal = np.asarray(samples, dtype=np.float64).ravel()
        if self._same:
            return signal.copy()
        self._buffer = np.concatenate([self._buffer, signal])
        self._received += signal.size
        # output n needs source samples up to floor(n * down / up) + half: n * down < (received - half) * up
        ready = ((self._received - self._filter.half) * self._filter.up - 1) // self._filter.down + 1
        return self._emit(ready)

    def finish(self) -> FloatArray:
        if self._same:
            return np.zeros(0)
        self._buffer = np.concatenate([self._buffer, np.zeros(self._filter.half + 1)])
        return self._emit(int(np.ceil(self._received * self._filter.up / self._filter.down)))

    def _emit(self, end: int) -> FloatArray:
        count = max(0, end - self._produced)
        out = self._filter.apply(self._buffer, self._produced, count, -self._buffer_start)
        self._produced += count
        keep_from = (self._produced * self._filter.down) // self._filter.up - self._filter.half
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :]
            self._buffer_start = keep_from
        return out


def to_pcm16(samples: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """Float samples in [-1, 1] as int16, clipped."""
    return np.clip(np.round(np.asarray(samples) * 32767.0), -32768, 32767).astype(np.int16)


# -- WAV files ---------------------------------------------------------------------------------------


def read_wav_16k(path: Path | str) -> npt.NDArray[np.int16]:
    """A WAV file (8/16/24/32-bit integer PCM, or any other encoding FFmpeg decodes, such as 32-bit
    float) at any rate and with any channels, as int16 mono samples at 16 kHz.

    Raises ``ValueError`` naming the file and the reason if it is missing or unreadable.
    """
    try:
        with wave.open(str(path), "rb") as source:
            channels, width, rate = source.getnchannels(), source.getsampwidth(), source.getframerate()
            raw = source.readframes(source.getnframes())
    except (OSError, EOFError, wave.Error) as error:
        reason = str(error) or type(error).__name__
        if isinstance(error, wave.Error) and "unknown format" in reason:
            return _decode_with_ffmpeg(path, reason)  # e.g. IEEE float samples
        if isinstance(error, EOFError):
            reason = "truncated or empty file"
        raise ValueError(f"{path}: cannot read as a PCM WAV file: {reason}") from error
    if channels < 1 or rate <= 0:
        raise ValueError(f"{path}: invalid WAV header ({channels} channels, {rate} Hz)")
    raw = raw[: len(raw) - len(raw) % (width * channels)]  # a truncated last frame
    if width == 2 and channels == 1 and rate == SAMPLE_RATE:
        return np.frombuffer(raw, dtype="<i2").copy()
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width in (2, 4):
        data = np.frombuffer(raw, dtype=f"<i{width}").astype(np.float64) / float(2 ** (8 * width - 1))
    elif width == 3:
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        data = np.where(value >= 1 << 23, value - (1 << 24), value).astype(np.float64) / float(1 << 23)
    else:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported (8, 16, 24 or 32-bit PCM)")
    mono = data.reshape(-1, channels).mean(axis=1)
    return to_pcm16(resample(mono, rate, SAMPLE_RATE))


def _decode_with_ffmpeg(path: Path | str, wave_reason: str) -> npt.NDArray[np.int16]:
    """Decode with FFmpeg (PyAV, which faster-whisper brings) to int16 mono at 16 kHz."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = next(iter(container.streams.audio), None)
            if stream is None:
                raise ValueError(f"{path}: cannot read as a WAV file: no audio in it")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            pieces = [
                out.to_ndarray().reshape(-1)
                for frame in [*container.decode(stream), None]
                for out in resampler.resample(frame)
            ]
    except av.error.FFmpegError as error:
        raise ValueError(f"{path}: cannot read as a WAV file: {wave_reason}; FFmpeg: {error}") from error
    return np.concatenate(pieces).astype(np.int16) if pieces else np.zeros(0, dtype=np.int16)


def read_wav_pcm16_16k(path: Path | str) -> bytes:
    """A PCM WAV file as the protocol's audio: PCM16 little-endian, 16 kHz, mono (see ``read_wav_16k``)."""
    return read_wav_16k(path).astype("<i2").tobytes()


# -- pacing ------------------------------------------------------------------------------------------


async def paced_chunks(
    pcm: bytes, *, chunk_ms: int = 100, speed: float = 1.0
) -> AsyncIterator[tuple[int, bytes]]:
    """``(audio_time_ms_of_chunk_end, chunk)`` for consecutive ``chunk_ms`` pieces of ``pcm``.

    A chunk is released when a live source would have it, at ``start + chunk_end / speed`` on a monotonic
    clock started at the first iteration (so sleeps never accumulate drift); ``speed`` 0 or infinity
    releases everything at once. The last chunk may be shorter; together the chunks are exactly ``pcm``.
    """
    if chunk_ms <= 0:
        raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
    if math.isnan(speed) or speed < 0:
        raise ValueError(f"speed must be >= 0 (0: as fast as possible), got {speed}")
    if len(pcm) % 2:
        raise ValueError("PCM16 audio must have an even number of bytes")
    paced = 0 < speed < math.inf
    step = chunk_ms * BYTES_PER_MS
    loop = asyncio.get_running_loop()
    started = loop.time()
    for offset in range(0, len(pcm), step):
        chunk = pcm[offset : offset + step]
        end_samples = (offset + len(chunk)) // 2
        if paced:
            delay = started + end_samples / SAMPLE_RATE / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        yield end_samples * 1000 // SAMPLE_RATE, chunk


# -- microphone --------------------------------------------------------------------------------------


def _sounddevice() -> Any:
    try:
        import sounddevice  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as error:
        raise RuntimeError(MIC_HINT) from error
    except OSError as error:  # the module is there but the PortAudio library is not
        raise RuntimeError(f"no sound input device: {error}") from error
    return sounddevice


def require_microphone() -> dict[str, Any]:
    """The default input device (sounddevice's description); ``RuntimeError`` with the reason if none."""
    sd = _sounddevice()
    try:
        device = sd.query_devices(kind="input")
    except Exception as error:  # sounddevice raises PortAudioError or ValueError
        raise RuntimeError(f"no sound input device: {error}") from error
    if not device or int(device.get("max_input_channels", 0)) < 1:
        raise RuntimeError("no sound input device: the default device has no input channels")
    return dict(device)


async def microphone_chunks(chunk_ms: int = 100) -> AsyncIterator[tuple[int, bytes]]:
    """``(audio_time_ms_of_chunk_end, chunk)`` of PCM16 16 kHz mono from the default input device.

    Records at 16 kHz where the device allows it, otherwise at its own rate, resampled as it arrives.
    Runs until the consumer stops iterating. Raises ``RuntimeError`` without a device or sounddevice.
    """
    if chunk_ms <= 0:
        raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
    device = require_microphone()
    sd = _sounddevice()
    rate = SAMPLE_RATE
    try:
        sd.check_input_settings(channels=1, dtype="int16", samplerate=SAMPLE_RATE)
    except Exception:
        rate = int(device.get("default_samplerate") or 48_000)
    resampler = StreamResampler(rate, SAMPLE_RATE)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def on_audio(data: Any, frames: int, time: Any, status: Any) -> None:  # on PortAudio's thread
        loop.call_soon_threadsafe(queue.put_nowait, bytes(data))

    try:
        stream = sd.RawInputStream(
            samplerate=rate, channels=1, dtype="int16", blocksize=rate * chunk_ms // 1000, callback=on_audio
        )
    except Exception as error:
        raise RuntimeError(f"no sound input device: cannot open it: {error}") from error
    samples = 0
    with stream:
        while True:
            raw = await queue.get()
            if rate == SAMPLE_RATE:
                chunk = raw
            else:
                recorded = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
                chunk = to_pcm16(resampler.push(recorded)).astype("<i2").tobytes()
            if chunk:
                samples += len(chunk) // 2
                yield samples * 1000 // SAMPLE_RATE, chunk
