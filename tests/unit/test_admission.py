"""Admission of a hello, without an event loop: each check refuses with its code (closing where it
must) and changes nothing; an admitted hello has joined the hub and holds one session of its token."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest

from engine.models import ModelCard
from engine.types import DiffusionParams, EarlyExitParams
from stream.admission import Admission, Gate, Refusal, admit
from stream.auth import Permission, TokenRule, TokenTable
from stream.errors import CloseCode, ErrorCode
from stream.hub import StreamHub
from stream.limits import Limits, SessionCounter
from stream.metrics import ServerMetrics, Snapshot
from stream.wire.messages import Hello, Role
from tests.unit.hub_harness import RecordingViewer

CARD = ModelCard(
    name="test-card",
    prompt_kind="canvas",
    trained=True,
    diffusion=DiffusionParams(),
    early_exit=EarlyExitParams(),
    pairs=(("en", "pt-BR"), ("pt-BR", "en")),
)


@dataclass
class LoadedModel:
    card: ModelCard


def rule(name: str, secret: str, *permissions: Permission, cap: int | None = None) -> TokenRule:
    digest = hashlib.sha256(secret.encode()).digest()
    return TokenRule(name, digest, frozenset(permissions), max_sessions=cap)


def make_gate(*, auth: bool = True, limits: Limits | None = None) -> Gate:
    table = TokenTable(
        [
            rule("studio", "pub-secret", Permission.PUBLISH, Permission.SUBSCRIBE, cap=2),
            rule("viewers", "view-secret", Permission.SUBSCRIBE),
        ]
    )
    snapshot = Snapshot(
        sessions={}, streams=0, canvases_in_flight=0, history_finals=0, resumable_sessions=0, draining=False
    )
    limits = limits or Limits()
    return Gate(
        table if auth else None,
        StreamHub(lambda job: None),
        SessionCounter(limits.max_sessions_per_token),
        limits,
        ServerMetrics(lambda: snapshot),
    )


def hello(role: Role, tracks: tuple[str, ...], token: str = "pub-secret", **fields: str) -> Hello:
    return Hello(stream="talk", role=role, tracks=tracks, token=token, **fields)


def test_a_valid_hello_joins_the_hub_and_counts_a_session() -> None:
    gate = make_gate()
    viewer = RecordingViewer("caption", "pt-BR")
    admitted = admit(
        gate, hello(Role.PUBLISH, ("caption", "pt-BR")), viewer, header_token="", model=LoadedModel(CARD)
    )
    assert isinstance(admitted, Admission)
    assert (admitted.rule, admitted.tracks) == ("studio", frozenset({"caption", "pt-BR"}))
    assert gate.hub.streams["talk"].publisher is viewer
    assert gate.sessions.count("studio") == 1


@pytest.mark.parametrize(
    ("token", "role", "code"),
    [("", Role.PUBLISH, ErrorCode.UNAUTHORIZED), ("nope", Role.SUBSCRIBE, ErrorCode.UNAUTHORIZED),
     ("view-secret", Role.PUBLISH, ErrorCode.FORBIDDEN)],
)  # fmt: skip
def test_a_token_that_does_not_allow_the_role_is_refused_and_closed(
    token: str, role: Role, code: ErrorCode
) -> None:
    gate = make_gate()
    refused = admit(
        gate, hello(role, ("caption",), token), RecordingViewer("caption"), header_token="", model=None
    )
    assert isinstance(refused, Refusal)
    assert (refused.code, refused.close) == (code, CloseCode.POLICY)
    assert "talk" not in gate.hub.streams
    assert gate.metrics.auth_failures.labels(code)._value.get() == 1


def test_the_header_token_counts_when_the_hello_has_none() -> None:
    gate = make_gate()
    admitted = admit(
        gate,
        hello(Role.SUBSCRIBE, ("pt-BR",), ""),
        RecordingViewer("pt-BR"),
        header_token="view-secret",
        model=None,
    )
    assert isinstance(admitted, Admission)
    assert admitted.rule == "viewers"


def test_a_track_the_model_cannot_translate_is_refused_and_the_connection_stays() -> None:
    gate = make_gate(auth=False)
    refused = admit(
        gate,
        hello(Role.PUBLISH, ("caption", "de"), ""),
        RecordingViewer(),
        header_token="",
        model=LoadedModel(CARD),
    )
    assert isinstance(refused, Refusal)
    assert (refused.code, refused.close) == (ErrorCode.UNSUPPORTED, None)
    assert "no track de for en sources" in refused.message
    german = admit(
        gate,
        hello(Role.PUBLISH, ("pt-BR",), "", source_lang="de"),
        RecordingViewer(),
        header_token="",
        model=LoadedModel(CARD),
    )
    assert isinstance(german, Refusal)  # German sources are not "translated" as English
    assert "talk" not in gate.hub.streams


def test_a_subscriber_is_checked_against_the_streams_own_language() -> None:
    gate = make_gate(auth=False)
    model = LoadedModel(CARD)
    publisher = admit(
        gate,
        hello(Role.PUBLISH, ("caption",), "", source_lang="pt-BR"),
        RecordingViewer("caption"),
        header_token="",
        model=model,
    )
    assert isinstance(publisher, Admission)
    english = admit(
        gate, hello(Role.SUBSCRIBE, ("en",), ""), RecordingViewer("en"), header_token="", model=model
    )
    assert isinstance(english, Admission)  # pt-BR -> en, whatever the subscriber's own source_lang says
    portuguese = admit(
        gate, hello(Role.SUBSCRIBE, ("pt-BR",), ""), RecordingViewer("pt-BR"), header_token="", model=model
    )
    assert isinstance(portuguese, Refusal)


def test_the_track_limit_and_the_token_cap_refuse_without_side_effects() -> None:
    gate = make_gate(limits=Limits(max_tracks_per_stream=1))
    first = admit(
        gate, hello(Role.SUBSCRIBE, ("pt-BR",)), RecordingViewer("pt-BR"), header_token="", model=None
    )
    assert isinstance(first, Admission)
    too_many = admit(gate, hello(Role.SUBSCRIBE, ("de",)), RecordingViewer("de"), header_token="", model=None)
    assert isinstance(too_many, Refusal)
    assert (too_many.code, too_many.close) == (ErrorCode.TOO_MANY_TRACKS, None)
    second = admit(
        gate, hello(Role.SUBSCRIBE, ("pt-BR",)), RecordingViewer("pt-BR"), header_token="", model=None
    )
    assert isinstance(second, Admission)
    capped = admit(
        gate, hello(Role.SUBSCRIBE, ("pt-BR",)), RecordingViewer("pt-BR"), header_token="", model=None
    )
    assert isinstance(capped, Refusal)
    assert (capped.code, capped.close) == (ErrorCode.TOO_MANY_SESSIONS, CloseCode.TRY_AGAIN_LATER)
    assert gate.sessions.count("studio") == 2
    assert len(gate.hub.streams["talk"].viewers) == 2


def test_a_second_publisher_is_refused_and_its_session_released() -> None:
    gate = make_gate()
    assert isinstance(
        admit(
            gate, hello(Role.PUBLISH, ("caption",)), RecordingViewer("caption"), header_token="", model=None
        ),
        Admission,
    )
    second = admit(
        gate, hello(Role.PUBLISH, ("caption",)), RecordingViewer("caption"), header_token="", model=None
    )
    assert isinstance(second, Refusal)
    assert (second.code, second.close) == (ErrorCode.INVALID_STATE, None)
    assert gate.sessions.count("studio") == 1


def test_a_base_language_track_is_served_under_its_own_name_and_counts_as_another_track() -> None:
    """docs/protocol.md, *Language tags*: ``pt`` (any case) is served by a ``pt-BR`` model, the track
    keeps the name asked for, and ``pt`` and ``pt-BR`` are two tracks of the stream."""
    gate = make_gate(auth=False, limits=Limits(max_tracks_per_stream=1))
    model = LoadedModel(CARD)
    short = admit(
        gate,
        hello(Role.PUBLISH, ("caption", "pt"), ""),
        RecordingViewer("caption", "pt"),
        header_token="",
        model=model,
    )
    assert isinstance(short, Admission)
    assert short.tracks == frozenset({"caption", "pt"})
    both = admit(
        gate, hello(Role.SUBSCRIBE, ("pt-BR",), ""), RecordingViewer("pt-BR"), header_token="", model=model
    )
    assert isinstance(both, Refusal)
    assert both.code == ErrorCode.TOO_MANY_TRACKS  # pt-BR is not the same track as pt
    refused = admit(
        gate, hello(Role.SUBSCRIBE, ("de",), ""), RecordingViewer("de"), header_token="", model=model
    )
    assert isinstance(refused, Refusal)
    assert "en -> pt-BR" in refused.message  # refusals name the model's own tags
