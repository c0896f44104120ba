"""Resuming a session (stream/resumption.py) without an event loop or a socket: the hold, claiming a
parked or a live session, the replay and what is skipped afterwards, and gaps."""

from __future__ import annotations

from stream.fanout import Outbox
from stream.final_log import FinalLog, SentLog
from stream.resumption import Resumption
from stream.wire.messages import Resume
from tests.unit.test_fanout import draft
from tests.unit.test_final_log import final, make_log

TRACKS = frozenset({"pt"})


def old_session(log: FinalLog, windows: int) -> SentLog:
    """A session that was sent ``windows`` finals, as seq 2, 3, ..."""
    sent = SentLog(log.next_number, 100)
    for window in range(windows):
        stamped = log.append(final(window))
        sent.add(2 + window, stamped.number)
    return sent


class LiveConnection:
    """A connection still open on the stream: taking it over hands its log to the new one."""

    def __init__(self, session_id: str, stream: str, sent: SentLog) -> None:
        self.session_id, self.stream, self.sent = session_id, stream, sent
        self.taken = False

    def take_over(self) -> SentLog | None:
        self.taken = True
        return self.sent


def test_the_hold_keeps_every_draft_until_it_is_released_once() -> None:
    outbox = Outbox()
    resumption = Resumption(outbox, make_log(), "s", TRACKS, capacity=100)
    assert resumption.holding
    for rev in range(3):
        outbox.put(draft(0, rev))
    assert len(outbox) == 3  # held back, not behind: no draft coalesced
    assert resumption.release() is True
    assert resumption.release() is False
    outbox.put(draft(1, 0))
    outbox.put(draft(1, 1))
    assert len(outbox) == 4  # live again: a viewer behind gets the newest draft only


def test_a_parked_session_is_claimed_once_and_the_missed_finals_replayed_then_skipped() -> None:
    log = make_log()
    sent = old_session(log, windows=4)
    log.park("old", "s", sent)
    resumption = Resumption(Outbox(), log, "s", TRACKS, capacity=100)
    live_final = log.append(final(4))  # broadcast to the new session while it holds
    outcome = resumption.resume(Resume(last_seq=3, session="old"), "new", live=[])
    assert outcome.known
    assert outcome.complete
    assert [f.window for f in outcome.replay] == [2, 3]  # seq 2 and 3 were windows 0 and 1
    assert resumption.due(live_final)  # sent live, after the replay
    seen_live = log.replay("s", 0, TRACKS, live_final.number)
    assert not resumption.due(seen_live.finals[0])  # one the old session saw is not sent again
    for seq, replayed in enumerate(outcome.replay, start=2):
        resumption.record(seq, replayed)
    assert resumption.sent.last_seen(3) == (outcome.replay[-1].number, True)
    again = Resumption(Outbox(), log, "s", TRACKS, capacity=100)
    assert not again.resume(Resume(last_seq=3, session="old"), "newer", live=[]).known  # claimed once


def test_a_live_connection_on_the_same_stream_is_taken_over() -> None:
    log = make_log()
    live = LiveConnection("old", "s", old_session(log, windows=3))
    elsewhere = LiveConnection("other", "t", SentLog(1, 10))
    resumption = Resumption(Outbox(), log, "s", TRACKS, capacity=100)
    outcome = resumption.resume(Resume(last_seq=4, session="old"), "new", live=[elsewhere, live])
    assert live.taken
    assert not elsewhere.taken
    assert outcome.known
    assert outcome.replay == ()  # it saw everything
    moved = LiveConnection("other", "t", SentLog(1, 10))
    assert not resumption.resume(Resume(last_seq=1, session="other"), "new", live=[moved]).known
    assert not moved.taken  # another stream's session is never taken over


def test_unknown_own_or_missing_sessions_replay_nothing() -> None:
    log = make_log()
    resumption = Resumption(Outbox(), log, "s", TRACKS, capacity=100)
    for message in (Resume(last_seq=3), Resume(last_seq=3, session="nope"), Resume(last_seq=3, session="me")):
        outcome = resumption.resume(message, "me", live=[])
        assert not outcome.known
        assert outcome.replay == ()


def test_finals_no_longer_kept_make_the_replay_incomplete() -> None:
    log = make_log(max_finals=2)
    sent = old_session(log, windows=5)
    log.park("old", "s", sent)
    outcome = Resumption(Outbox(), log, "s", TRACKS, capacity=100).resume(
        Resume(last_seq=2, session="old"), "new", live=[]
    )
    assert outcome.known
    assert not outcome.complete
    assert [f.window for f in outcome.replay] == [3, 4]  # what is still kept
