"""The final log: every final the server sends, stamped once and kept once, for resume and for HTTP.

``FinalLog`` owns what the server knows about the finals it has sent:

* **Epochs.** The hub forgets a stream nobody uses and numbers its windows from 0 again when the name
  comes back. Each life of a stream name is an *epoch*: the hub calls ``begin`` when it starts a stream
  (the log names the epoch: a time in hex, unique on this server and across its restarts) and ``end``
  when it forgets it. Drafts, finals and ``ready`` carry the epoch on the wire, so a client tells "a new
  programme under the old name" from "finals I missed" (docs/protocol.md sections 3 and 5).
* **Stamping.** The hub hands every final to ``append`` just before broadcasting it; the log stamps it
  with its stream's epoch and its *resume number* (``FinalMsg.number``) and returns the stamped final,
  which is what viewers, observers and the log then hold. Numbers come from one counter for the whole
  server, so a number is never reused under any stream name, across epochs, whatever the log forgets.
* **Resume.** Per stream name, the newest ``max_finals`` finals of any epoch, none older than
  ``max_age_s``. A connection's finals are a subsequence of its stream's in number order, so each
  connection keeps a ``SentLog``: the ``(seq, number)`` of each final it was sent. When it goes away its
  log is parked as a ``Trail`` under its session id (``park``; ``max_trails`` at most, for ``max_age_s``).
  A client that comes back names that session and the last ``seq`` it saw; the session is ``claim``-ed,
  and ``replay`` finds the last final the client saw and returns every later kept final of its tracks,
  in order, and whether none is missing.
* **Captions.** What ``/streams`` and ``/captions`` show (stream/captions_view.py): a ``Transcript`` per
  stream, the live epoch's or, once the hub forgot the stream, that of its last epoch with finals: the
  newest ``max_captions`` finals per track and a count per track. The newest ``max_streams`` streams
  with finals are remembered once the hub forgot them.

Sans-I/O, no asyncio: the hub calls it on the loop's thread and it never blocks. Time comes from
``clock`` (monotonic seconds: ages, arrival times) and ``epoch_clock_ns`` (wall clock: epoch names).
"""

from __future__ import annotations

import time
from array import array
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

from stream.limits import Limits
from stream.wire.messages import FinalMsg

_LIMITS: Final = Limits()  # the defaults of the resume limits
CAPTION_FINALS: Final = 5000  # finals kept per track for /captions ...
REMEMBERED_STREAMS: Final = 64  # ... of this many streams with finals, live or remembered


class SentLog:
    """The ``(seq, number)`` of the finals one connection was sent, the newest ``capacity`` of them."""

    def __init__(self, first_number: int, capacity: int) -> None:
        self.first_number = first_number  # the first final it could have been sent
        self.capacity = capacity
        self._seqs = array("q")
        self._numbers = array("q")
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._seqs)

    def add(self, seq: int, number: int) -> None:
        self._seqs.append(seq)
        self._numbers.append(number)
        if len(self._seqs) > 2 * self.capacity:  # amortised trim to the newest ``capacity``
            del self._seqs[: -self.capacity]
            del self._numbers[: -self.capacity]
            self.overflowed = True

    def last_seen(self, last_seq: int) -> tuple[int, bool]:
        """The number of the last final the client saw if it saw everything up to ``last_seq``, and
        whether that is exact (``False``: older entries were trimmed; the answer is a lower bound that
        never causes a duplicate)."""
        position = bisect_right(self._seqs, last_seq)
        if position:
            return self._numbers[position - 1], True
        if not self.overflowed or not self._numbers:
            return self.first_number - 1, True
        return self._numbers[0] - 1, False


@dataclass(frozen=True, slots=True)
class Trail:
    """A disconnected session, parked for resume."""

    stream: str
    sent: SentLog
    left_at: float  # on the log's clock


@dataclass(frozen=True, slots=True)
class Replay:
    finals: list[FinalMsg]  # stamped, in number order
    complete: bool  # False: some finals the client missed are no longer kept


@dataclass(frozen=True, slots=True)
class KeptFinal:
    final: FinalMsg  # stamped
    at: float  # when it was appended, on the log's clock (seconds)


@dataclass(eq=False)
class TrackFinals:
    finals: deque[KeptFinal]  # the newest, in window order
    count: int = 0  # including finals no longer kept


@dataclass(eq=False)
class Transcript:
    """One epoch of a stream, as /captions shows it."""

    stream: str
    epoch: str
    tracks: dict[str, TrackFinals] = field(default_factory=dict)


@dataclass(eq=False)
class _Name:
    """Everything the log knows of one stream name."""

    epoch: Transcript  # the newest epoch (the hub's own while ``live``)
    live: bool = True
    recent: deque[KeptFinal] = field(default_factory=deque)  # the resume window, of every epoch
    dropped_upto: int = 0  # every number up to this one has left ``recent``


class FinalLog:
    """See the module docstring."""

    def __init__(
        self,
        *,
        max_finals: int = _LIMITS.history_finals,
        max_age_s: float = _LIMITS.history_s,
        max_trails: int = _LIMITS.max_detached_sessions,
        max_captions: int = CAPTION_FINALS,
        max_streams: int = REMEMBERED_STREAMS,
        clock: Callable[[], float] = time.monotonic,
        epoch_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.max_finals = max_finals
        self.max_age_s = max_age_s
        self.max_trails = max_trails
        self.max_captions = max_captions
        self.max_streams = max_streams
        self._clock = clock
        self._epoch_clock_ns = epoch_clock_ns
        self._names: dict[str, _Name] = {}
        self._transcripts: OrderedDict[str, Transcript] = OrderedDict()  # least recently updated first
        self._trails: OrderedDict[str, Trail] = OrderedDict()
        self._last_number = 0
        self._last_epoch_ns = 0

    def __len__(self) -> int:
        """Finals kept for resume, over all streams."""
        return sum(len(name.recent) for name in self._names.values())

    @property
    def trails(self) -> int:
        return len(self._trails)

    @property
    def next_number(self) -> int:
        """The number the next final will get, whatever its stream."""
        return self._last_number + 1

    # -- epochs ------------------------------------------------------------------------------------
    def begin(self, stream: str) -> str:
        """``stream`` starts (again) in the hub: a new epoch, whose name is returned."""
        self._last_epoch_ns = max(self._last_epoch_ns + 1, self._epoch_clock_ns())
        epoch = Transcript(stream, f"{self._last_epoch_ns:x}")
        name = self._names.get(stream)
        if name is None:
            self._names[stream] = _Name(epoch)
        else:
            name.epoch, name.live = epoch, True
        return epoch.epoch

    def end(self, stream: str) -> None:
        """The hub forgot ``stream``: its epoch is over; its finals stay readable."""
        name = self._names.get(stream)
        if name is not None:
            name.live = False

    # -- finals ------------------------------------------------------------------------------------
    def append(self, final: FinalMsg) -> FinalMsg:
        """Stamp ``final``, about to be broadcast, with its stream's epoch (beginning one if the stream
        has none open) and the next number; keep it; return the stamped final."""
        name = self._names.get(final.stream)
        if name is None or not name.live:
            self.begin(final.stream)
            name = self._names[final.stream]
        self._last_number += 1
        stamped = replace(final, epoch=name.epoch.epoch, number=self._last_number)
        kept = KeptFinal(stamped, self._clock())
        name.recent.append(kept)
        self._prune(name, kept.at)
        track = name.epoch.tracks.get(final.track)
        if track is None:
            track = name.epoch.tracks[final.track] = TrackFinals(deque(maxlen=self.max_captions))
        track.finals.append(kept)
        track.count += 1
        self._transcripts[final.stream] = name.epoch
        self._transcripts.move_to_end(final.stream)
        while len(self._transcripts) > self.max_streams:
            ended = next((s for s in self._transcripts if not self._names[s].live), None)
            if ended is None:
                break  # never forget a live stream
            del self._transcripts[ended]
        return stamped

    def expire(self) -> None:
        """Drop finals and trails older than ``max_age_s`` from the resume window, and stream names that
        nothing refers to any more; call now and then."""
        now = self._clock()
        while self._trails and now - next(iter(self._trails.values())).left_at > self.max_age_s:
            self._trails.popitem(last=False)
        parked: set[str] | None = None
        for stream, name in list(self._names.items()):
            self._prune(name, now)
            if name.live or name.recent or stream in self._transcripts:
                continue
            if parked is None:
                parked = {trail.stream for trail in self._trails.values()}
            if stream not in parked:  # a parked session keeps its stream's dropped_upto
                del self._names[stream]

    def _prune(self, name: _Name, now: float) -> None:
        recent = name.recent
        while recent and (len(recent) > self.max_finals or now - recent[0].at > self.max_age_s):
            name.dropped_upto = recent.popleft().final.number

    # -- resume ------------------------------------------------------------------------------------
    def park(self, session: str, stream: str, sent: SentLog) -> None:
        """Remember a session of ``stream`` that went away, and what it was sent (the oldest sessions
        are forgotten beyond ``max_trails``)."""
        self._trails[session] = Trail(stream, sent, self._clock())
        self._trails.move_to_end(session)
        while len(self._trails) > self.max_trails:
            self._trails.popitem(last=False)

    def claim(self, session: str, stream: str) -> SentLog | None:
        """What the parked session ``session`` of ``stream`` was sent, once (``None``: unknown, expired,
        other stream)."""
        self.expire()
        trail = self._trails.get(session)
        if trail is None or trail.stream != stream:
            return None
        del self._trails[session]
        return trail.sent

    def replay(
        self, stream: str, after: int, tracks: frozenset[str], before: int, *, exact: bool = True
    ) -> Replay:
        """The kept finals of ``tracks`` with ``after < number < before``, of any epoch, in order;
        ``complete`` unless some of them already left the resume window (or ``exact`` says ``after`` is
        only a lower bound)."""
        name = self._names.get(stream)
        if name is None:
            return Replay([], exact)
        finals = [
            kept.final
            for kept in name.recent
            if after < kept.final.number < before and kept.final.track in tracks
        ]
        return Replay(finals, exact and name.dropped_upto <= after)

    # -- captions ----------------------------------------------------------------------------------
    def transcript(self, stream: str) -> Transcript | None:
        """What /captions shows of ``stream``: its live epoch (maybe without finals yet), else its last
        epoch with finals; ``None`` for a stream the log does not know."""
        name = self._names.get(stream)
        if name is not None and name.live:
            return name.epoch
        return self._transcripts.get(stream)

    def epoch_of(self, stream: str) -> str | None:
        transcript = self.transcript(stream)
        return None if transcript is None else transcript.epoch

    def remembered(self) -> list[Transcript]:
        """The transcripts of streams the hub forgot, newest first."""
        return [t for s, t in reversed(self._transcripts.items()) if not self._names[s].live]
