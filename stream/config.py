"""Server settings: one frozen dataclass, filled from CLI flags (which default from ``LIVECANVAS_*``
environment variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from engine.asr import ENGLISH_RECOGNISERS, RecogniserSettings, default_english_recogniser
from engine.asr_models import is_whisper_model_dir
from engine.cluster.spec import ray_spec
from engine.types import SAMPLERS, Sampler
from engine.user_translator import TranslatorSpec
from stream.auth import TokenTable
from stream.draft_display import OPEN_WINDOWS, OpenWindows
from stream.limits import Limits


def env_str(name: str, default: str) -> str:
    return os.environ.get(f"LIVECANVAS_{name}", default)


def env_optional_bool(name: str) -> bool | None:
    """``LIVECANVAS_<NAME>`` as a yes/no switch; None when it is unset (the built-in default decides)."""
    value = os.environ.get(f"LIVECANVAS_{name}")
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"LIVECANVAS_{name} must be 1 or 0 (true/false, yes/no, on/off), got {value!r}")


_Default = TypeVar("_Default", int, None)


def env_int(name: str, default: _Default) -> int | _Default:
    value = os.environ.get(f"LIVECANVAS_{name}")
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"LIVECANVAS_{name} must be an integer, got {value!r}") from None


MQTT_PAYLOADS = ("json", "msgpack")


def parse_host_port(value: str, default_port: int) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPV6]:PORT``; ``ValueError`` if the port is not a number."""
    host, port = value, str(default_port)
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif value.count(":") == 1:
        host, port = value.split(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"expected HOST or HOST:PORT, got {value!r}")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """The MQTT bridge (stream/mqtt/bridge.py, docs/broadcast.md); the server runs one when configured."""

    host: str
    port: int = 1883
    prefix: str = "livecanvas"  # topic tree root: <prefix>/<stream>/<track>/final ...
    payload: str = "json"  # "json" or "msgpack"
    buffer: int = 1000  # finals kept in memory while the broker is away; more spill to disk
    spill_dir: str = ""  # where they spill ("": a private temporary directory)
    client_id: str = ""  # "": livecanvas-<random>
    tracks: tuple[str, ...] = ()  # target languages translated for streams fed over MQTT
    source_lang: str = "en"  # language of text fed over MQTT
    flush_timeout_s: float = 10.0  # graceful shutdown: how long pending finals may take to go out
    reconnect_max_s: float = 5.0  # reconnect backoff doubles from 0.1 s up to this

    def __post_init__(self) -> None:
        if self.payload not in MQTT_PAYLOADS:
            raise ValueError(f"MQTT payload must be one of {MQTT_PAYLOADS}, got {self.payload!r}")
        if not 0 < self.port <= 65535:
            raise ValueError(f"MQTT port must be 1..65535, got {self.port}")
        if self.buffer < 1:
            raise ValueError(f"MQTT buffer must be at least 1, got {self.buffer}")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    model: str = "embedded"
    # user translators served beside ``model`` (``--translator DIR[:SRC:TGT]``, engine/user_translator.py):
    # Hugging Face Marian checkpoints, each on its own engine thread, routed by language pair
    translators: tuple[str, ...] = ()
    device: str = "cpu"
    dtype: str = "auto"
    torch_threads: int = 0  # 0: one per core; half the cores when speech recognition is on
    sampler: Sampler = "fast"  # "exact": generate()'s sampling, bit for bit (see docs/engine.md)
    # int8 dynamic quantisation of the translator's linear layers (CPU): faster, but activations are
    # scaled per batch, so a canvas's tokens may then depend on what it was batched with; None: the
    # model's default (the embedded translator: its drafter in int8, its verified finals exact)
    int8: bool | None = None
    max_batch: int = 32  # canvases advanced by one forward at most
    max_frame_bytes: int = 1 << 20
    max_window_words: int = 32
    idle_ms: int = 1500  # an unfinished sentence becomes a window after this much silence
    open_windows: OpenWindows = "edit"  # translating windows still open (stream/draft_display.py)
    draft_hold_back: int = 0  # words of a translated draft not shown yet: the latency/flicker trade
    draft_agreement: bool = True  # show only what a window's consecutive engine drafts agree on
    # a track nobody subscribes to any more has its windows cancelled after this long (stream/hub.py)
    orphan_grace_ms: int = 5000
    drain_timeout_s: float = 30.0  # graceful shutdown: how long live windows may take to finish
    seed: int = 0
    asr: bool = True  # speech recognition for audio input (loads the whisper models)
    asr_threads: int = 0  # CTranslate2 threads per model (0: one per core, at most 4)
    asr_audio_context_pad_s: float = 0.0  # >0: final passes encode the audio + this padding, not 30 s
    asr_draft: str = "none"  # extra draft passes: "none", "base-short" (audio + 1 s) or "tiny.en"
    asr_max_batch: int = 8  # recognition requests per round, at most
    # this process's recogniser of English speech, "moonshine" (the default where it is installed) or
    # "whisper" (other languages always use whisper), or ray:<app>[@address], a recogniser deployed on
    # a Ray cluster (engine/cluster/); the recogniser settings above then come from that deployment; or
    # a faster-whisper model directory (model.bin + config.json), used instead of whisper base for every
    # language whisper serves (English keeps Moonshine where it is installed)
    asr_model: str = field(default_factory=default_english_recogniser)
    # an audio caption window closes once its words span this long; None: the transcriber's own
    # default (engine/segment_transcriber.py for Moonshine, engine/transcriber.py for whisper)
    asr_window_ms: int | None = None
    mqtt: MqttConfig | None = None  # publish to / read from an MQTT broker
    # who may publish / subscribe (stream/auth.py). None: anyone may do anything, which only suits
    # development; `livecanvas serve` refuses to start that way without --insecure-dev.
    auth: TokenTable | None = None
    limits: Limits = field(default_factory=Limits)  # stream/limits.py, docs/operations.md

    @property
    def recogniser(self) -> RecogniserSettings:
        """The models a local recogniser loads (engine/asr.py)."""
        english = self.asr_model if self.asr_model in ENGLISH_RECOGNISERS else default_english_recogniser()
        own = is_whisper_model_dir(self.asr_model)
        return RecogniserSettings(
            draft=self.asr_draft,
            final_context_pad_s=self.asr_audio_context_pad_s,
            threads=self.asr_threads,
            english=english,
            whisper_model=Path(self.asr_model).expanduser().resolve() if own else None,
        )

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        self.recogniser  # noqa: B018 - validates the recogniser settings
        if (
            self.asr_model not in ENGLISH_RECOGNISERS
            and ray_spec(self.asr_model) is None
            and not is_whisper_model_dir(self.asr_model)
        ):
            raise ValueError(
                f"asr_model must be one of {', '.join(ENGLISH_RECOGNISERS)}, ray:APP[@ADDRESS] or a "
                f"faster-whisper model directory (model.bin + config.json), got {self.asr_model!r}"
            )
        for spec in self.translators:
            TranslatorSpec.parse(spec)  # ValueError for a malformed pair
        if self.translators and ray_spec(self.model) is not None:
            raise ValueError("--translator serves a local model; it cannot be combined with a ray: model")
        if self.open_windows not in OPEN_WINDOWS:
            raise ValueError(
                f"open_windows must be one of {', '.join(OPEN_WINDOWS)}, got {self.open_windows!r}"
            )
        if self.draft_hold_back < 0:
            raise ValueError(f"draft_hold_back must be >= 0, got {self.draft_hold_back}")
        if self.asr_window_ms is not None and self.asr_window_ms <= 0:
            raise ValueError(f"asr_window_ms must be positive, got {self.asr_window_ms}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        for name in (
            "max_batch",
            "max_frame_bytes",
            "max_window_words",
            "idle_ms",
            "orphan_grace_ms",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
