"""Resume: a bounded history of every stream's finals, and what each session was sent of them.

Every final a stream broadcasts gets the stream's next *ordinal* (1, 2, 3, ... in broadcast order,
never reused under a stream name) and is kept for ``max_age_s`` at most, ``max_finals`` per stream at
most. A connection's finals are a subsequence of its stream's in ordinal order, so each connection
keeps a ``SentLog``: the ``(seq, ordinal)`` of each final it was sent. When it goes away its log is
parked as a ``Trail`` under its session id. A client that comes back names that session and the last
``seq`` it saw (``resume``); ``FinalHistory.replay`` then finds the last final it saw (the highest
ordinal sent with ``seq <= last_seq``) and returns every later final of its tracks that the new
connection has not had live, in order. docs/protocol.md section 5 has the client's view.

Sans-I/O: callers pass ``now`` (seconds, monotonic).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from stream.messages import FinalMsg


class SentLog:
    """The ``(seq, ordinal)`` of the finals one connection was sent, the newest ``capacity`` of them."""

    def __init__(self, first_ordinal: int, capacity: int) -> None:
        self.first_ordinal = first_ordinal  # the first final it could have been sent
        self.capacity = capacity
        self._seqs = array("q")
        self._ordinals = array("q")
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._seqs)

    def add(self, seq: int, ordinal: int) -> None:
        self._seqs.append(seq)
        self._ordinals.append(ordinal)
        if len(self._seqs) > 2 * self.capacity:  # amortised trim to the newest ``capacity``
            del self._seqs[: -self.capacity]
            del self._ordinals[: -self.capacity]
            self.overflowed = True

    def last_seen(self, last_seq: int) -> tuple[int, bool]:
        """The ordinal of the last final the client saw if it saw everything up to ``last_seq``, and
        whether that is exact (``False``: older entries were trimmed; the answer is a lower bound that
        never causes a duplicate)."""
        position = bisect_right(self._seqs, last_seq)
        if position:
            return self._ordinals[position - 1], True
        if not self.overflowed or not self._ordinals:
            return self.first_ordinal - 1, True
        return self._ordinals[0] - 1, False


@dataclass(frozen=True, slots=True)
class Trail:
    """A disconnected session, parked for resume."""

    stream: str
    tracks: frozenset[str]
    sent: SentLog
    left_at: float


@dataclass(frozen=True, slots=True)
class Replay:
    finals: list[tuple[int, FinalMsg]]  # (ordinal, final), in order
    complete: bool  # False: some finals the client missed are no longer kept


@dataclass(eq=False)
class _StreamHistory:
    entries: deque[tuple[int, float, FinalMsg]] = field(default_factory=deque)
    last_ordinal: int = 0
    evicted_upto: int = 0  # every ordinal up to this one has left the history
    touched_at: float = 0.0


class FinalHistory:
    """See the module docstring."""

    def __init__(self, *, max_finals: int, max_age_s: float, max_trails: int) -> None:
        self.max_finals = max_finals
        self.max_age_s = max_age_s
        self.max_trails = max_trails
        self._streams: dict[str, _StreamHistory] = {}
        self._trails: OrderedDict[str, Trail] = OrderedDict()

    def __len__(self) -> int:
        """Finals kept, over all streams."""
        return sum(len(s.entries) for s in self._streams.values())

    @property
    def trails(self) -> int:
        return len(self._trails)

    # -- finals ------------------------------------------------------------------------------------
    def record(self, final: FinalMsg, now: float) -> int:
        """Keep ``final`` (just broadcast on its stream); its ordinal."""
        history = self._streams.setdefault(final.stream, _StreamHistory())
        history.last_ordinal += 1
        history.entries.append((history.last_ordinal, now, final))
        history.touched_at = now
        self._prune(history, now)
        return history.last_ordinal

    def latest(self, stream: str) -> tuple[int, FinalMsg] | None:
        history = self._streams.get(stream)
        if history is None or not history.entries:
            return None
        ordinal, _, final = history.entries[-1]
        return ordinal, final

    def next_ordinal(self, stream: str) -> int:
        history = self._streams.get(stream)
        return 1 if history is None else history.last_ordinal + 1

    def expire(self, now: float) -> None:
        """Drop finals and trails older than ``max_age_s``; call now and then."""
        for name, history in list(self._streams.items()):
            self._prune(history, now)
            if not history.entries and now - history.touched_at > self.max_age_s:
                del self._streams[name]
        while self._trails:
            oldest = next(iter(self._trails.values()))
            if now - oldest.left_at <= self.max_age_s:
                break
            self._trails.popitem(last=False)

    def _prune(self, history: _StreamHistory, now: float) -> None:
        entries = history.entries
        while entries and (len(entries) > self.max_finals or now - entries[0][1] > self.max_age_s):
            history.evicted_upto = entries.popleft()[0]

    # -- sessions ----------------------------------------------------------------------------------
    def park(self, session: str, trail: Trail) -> None:
        """Remember a session that went away (the oldest are forgotten beyond ``max_trails``)."""
        self._trails[session] = trail
        self._trails.move_to_end(session)
        while len(self._trails) > self.max_trails:
            self._trails.popitem(last=False)

    def claim(self, session: str, stream: str, now: float) -> Trail | None:
        """The parked session ``session`` of ``stream``, once (``None``: unknown, expired, other stream)."""
        self.expire(now)
        trail = self._trails.get(session)
        if trail is None or trail.stream != stream:
            return None
        del self._trails[session]
        return trail

    def replay(
        self, stream: str, after: int, tracks: frozenset[str], before: int, *, exact: bool = True
    ) -> Replay:
        """The kept finals of ``tracks`` with ``after < ordinal < before``, in order; ``complete`` unless
        some of them already left the history (or ``exact`` says ``after`` is only a lower bound)."""
        history = self._streams.get(stream)
        if history is None:
            return Replay([], exact)
        finals = [(o, f) for o, _, f in history.entries if after < o < before and f.track in tracks]
        return Replay(finals, exact and history.evicted_upto <= after)
