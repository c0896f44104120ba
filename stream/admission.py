"""Admitting a ``hello``: who may do what on which stream, and what the session then joins.

Sans I/O and without an event loop: :func:`admit` takes its dependencies explicitly (the token
table, the loaded model's card, the hub, the per-token session counter, the limits and the metrics)
and returns either an :class:`Admission` (the session has joined its stream) or a :class:`Refusal`
(what to answer; ``close`` set when the connection is closed after it). The checks, in order: the
token allows the role on the stream (401/403-style codes, close 1008); ``source_lang`` ``auto`` only
where the server recognises speech; every requested track is reached from the stream's language (a
loaded translator, or from speech whisper's ``en`` and the pivots through it: stream/speech_tracks.py;
for ``auto``, from some language); the stream stays within its track limit; the
token's session cap; and the hub's own rules (one publisher per stream). A refused hello changes
nothing; an admitted one has joined the hub and holds one session of its token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from engine.language_id import AUTO
from engine.types import CAPTION_TRACK
from stream.auth import ANONYMOUS, Permission, TokenTable
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.hub import StreamHub
from stream.limits import Limits, SessionCounter
from stream.metrics import ServerMetrics
from stream.speech_tracks import base_language, describe, routable
from stream.stream_state import StreamState, Viewer
from stream.wire.messages import Hello, Role

if TYPE_CHECKING:
    from engine.models import ModelCard


class CardHolder(Protocol):
    """A loaded model, as admission sees it: what it can translate."""

    @property
    def card(self) -> ModelCard: ...


@dataclass(frozen=True, slots=True)
class Admission:
    stream: StreamState
    tracks: frozenset[str]
    rule: str  # the token rule this session counts against (release it with SessionCounter.close)


@dataclass(frozen=True, slots=True)
class Refusal:
    code: ErrorCode
    message: str
    close: CloseCode | None = None  # None: answered, the connection stays open for another hello


@dataclass(frozen=True, slots=True)
class Gate:
    """Admission's dependencies (the server's own objects)."""

    auth: TokenTable | None
    hub: StreamHub
    sessions: SessionCounter
    limits: Limits
    metrics: ServerMetrics


def admit(
    gate: Gate, hello: Hello, viewer: Viewer, *, header_token: str, model: CardHolder | None
) -> Admission | Refusal:
    """See the module docstring. ``model`` None: not loaded yet (tracks are not checked)."""
    rule_name, cap = ANONYMOUS, None
    if gate.auth is not None:
        try:
            rule = gate.auth.authorize(
                hello.token or header_token, Permission(hello.role.value), hello.stream
            )
        except ProtocolError as error:
            gate.metrics.auth_failures.labels(error.code).inc()
            return Refusal(ErrorCode(error.code), error.message, CloseCode.POLICY)
        rule_name, cap = rule.name, rule.max_sessions
    tracks = frozenset(hello.tracks) or frozenset({CAPTION_TRACK})
    state = gate.hub.streams.get(hello.stream)
    # a subscriber gets translations of the stream's language once it has a publisher
    source_lang = (
        state.spoken_lang if state is not None and hello.role is Role.SUBSCRIBE else hello.source_lang
    )
    speech = gate.hub.accepts_audio
    if hello.role is Role.PUBLISH and base_language(hello.source_lang) == AUTO and not speech:
        return Refusal(
            ErrorCode.UNSUPPORTED,
            "source_lang auto is identified from speech, and speech recognition is off on this server; "
            "give the language of the text",
        )
    if model is not None:
        card = model.card
        missing = sorted(
            t for t in tracks - {CAPTION_TRACK} if not routable(card, source_lang, t, speech=speech)
        )
        if missing:
            return Refusal(
                ErrorCode.UNSUPPORTED,
                f"this server translates {describe(card, speech=speech)} only; "
                f"no track {', '.join(missing)} for {source_lang} sources",
            )
    targets = (state.target_tracks() if state is not None else set()) | (tracks - {CAPTION_TRACK})
    if len(targets) > gate.limits.max_tracks_per_stream:
        gate.metrics.limit_hits.labels("tracks").inc()
        return Refusal(
            ErrorCode.TOO_MANY_TRACKS,
            f"stream {hello.stream!r} would be translated into {len(targets)} languages; "
            f"at most {gate.limits.max_tracks_per_stream}",
        )
    if not gate.sessions.open(rule_name, cap):
        gate.metrics.limit_hits.labels("sessions_per_token").inc()
        return Refusal(
            ErrorCode.TOO_MANY_SESSIONS,
            f"token {rule_name or '(none)'!r} has {gate.sessions.count(rule_name)} sessions open",
            CloseCode.TRY_AGAIN_LATER,
        )
    try:
        joined = gate.hub.join(
            hello.stream, viewer, publisher=hello.role is Role.PUBLISH, source_lang=hello.source_lang
        )
    except ProtocolError as error:
        gate.sessions.close(rule_name)
        return Refusal(ErrorCode(error.code), error.message)
    return Admission(joined, tracks, rule_name)
