"""``livecanvas serve``/``demo`` flags for the server, its models and its MQTT bridge, and the
``ServerConfig`` built from them (authentication and limits: ``livecanvas/cli_security.py``)."""

from __future__ import annotations

import argparse

from engine.asr import ASR_DRAFT_CHOICES, SHORT_CONTEXT_PAD_S
from livecanvas.cli_security import add_security_flags, limits_config
from stream.config import (
    MQTT_PAYLOADS,
    MqttConfig,
    ServerConfig,
    env_int,
    env_optional_bool,
    env_str,
    parse_host_port,
)
from stream.draft_display import OPEN_WINDOWS


def add_server_flags(parser: argparse.ArgumentParser, *, default_port: int | None = None) -> None:
    defaults = ServerConfig()
    parser.add_argument("--host", default=env_str("HOST", defaults.host))
    parser.add_argument(
        "--port", type=int, default=env_int("PORT", defaults.port if default_port is None else default_port)
    )
    parser.add_argument(
        "--model",
        default=env_str("MODEL", defaults.model),
        help="'embedded', a checkpoint directory, a Hugging Face id already in the local cache, "
        "or ray:APP[@ADDRESS], a translator deployed on a Ray cluster by `livecanvas deploy`",
    )
    parser.add_argument(
        "--translator",
        dest="translators",
        action="append",
        metavar="DIR[:SRC:TGT]",
        default=[t for t in env_str("TRANSLATORS", "").split(",") if t],
        help="also serve this Hugging Face Marian checkpoint (an opus-mt download: a directory or a hub id "
        "in the local cache), decoded greedily on its own engine thread; its language pair comes from the "
        "checkpoint, or give it as DIR:SRC:TGT. Repeatable (LIVECANVAS_TRANSLATORS: comma-separated)",
    )
    parser.add_argument(
        "--sampler",
        choices=("exact", "fast"),
        default=env_str("SAMPLER", defaults.sampler),
        help="fast (default): samples accepted positions only, with a leaner decoder step; "
        "exact: generate()'s sampling, bit for bit (docs/engine.md)",
    )
    parser.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=env_optional_bool("INT8"),
        help="quantise the translator's linear layers to int8 (CPU): faster steps (figures in "
        "bench/README.md), but a window's translation may then depend on what it was batched with "
        "(default: the model's; the embedded translator quantises its drafter only, its verified "
        "finals stay the teacher's exactly)",
    )
    parser.add_argument("--device", default=env_str("DEVICE", defaults.device), help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--dtype", default=env_str("DTYPE", defaults.dtype), help="auto, float32, bfloat16, ..."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=env_int("THREADS", defaults.torch_threads),
        help="torch threads (0: default)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=env_int("MAX_BATCH", defaults.max_batch),
        help="canvases per forward, at most",
    )
    parser.add_argument(
        "--max-frame-bytes", type=int, default=env_int("MAX_FRAME_BYTES", defaults.max_frame_bytes)
    )
    parser.add_argument(
        "--window-words", type=int, default=env_int("WINDOW_WORDS", defaults.max_window_words)
    )
    parser.add_argument("--idle-ms", type=int, default=env_int("IDLE_MS", defaults.idle_ms))
    parser.add_argument(
        "--open-windows",
        choices=OPEN_WINDOWS,
        default=env_str("OPEN_WINDOWS", defaults.open_windows),
        help="translate windows while they are open: edit one canvas in place (default), restart each "
        "text from a blank canvas, or off (translate closed windows only)",
    )
    parser.add_argument(
        "--draft-hold-back",
        type=int,
        default=env_int("DRAFT_HOLD_BACK", defaults.draft_hold_back),
        help="words at the end of a translated draft not shown yet: more is steadier, fewer is sooner",
    )
    parser.add_argument(
        "--draft-agreement",
        action=argparse.BooleanOptionalAction,
        default=defaults.draft_agreement
        if (agree := env_optional_bool("DRAFT_AGREEMENT")) is None
        else agree,
        help="show only the words a window's consecutive translated drafts agree on",
    )
    parser.add_argument(
        "--no-asr", dest="asr", action="store_false", help="no speech recognition (text input only)"
    )
    parser.add_argument(
        "--asr-short-context",
        dest="asr_audio_context_pad_s",
        action="store_const",
        const=SHORT_CONTEXT_PAD_S,
        default=ServerConfig().asr_audio_context_pad_s,
        help="final passes encode only the audio + 1 s, not a full 30 s window: faster, less accurate",
    )
    parser.add_argument(
        "--asr-draft",
        choices=ASR_DRAFT_CHOICES,
        default=env_str("ASR_DRAFT", ServerConfig().asr_draft),
        help="extra draft passes between final passes: none (default), base on the audio + 1 s, or tiny.en",
    )
    parser.add_argument(
        "--asr-model",
        default=env_str("ASR_MODEL", ServerConfig().asr_model),
        help="the recogniser of English speech in this process, moonshine (default where installed) or "
        "whisper (other languages always use whisper base), or ray:APP-asr[@ADDRESS], the recogniser "
        "deployed on a Ray cluster by `livecanvas deploy --asr`, or DIR, a faster-whisper (CTranslate2) "
        "model directory (small, medium, large-v3, distil...) used instead of whisper base for the "
        "languages whisper serves",
    )
    parser.add_argument(
        "--asr-window-ms",
        type=int,
        default=env_int("ASR_WINDOW_MS", None),
        help="an audio caption closes once its words span this long (default: 2000 with Moonshine, 1200 "
        "while nobody watches a translation track of the stream; 2500 with whisper): longer captions "
        "give the translator more to work with, and every word waits for its caption's end. Set, it is "
        "the one span, translated or not",
    )
    add_security_flags(parser)
    add_mqtt_flags(parser)


def add_mqtt_flags(parser: argparse.ArgumentParser) -> None:
    """The MQTT bridge's flags (docs/broadcast.md); ``--mqtt`` turns it on."""
    group = parser.add_argument_group("MQTT bridge (docs/broadcast.md)")
    defaults = MqttConfig(host="-")
    group.add_argument(
        "--mqtt",
        metavar="HOST[:PORT]",
        default=env_str("MQTT", ""),
        help="publish to / read from this broker",
    )
    group.add_argument("--mqtt-prefix", default=env_str("MQTT_PREFIX", defaults.prefix), help="topic root")
    group.add_argument(
        "--mqtt-payload", choices=MQTT_PAYLOADS, default=env_str("MQTT_PAYLOAD", defaults.payload)
    )
    group.add_argument(
        "--mqtt-buffer",
        type=int,
        default=env_int("MQTT_BUFFER", defaults.buffer),
        help="finals kept in memory while the broker is away; more spill to disk",
    )
    group.add_argument("--mqtt-spill-dir", default=env_str("MQTT_SPILL_DIR", ""), help="default: a temp dir")
    group.add_argument("--mqtt-client-id", default=env_str("MQTT_CLIENT_ID", ""))
    group.add_argument(
        "--mqtt-tracks",
        default=env_str("MQTT_TRACKS", ""),
        help="comma-separated target languages translated for streams fed over MQTT",
    )
    group.add_argument("--mqtt-source-lang", default=env_str("MQTT_SOURCE_LANG", defaults.source_lang))


def mqtt_config(args: argparse.Namespace) -> MqttConfig | None:
    if not args.mqtt:
        return None
    from stream.mqtt.codec import check_settings

    try:
        host, port = parse_host_port(args.mqtt, 1883)
        config = MqttConfig(
            host=host,
            port=port,
            prefix=args.mqtt_prefix,
            payload=args.mqtt_payload,
            buffer=args.mqtt_buffer,
            spill_dir=args.mqtt_spill_dir,
            client_id=args.mqtt_client_id,
            tracks=tuple(t for t in args.mqtt_tracks.split(",") if t),
            source_lang=args.mqtt_source_lang,
        )
        check_settings(config.prefix, config.tracks, config.source_lang)
    except ValueError as error:
        raise SystemExit(f"livecanvas: MQTT settings: {error}") from None
    return config


def server_config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        model=args.model,
        translators=tuple(args.translators),
        device=args.device,
        dtype=args.dtype,
        torch_threads=args.threads,
        sampler=args.sampler,
        int8=args.int8,
        max_batch=args.max_batch,
        max_frame_bytes=args.max_frame_bytes,
        max_window_words=args.window_words,
        idle_ms=args.idle_ms,
        open_windows=args.open_windows,
        draft_hold_back=args.draft_hold_back,
        draft_agreement=args.draft_agreement,
        asr=args.asr,
        asr_draft=args.asr_draft,
        asr_audio_context_pad_s=args.asr_audio_context_pad_s,
        asr_window_ms=args.asr_window_ms,
        asr_model=args.asr_model,
        mqtt=mqtt_config(args),
        limits=limits_config(args),
    )
