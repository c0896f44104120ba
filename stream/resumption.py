"""Resuming a session, sans I/O: the resume grace after ``ready``, which earlier session a ``resume``
claims, what is replayed, and which live finals the new session then skips.

``Resumption`` is one connection's side of it, with its dependencies explicit (its outbox, the final
log, the server's live connections); ``stream/session.py`` owns only the grace timer and the sending:

* **Hold.** From ``ready`` until a ``resume`` has been answered, or ``RESUME_GRACE_S`` has passed, live
  drafts and finals wait in the outbox, all of them (no coalescing: the connection is not behind, so
  every draft is still due), so that the finals a resume replays go out first and in order.
* **Claim.** A ``resume`` names the old session: a live connection on the same stream is taken over
  (it says ``bye`` and closes; its log moves here), else a parked one is claimed from the final log
  (once; unknown, expired or another stream's gives ``resume_unknown``).
* **Replay.** The kept finals of this session's tracks after the last one the client saw, up to the
  first one this session could be sent live, in number order; ``complete`` unless some already left
  the resume window (``resume_gap``). Live finals up to that point are then skipped (``due``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from stream.fanout import Outbox
from stream.final_log import FinalLog, SentLog
from stream.wire.messages import FinalMsg, Resume, ServerMessage

RESUME_GRACE_S: Final = 0.25


class LiveSession(Protocol):
    """A connection that may be taken over by a ``resume``."""

    session_id: str
    stream: str | None

    def take_over(self) -> SentLog | None: ...


@dataclass(frozen=True, slots=True)
class ResumeOutcome:
    """What answering a ``resume`` comes to: ``known`` False means ``resume_unknown`` (nothing replayed);
    otherwise ``replay`` to send first, and ``complete`` False means ``resume_gap`` before it."""

    known: bool
    replay: tuple[FinalMsg, ...] = ()
    complete: bool = True


class Resumption:
    """See the module docstring. ``sent`` logs what this connection was sent (for a later resume)."""

    def __init__(self, outbox: Outbox, finals: FinalLog, stream: str, tracks: frozenset[str], capacity: int):
        self.outbox = outbox
        self.finals = finals
        self.stream = stream
        self.tracks = tracks
        self.sent = SentLog(finals.next_number, capacity)
        self.skip_upto = 0  # live finals up to this number were seen on the resumed session
        self.holding = True
        outbox.coalesce = False

    def release(self) -> bool:
        """End the hold; ``True`` if it was on (what it gathered is now due, and may be coalesced again)."""
        if not self.holding:
            return False
        self.holding = False
        self.outbox.coalesce = True
        return True

    def resume(self, message: Resume, own_session: str, live: Iterable[LiveSession]) -> ResumeOutcome:
        """Answer ``message``: claim the old session's log and plan the replay. The caller sends the
        replay (recording each with ``record``) and then ``release``s the hold."""
        sent = None
        if message.session is not None and message.session != own_session:
            connection = next((c for c in live if c.session_id == message.session), None)
            if connection is not None and connection.stream == self.stream:
                sent = connection.take_over()
            else:
                sent = self.finals.claim(message.session, self.stream)
        if sent is None:
            return ResumeOutcome(known=False)
        after, exact = sent.last_seen(message.last_seq)
        replay = self.finals.replay(self.stream, after, self.tracks, self.sent.first_number, exact=exact)
        self.skip_upto = max(self.skip_upto, after)
        self.sent.first_number = min(self.sent.first_number, after + 1)
        return ResumeOutcome(known=True, replay=tuple(replay.finals), complete=replay.complete)

    def due(self, message: ServerMessage) -> bool:
        """Whether a live message still goes out (a final the resumed session saw does not)."""
        number = message.number if isinstance(message, FinalMsg) else 0  # 0: not a final
        return not 0 < number <= self.skip_upto

    def record(self, seq: int, message: ServerMessage) -> None:
        """``message`` went out as ``seq``: log it if it is a final."""
        if isinstance(message, FinalMsg) and message.number:
            self.sent.add(seq, message.number)
