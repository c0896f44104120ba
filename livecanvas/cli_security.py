"""``livecanvas serve``/``demo`` flags for authentication and limits, and the settings built from them.

``auth_config`` is where the secure default lives: without ``--tokens`` (or ``LIVECANVAS_TOKENS_FILE``
or ``LIVECANVAS_TOKENS``) the server does not start unless ``--insecure-dev`` says so explicitly.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from stream.auth import TokenConfigError, TokenTable
from stream.config import env_str
from stream.limits import Limits


def add_security_flags(parser: argparse.ArgumentParser) -> None:
    """Authentication and limits (docs/operations.md)."""
    group = parser.add_argument_group("authentication and limits (docs/operations.md)")
    group.add_argument(
        "--tokens",
        metavar="FILE",
        type=Path,
        default=env_str("TOKENS_FILE", "") or None,
        help="token file (TOML): who may publish, subscribe, administer which streams",
    )
    group.add_argument(
        "--insecure-dev",
        action="store_true",
        default=env_str("INSECURE_DEV", "") == "1",
        help="no authentication at all: anyone who reaches the port may publish and read (development only)",
    )
    limits = Limits()
    for name, kind, help_text in LIMIT_FLAGS:
        flag = "--" + name.replace("_", "-")
        value = env_str(name.upper(), str(getattr(limits, name)))
        try:
            default = kind(value)
        except ValueError:
            raise SystemExit(f"LIVECANVAS_{name.upper()} must be a number, got {value!r}") from None
        group.add_argument(flag, dest=f"limit_{name}", type=kind, default=default, help=help_text)


LIMIT_FLAGS: tuple[tuple[str, type[int] | type[float], str], ...] = (
    ("max_sessions", int, "open WebSocket connections in all"),
    ("max_sessions_per_token", int, "sessions per token (a token's own max_sessions overrides it)"),
    ("max_tracks_per_stream", int, "target languages per stream"),
    ("hello_timeout_s", float, "seconds a connection may take to be accepted"),
    ("max_audio_speed", float, "audio faster than this multiple of real time is throttled"),
    ("audio_burst_s", float, "seconds of audio taken at once before the audio rate applies"),
    ("max_text_chars_per_s", float, "text input rate per session"),
    ("text_burst_chars", int, "text characters taken at once before the text rate applies"),
    ("max_viewer_backlog", int, "messages queued for a viewer before it is cut off as too slow"),
    ("max_errors", int, "error replies to one connection before it is closed"),
    ("history_finals", int, "finals kept per stream for resume"),
    ("history_s", float, "how long finals are kept for resume, in seconds"),
    ("max_detached_sessions", int, "disconnected sessions remembered for resume"),
)


def auth_config(args: argparse.Namespace, *, command: str = "serve") -> TokenTable | None:
    """The token table from ``--tokens`` or ``LIVECANVAS_TOKENS``; ``None`` only with ``--insecure-dev``.
    Exits with a clear message when neither is given or the tokens are malformed."""
    spec = env_str("TOKENS", "")
    try:
        if args.tokens is not None:
            table: TokenTable | None = TokenTable.from_toml(args.tokens)
        elif spec:
            table = TokenTable.from_spec(spec)
        else:
            table = None
    except TokenConfigError as error:
        raise SystemExit(f"livecanvas {command}: tokens: {error}") from None
    if table is None and not args.insecure_dev:
        raise SystemExit(
            f"livecanvas {command}: no tokens configured. Give --tokens FILE (or LIVECANVAS_TOKENS_FILE, or "
            "LIVECANVAS_TOKENS; see docs/operations.md), or --insecure-dev to run without authentication "
            "on a development machine."
        )
    if table is not None and args.insecure_dev:
        raise SystemExit(f"livecanvas {command}: --insecure-dev and tokens exclude each other")
    return table


def limits_config(args: argparse.Namespace) -> Limits:
    try:
        return replace(Limits(), **{name: getattr(args, f"limit_{name}") for name, _, _ in LIMIT_FLAGS})
    except ValueError as error:
        raise SystemExit(f"livecanvas: {error}") from None
