"""Exceptions raised by the ``stream`` package, and the stable error codes of the wire protocol.

Exception tree::

    Exception
     └── LivecanvasStreamError        root of everything the stream package raises on purpose
          └── ProtocolError           a protocol rule was broken; carries .code, .message, .ref

``ErrorCode`` lists the codes that travel in ``error`` messages (see docs/protocol.md) plus
``seq_gap``, which only the client side raises and which never goes on the wire. ``CloseCode`` lists
the WebSocket close codes the server ends a connection with (docs/protocol.md section 8).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["CloseCode", "ErrorCode", "LivecanvasStreamError", "ProtocolError"]


class ErrorCode(StrEnum):
    """Stable error codes. Values are part of the wire protocol; never rename one."""

    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"
    FRAME_TOO_LARGE = "frame_too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    NOT_READY = "not_ready"
    INVALID_STATE = "invalid_state"
    INTERNAL = "internal"
    OVERLOADED = "overloaded"
    SEQ_GAP = "seq_gap"
    UNSUPPORTED = "unsupported"
    # authentication and limits (docs/operations.md)
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    HELLO_TIMEOUT = "hello_timeout"
    TOO_MANY_SESSIONS = "too_many_sessions"
    TOO_MANY_TRACKS = "too_many_tracks"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_ERRORS = "too_many_errors"
    SLOW_CONSUMER = "slow_consumer"
    # resume (docs/protocol.md section 5)
    RESUME_UNKNOWN = "resume_unknown"
    RESUME_GAP = "resume_gap"


class CloseCode(IntEnum):
    """WebSocket close codes (RFC 6455 section 7.4.1) the server uses; the close reason says more."""

    NORMAL = 1000  # after bye: the session ended
    GOING_AWAY = 1001  # after bye: the server is shutting down
    POLICY = 1008  # unauthenticated, hello timeout, too many errors, a viewer too slow to keep up
    TRY_AGAIN_LATER = 1013  # the server or this token has too many sessions


class LivecanvasStreamError(Exception):
    """Root of all exceptions the stream package raises deliberately."""


class ProtocolError(LivecanvasStreamError):
    """A protocol rule was broken, by the peer or by the local caller.

    ``code`` is one of the ``ErrorCode`` values (a plain ``str`` so that codes received from a newer
    peer survive), ``message`` is a human-readable explanation, and ``ref`` names the type of the
    offending message when it is known.
    """

    def __init__(self, code: str, message: str, *, ref: str | None = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.ref = ref

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
