"""Server settings: one frozen dataclass, filled from CLI flags (which default from ``LIVECANVAS_*``
environment variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def env_str(name: str, default: str) -> str:
    return os.environ.get(f"LIVECANVAS_{name}", default)


def env_int(name: str, default: int) -> int:
    value = os.environ.get(f"LIVECANVAS_{name}")
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"LIVECANVAS_{name} must be an integer, got {value!r}") from None


ASR_DRAFT_CHOICES = ("base-short", "tiny.en", "none")
SHORT_CONTEXT_PAD_S = 1.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    model: str = "embedded"
    device: str = "cpu"
    dtype: str = "auto"
    torch_threads: int = 0  # 0: torch's default (one per core)
    max_batch: int = 32  # canvases advanced by one forward at most
    max_frame_bytes: int = 1 << 20
    max_window_words: int = 32
    idle_ms: int = 1500  # an unfinished sentence becomes a window after this much silence
    drain_timeout_s: float = 30.0  # graceful shutdown: how long live windows may take to finish
    seed: int = 0
    asr: bool = True  # speech recognition for audio input (loads the whisper models)
    asr_threads: int = 0  # CTranslate2 threads per model (0: one per core, at most 4)
    asr_audio_context_pad_s: float = 0.0  # >0: final passes encode the audio + this padding, not 30 s
    asr_draft: str = "none"  # extra draft passes: "none", "base-short" (audio + 1 s) or "tiny.en"
    asr_max_batch: int = 8  # recognition requests per round, at most

    def __post_init__(self) -> None:
        if self.asr_draft not in ASR_DRAFT_CHOICES:
            raise ValueError(f"asr_draft must be one of {ASR_DRAFT_CHOICES}, got {self.asr_draft!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        for name in ("max_batch", "max_frame_bytes", "max_window_words", "idle_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
