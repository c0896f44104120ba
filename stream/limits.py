"""Resource limits: their settings (``Limits``, part of ``ServerConfig``) and the sans-I/O pieces that
enforce them: a token bucket for input rates and a counter of sessions per token.

No clock is read here: callers pass ``now`` (seconds, monotonic). docs/operations.md lists every
limit, its default and what a client sees when it hits it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields

AUDIO_BYTES_PER_S = 16_000 * 2  # PCM16LE, 16 kHz, mono


@dataclass(frozen=True, slots=True)
class Limits:
    """Every per-server, per-token and per-session limit, with safe defaults."""

    max_sessions: int = 1000  # open WebSocket connections in all, authenticated or not
    max_sessions_per_token: int = 200  # per token rule (a rule's own max_sessions overrides it)
    max_tracks_per_stream: int = 8  # target languages one stream may be translated into at once
    hello_timeout_s: float = 10.0  # a connection without an accepted hello is closed after this
    max_audio_speed: float = 1.5  # audio is read no faster than this multiple of real time ...
    audio_burst_s: float = 10.0  # ... after a burst of this many seconds of audio
    max_text_chars_per_s: float = 1000.0  # text input rate (a message costs its length, at least 16)
    text_burst_chars: int = 16_384  # text allowed at once before the rate applies
    max_viewer_backlog: int = 1000  # messages queued for one connection before it is cut off as too slow
    max_errors: int = 100  # error replies to one connection before it is closed
    history_finals: int = 2000  # finals kept per stream for resume ...
    history_s: float = 600.0  # ... and for at most this long; also how long a session may be resumed
    max_detached_sessions: int = 4096  # disconnected sessions remembered for resume, in all

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise ValueError(f"limit {f.name} must be positive, got {value!r}")

    @property
    def audio_bytes_per_s(self) -> float:
        return self.max_audio_speed * AUDIO_BYTES_PER_S

    @property
    def audio_burst_bytes(self) -> float:
        return self.audio_burst_s * AUDIO_BYTES_PER_S


MIN_TEXT_COST = 16
"""Characters a text message costs at least, so that floods of tiny messages are limited too."""


class TokenBucket:
    """A token bucket that may go into debt: ``take`` always succeeds and says how long the caller must
    wait to stay within the rate (throttling); ``try_take`` refuses instead (limiting)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._level = burst
        self._at = now

    def _refill(self, now: float) -> None:
        self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = max(self._at, now)

    def take(self, amount: float, now: float) -> float:
        """Spend ``amount``; the seconds to wait before the next spend would be within the rate."""
        self._refill(now)
        self._level -= amount
        return 0.0 if self._level >= 0 else -self._level / self.rate

    def try_take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` if the bucket holds it; ``False`` (and nothing spent) otherwise."""
        self._refill(now)
        if amount > self._level:
            return False
        self._level -= amount
        return True


class SessionCounter:
    """Open sessions per token rule name, against a default cap or a rule's own."""

    def __init__(self, default_cap: int) -> None:
        self.default_cap = default_cap
        self._open: Counter[str] = Counter()

    def open(self, name: str, cap: int | None = None) -> bool:
        """Count one more session for ``name``; ``False`` (not counted) when it is at its cap."""
        if self._open[name] >= (cap if cap is not None else self.default_cap):
            return False
        self._open[name] += 1
        return True

    def close(self, name: str) -> None:
        self._open[name] -= 1
        if self._open[name] <= 0:
            del self._open[name]

    def count(self, name: str) -> int:
        return self._open[name]
