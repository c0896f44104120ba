"""Who may do what: the token table, its sources (a TOML file, an environment variable, an ephemeral
set for ``livecanvas demo``) and the permission check. Sans-I/O: no sockets, no event loop.

A token *rule* grants some permissions on the streams whose names match its glob patterns:

* ``publish``: feed a stream (WebSocket ``hello`` with role ``publish``);
* ``subscribe``: read a stream (role ``subscribe``, the overlay and viewer pages' data, ``/streams``
  and ``/captions/...``);
* ``admin``: both, on the rule's streams, plus ``/metrics``.

Secrets are kept only as SHA-256 digests. ``TokenTable.identify`` hashes the presented token and
compares it with *every* rule's digest through ``hmac.compare_digest`` (no early exit), so neither the
comparison nor the position of the matching rule leaks through timing. An empty token never matches.

``TokenTable.authorize`` raises ``ProtocolError`` with ``unauthorized`` (no rule has this token) or
``forbidden`` (a rule has it, but not this permission on this stream). docs/operations.md describes
the file format and the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Final

from stream.errors import ErrorCode, ProtocolError

ANONYMOUS: Final = ""
"""The rule name sessions count against when authentication is off (``--insecure-dev``)."""


class Permission(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    ADMIN = "admin"


class TokenConfigError(ValueError):
    """A token file or specification is malformed; the message says where."""


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class TokenRule:
    """One token: its name (for logs and metrics, never the secret), its secret's SHA-256 digest, what it
    may do and on which streams, and optionally its own cap on concurrent sessions."""

    name: str
    secret_sha256: bytes
    permissions: frozenset[Permission]
    streams: tuple[str, ...] = ("*",)
    max_sessions: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise TokenConfigError("a token needs a name")
        if len(self.secret_sha256) != hashlib.sha256().digest_size:
            raise TokenConfigError(f"token {self.name!r}: the secret digest must be 32 bytes")
        if not self.permissions:
            raise TokenConfigError(f"token {self.name!r}: give at least one role")
        if not self.streams or not all(self.streams):
            raise TokenConfigError(f"token {self.name!r}: streams must be non-empty glob patterns")
        if self.max_sessions is not None and self.max_sessions < 1:
            raise TokenConfigError(f"token {self.name!r}: max_sessions must be at least 1")

    def allows(self, permission: Permission, stream: str | None = None) -> bool:
        """Whether this token grants ``permission`` on ``stream`` (``None``: on any of its streams)."""
        granted = Permission.ADMIN in self.permissions or permission in self.permissions
        if permission is Permission.ADMIN:
            granted = Permission.ADMIN in self.permissions
        if not granted:
            return False
        return stream is None or any(fnmatchcase(stream, pattern) for pattern in self.streams)


class TokenTable:
    """See the module docstring."""

    def __init__(self, rules: Iterable[TokenRule]) -> None:
        self.rules: tuple[TokenRule, ...] = tuple(rules)
        if not self.rules:
            raise TokenConfigError("the token table is empty")
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise TokenConfigError("token names must be unique")
        digests = [rule.secret_sha256 for rule in self.rules]
        if len(set(digests)) != len(digests):
            raise TokenConfigError("two tokens have the same secret")

    def __len__(self) -> int:
        return len(self.rules)

    def identify(self, token: str) -> TokenRule | None:
        """The rule whose secret is ``token``, compared in constant time against every rule."""
        presented = digest(token)
        found: TokenRule | None = None
        for rule in self.rules:
            if hmac.compare_digest(presented, rule.secret_sha256) and token:
                found = rule
        return found

    def authorize(self, token: str, permission: Permission, stream: str | None = None) -> TokenRule:
        """The rule that lets ``token`` do ``permission`` on ``stream``; ``ProtocolError`` otherwise."""
        rule = self.identify(token)
        if rule is None:
            reason = "no token given" if not token else "unknown token"
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"{reason}: this server needs a valid token")
        if not rule.allows(permission, stream):
            where = f" on stream {stream!r}" if stream is not None else ""
            raise ProtocolError(ErrorCode.FORBIDDEN, f"token {rule.name!r} may not {permission.value}{where}")
        return rule

    # -- sources -----------------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: Path, environ: Mapping[str, str] | None = None) -> TokenTable:
        """Read a token file (format in docs/operations.md); ``TokenConfigError`` if it is malformed."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise TokenConfigError(f"cannot read token file {str(path)!r}: {error.strerror}") from None
        return cls.from_toml_text(text, source=str(path), environ=environ)

    @classmethod
    def from_toml_text(
        cls, text: str, *, source: str = "<tokens>", environ: Mapping[str, str] | None = None
    ) -> TokenTable:
        environ = os.environ if environ is None else environ
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise TokenConfigError(f"{source}: {error}") from None
        entries = document.get("token")
        if not isinstance(entries, list) or not entries:
            raise TokenConfigError(f"{source}: expected one or more [[token]] tables")
        return cls(
            _rule_from_table(entry, f"{source}: token #{i + 1}", environ) for i, entry in enumerate(entries)
        )

    @classmethod
    def from_spec(cls, spec: str) -> TokenTable:
        """Tokens from one string (the ``LIVECANVAS_TOKENS`` environment variable): entries separated by
        whitespace, each ``ROLES:STREAMS:SECRET`` with ``+``-joined roles and comma-joined stream
        patterns, e.g. ``publish+subscribe:talk-*:s3cret subscribe:*:v1ewer``."""
        rules = []
        for index, entry in enumerate(spec.split()):
            roles, _, rest = entry.partition(":")
            streams, _, secret = rest.partition(":")
            if not roles or not streams or not secret:
                raise TokenConfigError(f"token entry #{index + 1}: expected ROLES:STREAMS:SECRET")
            rules.append(
                TokenRule(
                    name=f"env-{index + 1}",
                    secret_sha256=digest(secret),
                    permissions=_permissions(roles.split("+"), f"token entry #{index + 1}"),
                    streams=tuple(streams.split(",")),
                )
            )
        return cls(rules)

    @classmethod
    def ephemeral(cls) -> tuple[TokenTable, dict[Permission, str]]:
        """A fresh table with one random admin token and one subscribe-only token, for a server that
        lives as long as one command (``livecanvas demo``); the secrets are returned by permission."""
        issued = {p: secrets.token_urlsafe(24) for p in (Permission.ADMIN, Permission.SUBSCRIBE)}
        table = cls(
            TokenRule(name=f"ephemeral-{p.value}", secret_sha256=digest(s), permissions=frozenset({p}))
            for p, s in issued.items()
        )
        return table, issued


def _permissions(values: object, where: str) -> frozenset[Permission]:
    if not isinstance(values, list) or not values:
        raise TokenConfigError(f"{where}: roles must be a non-empty list")
    known = {p.value for p in Permission}
    for value in values:
        if value not in known:
            raise TokenConfigError(f"{where}: unknown role {value!r} (roles: {', '.join(sorted(known))})")
    return frozenset(Permission(v) for v in values)


def _rule_from_table(entry: object, where: str, environ: Mapping[str, str]) -> TokenRule:
    if not isinstance(entry, dict):
        raise TokenConfigError(f"{where}: expected a table")
    unknown = set(entry) - {
        "name",
        "secret",
        "secret_env",
        "secret_sha256",
        "roles",
        "streams",
        "max_sessions",
    }
    if unknown:
        raise TokenConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise TokenConfigError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({name})"
    given = [key for key in ("secret", "secret_env", "secret_sha256") if key in entry]
    if len(given) != 1:
        raise TokenConfigError(f"{where}: give exactly one of secret, secret_env, secret_sha256")
    value = entry[given[0]]
    if not isinstance(value, str) or not value:
        raise TokenConfigError(f"{where}: {given[0]} must be a non-empty string")
    if given[0] == "secret_sha256":
        try:
            hashed = bytes.fromhex(value)
        except ValueError:
            raise TokenConfigError(f"{where}: secret_sha256 must be 64 hex digits") from None
    else:
        secret = value if given[0] == "secret" else environ.get(value, "")
        if not secret:
            raise TokenConfigError(f"{where}: environment variable {value!r} is not set")
        hashed = digest(secret)
    streams = entry.get("streams", ["*"])
    if not isinstance(streams, list) or not all(isinstance(s, str) and s for s in streams):
        raise TokenConfigError(f"{where}: streams must be a list of glob patterns")
    max_sessions = entry.get("max_sessions")
    if max_sessions is not None and (type(max_sessions) is not int or max_sessions < 1):
        raise TokenConfigError(f"{where}: max_sessions must be a positive integer")
    try:
        return TokenRule(
            name=name,
            secret_sha256=hashed,
            permissions=_permissions(entry.get("roles"), where),
            streams=tuple(streams),
            max_sessions=max_sessions,
        )
    except TokenConfigError as error:
        raise TokenConfigError(f"{where}: {error}") from None


def token_from_headers(headers: Mapping[str, str]) -> str:
    """The bearer token of an ``Authorization`` header (lower-case header names), or ``""``."""
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""
