"""The resume history (stream/history.py) on an explicit clock: which finals a resumed session gets."""

from __future__ import annotations

from stream.history import FinalHistory, SentLog, Trail
from stream.messages import FinalMsg


def final(window: int, track: str = "pt", stream: str = "s") -> FinalMsg:
    return FinalMsg(
        stream=stream, track=track, window=window, rev=1, text=f"{track}{window}", t0_ms=0, t1_ms=0,
        latency_ms=0,
    )  # fmt: skip


def history(**kwargs: float) -> FinalHistory:
    settings = {"max_finals": 100, "max_age_s": 60.0, "max_trails": 10, **kwargs}
    return FinalHistory(
        max_finals=int(settings["max_finals"]),
        max_age_s=settings["max_age_s"],
        max_trails=int(settings["max_trails"]),
    )


def test_a_resumed_session_gets_exactly_the_finals_it_missed_in_order() -> None:
    kept = history()
    log = SentLog(first_ordinal=kept.next_ordinal("s"), capacity=100)
    seq = 1  # ready
    for window in range(5):
        for track in ("caption", "pt"):
            ordinal = kept.record(final(window, track), now=0.0)
            if window < 4:  # the connection sent 0..3 (the last one, window 3, never arrived)
                seq += 1
                log.add(seq, ordinal)
    seen_up_to = seq - 2  # the client saw up to the caption final of window 3
    kept.park("old", Trail("s", frozenset({"caption", "pt"}), log, left_at=0.0))
    for window in (5, 6):
        kept.record(final(window, "pt"), now=1.0)
    trail = kept.claim("old", "s", now=2.0)
    assert trail is not None
    after, exact = trail.sent.last_seen(seen_up_to)
    assert exact
    replay = kept.replay("s", after, frozenset({"pt"}), before=kept.next_ordinal("s"))
    assert replay.complete
    assert [(f.track, f.window) for _, f in replay.finals] == [("pt", 3), ("pt", 4), ("pt", 5), ("pt", 6)]
    assert kept.claim("old", "s", now=2.0) is None, "a session resumes once"


def test_a_client_that_saw_no_final_gets_everything_since_it_joined() -> None:
    kept = history()
    kept.record(final(0), now=0.0)
    log = SentLog(first_ordinal=kept.next_ordinal("s"), capacity=100)
    kept.record(final(1), now=0.0)
    after, exact = log.last_seen(1)
    assert exact
    assert [f.window for _, f in kept.replay("s", after, frozenset({"pt"}), before=99).finals] == [1]


def test_finals_beyond_the_window_are_reported_as_a_gap() -> None:
    kept = history(max_finals=3)
    for window in range(10):
        kept.record(final(window), now=0.0)
    replay = kept.replay("s", 2, frozenset({"pt"}), before=99)
    assert not replay.complete
    assert [f.window for _, f in replay.finals] == [7, 8, 9]
    assert len(kept) == 3


def test_old_finals_and_trails_expire() -> None:
    kept = history(max_age_s=10.0)
    kept.record(final(0), now=0.0)
    kept.park("old", Trail("s", frozenset({"pt"}), SentLog(1, 10), left_at=0.0))
    kept.record(final(1), now=8.0)
    kept.expire(now=15.0)
    assert len(kept) == 1
    assert kept.claim("old", "s", now=15.0) is None
    assert kept.next_ordinal("s") == 3, "ordinals are never reused under a stream name"


def test_trails_are_bounded_and_bound_to_their_stream() -> None:
    kept = history(max_trails=2)
    for name in ("a", "b", "c"):
        kept.park(name, Trail("s", frozenset({"pt"}), SentLog(1, 10), left_at=0.0))
    assert kept.trails == 2
    assert kept.claim("a", "s", now=0.0) is None
    assert kept.claim("b", "other", now=0.0) is None
    assert kept.claim("b", "s", now=0.0) is not None


def test_a_trimmed_log_gives_a_lower_bound_that_never_duplicates() -> None:
    log = SentLog(first_ordinal=1, capacity=4)
    for seq in range(1, 21):
        log.add(seq + 1, seq)  # seq n+1 carried ordinal n
    assert log.overflowed
    assert log.last_seen(21) == (20, True)
    after, exact = log.last_seen(2)  # older than anything kept
    assert not exact
    assert after < 20
    assert after >= 12, "only what the log may no longer prove is left to the gap"
