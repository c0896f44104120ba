"""The token table (stream/auth.py) without a server: sources, roles per stream, refusals."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from stream.auth import Permission, TokenConfigError, TokenRule, TokenTable, digest, token_from_headers
from stream.errors import ErrorCode, ProtocolError

TOKENS_TOML = """
[[token]]
name = "studio"
secret = "studio-secret"
roles = ["publish", "subscribe"]
streams = ["talk-*"]

[[token]]
name = "obs"
secret_env = "OBS_TOKEN"
roles = ["subscribe"]

[[token]]
name = "ops"
secret_sha256 = "{ops_hash}"
roles = ["admin"]
streams = ["*"]
max_sessions = 2
"""


@pytest.fixture
def table() -> TokenTable:
    text = TOKENS_TOML.format(ops_hash=hashlib.sha256(b"ops-secret").hexdigest())
    return TokenTable.from_toml_text(text, environ={"OBS_TOKEN": "obs-secret"})


def refusal(table: TokenTable, token: str, permission: Permission, stream: str | None) -> str:
    with pytest.raises(ProtocolError) as caught:
        table.authorize(token, permission, stream)
    return caught.value.code


def test_roles_apply_to_the_streams_a_token_names(table: TokenTable) -> None:
    assert table.authorize("studio-secret", Permission.PUBLISH, "talk-1").name == "studio"
    assert table.authorize("studio-secret", Permission.SUBSCRIBE, "talk-1").name == "studio"
    assert refusal(table, "studio-secret", Permission.PUBLISH, "keynote") == ErrorCode.FORBIDDEN
    assert table.authorize("obs-secret", Permission.SUBSCRIBE, "anything").name == "obs"
    assert refusal(table, "obs-secret", Permission.PUBLISH, "talk-1") == ErrorCode.FORBIDDEN
    assert refusal(table, "obs-secret", Permission.ADMIN, None) == ErrorCode.FORBIDDEN
    assert refusal(table, "studio-secret", Permission.ADMIN, None) == ErrorCode.FORBIDDEN


def test_admin_may_do_everything_on_its_streams(table: TokenTable) -> None:
    for permission in Permission:
        assert table.authorize("ops-secret", permission, "talk-1").name == "ops"
    assert table.identify("ops-secret") is not None
    rule = table.identify("ops-secret")
    assert rule is not None
    assert rule.max_sessions == 2


@pytest.mark.parametrize("token", ["", "wrong", "studio-secret ", "STUDIO-SECRET", "studio-secre"])
def test_unknown_and_empty_tokens_are_unauthorized(table: TokenTable, token: str) -> None:
    assert refusal(table, token, Permission.SUBSCRIBE, "talk-1") == ErrorCode.UNAUTHORIZED
    assert table.identify(token) is None


def test_secrets_are_kept_only_as_digests(table: TokenTable) -> None:
    for rule in table.rules:
        assert len(rule.secret_sha256) == 32
    assert table.rules[0].secret_sha256 == digest("studio-secret")
    assert "studio-secret" not in repr(table.rules)


def test_identify_compares_every_rule_in_constant_time(
    table: TokenTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison is hmac.compare_digest, against every rule whatever matches first."""
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert table.identify("studio-secret") is not None
    assert calls == [rule.secret_sha256 for rule in table.rules]


def test_the_environment_spec_gives_roles_streams_and_secrets() -> None:
    table = TokenTable.from_spec("publish+subscribe:talk-*,panel:s3cret:with:colons  subscribe:*:v1ewer")
    assert len(table) == 2
    assert table.authorize("s3cret:with:colons", Permission.PUBLISH, "panel").name == "env-1"
    assert table.authorize("v1ewer", Permission.SUBSCRIBE, "x").name == "env-2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "one or more [[token]]"),
        ("[[token]]\nname='a'\nroles=['publish']\n", "exactly one of secret"),
        ("[[token]]\nname='a'\nsecret='x'\nroles=['root']\n", "unknown role 'root'"),
        ("[[token]]\nname='a'\nsecret='x'\nroles=[]\n", "roles must be a non-empty list"),
        ("[[token]]\nname='a'\nsecret_env='NOPE'\nroles=['publish']\n", "'NOPE' is not set"),
        ("[[token]]\nname='a'\nsecret='x'\nroles=['publish']\nstreams=''\n", "glob patterns"),
        ("[[token]]\nname='a'\nsecret='x'\nroles=['publish']\nmax_sessions=0\n", "max_sessions"),
        ("[[token]]\nname='a'\nsecret='x'\nroles=['publish']\ncolour='red'\n", "unknown keys colour"),
        ("[[token]]\nname='a'\nsecret_sha256='zz'\nroles=['publish']\n", "64 hex digits"),
        ("[[token]]\nname='a'\nsecret='x'\nroles=['publish']\n[[token]]\nname='a'\nsecret='y'\nroles=['publish']\n",
         "names must be unique"),
        ("[[token]]\nname='a'\nsecret='x'\nroles=['publish']\n[[token]]\nname='b'\nsecret='x'\nroles=['publish']\n",
         "same secret"),
        ("[[token\n", "<tokens>"),
    ],
)  # fmt: skip
def test_malformed_token_files_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(TokenConfigError, match=message.replace("[", r"\[")):
        TokenTable.from_toml_text(text, environ={})


@pytest.mark.parametrize("spec", ["publish:*", "publish::x", ":*:x", "root:*:x"])
def test_malformed_environment_specs_are_refused(spec: str) -> None:
    with pytest.raises(TokenConfigError):
        TokenTable.from_spec(spec)


def test_a_missing_token_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(TokenConfigError, match="cannot read token file"):
        TokenTable.from_toml(tmp_path / "absent.toml")


def test_ephemeral_tables_issue_fresh_admin_and_subscribe_tokens() -> None:
    first, issued = TokenTable.ephemeral()
    second, again = TokenTable.ephemeral()
    assert issued[Permission.ADMIN] != again[Permission.ADMIN]
    assert first.authorize(issued[Permission.ADMIN], Permission.PUBLISH, "demo")
    assert first.authorize(issued[Permission.SUBSCRIBE], Permission.SUBSCRIBE, "demo")
    with pytest.raises(ProtocolError):
        first.authorize(issued[Permission.SUBSCRIBE], Permission.PUBLISH, "demo")
    with pytest.raises(ProtocolError):
        second.authorize(issued[Permission.ADMIN], Permission.SUBSCRIBE, "demo")


def test_rules_validate_themselves() -> None:
    with pytest.raises(TokenConfigError):
        TokenRule(name="a", secret_sha256=b"short", permissions=frozenset({Permission.PUBLISH}))
    with pytest.raises(TokenConfigError):
        TokenTable([])


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", ""), ("", ""), ("Bearer", "")],
)
def test_bearer_tokens_come_from_the_authorization_header(header: str, token: str) -> None:
    assert token_from_headers({"authorization": header}) == token
