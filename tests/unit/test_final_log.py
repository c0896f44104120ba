"""The final log (stream/final_log.py) on an explicit clock, no event loop: stamping, epochs, which
finals a resumed session gets, and what /captions keeps."""

from __future__ import annotations

from stream.final_log import FinalLog, SentLog
from stream.wire.messages import FinalMsg


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.wall_ns = 1_000

    def __call__(self) -> float:
        return self.now


def final(window: int, track: str = "pt", stream: str = "s") -> FinalMsg:
    return FinalMsg(
        stream=stream, track=track, window=window, rev=1, text=f"{track}{window}", t0_ms=0, t1_ms=0,
        latency_ms=0,
    )  # fmt: skip


def make_log(clock: Clock | None = None, **kwargs: float) -> FinalLog:
    clock = clock or Clock()
    settings = {"max_finals": 100, "max_age_s": 60.0, "max_trails": 10, **kwargs}
    return FinalLog(
        max_finals=int(settings["max_finals"]),
        max_age_s=settings["max_age_s"],
        max_trails=int(settings["max_trails"]),
        max_captions=int(settings.get("max_captions", 5000)),
        max_streams=int(settings.get("max_streams", 64)),
        clock=clock,
        epoch_clock_ns=lambda: clock.wall_ns,
    )


def test_append_stamps_each_final_with_its_epoch_and_a_number_never_reused() -> None:
    log = make_log()
    epoch = log.begin("s")
    first = log.append(final(0))
    other = log.append(final(0, stream="t"))
    second = log.append(final(1))
    assert (first.epoch, first.number, second.epoch, second.number) == (epoch, 1, epoch, 3)
    assert other.number == 2, "one counter for the whole server"
    assert first == FinalMsg.from_wire(first.to_wire("json"), "json")  # number: not compared ...
    assert first.to_wire("json")["epoch"] == epoch
    assert "number" not in first.to_wire("json")  # ... and never on the wire
    assert log.next_number == 4


def test_a_restarted_stream_gets_a_new_epoch_and_its_numbers_go_on() -> None:
    clock = Clock()
    log = make_log(clock, max_age_s=10.0)
    first = log.begin("s")
    log.append(final(0))
    log.end("s")
    clock.now = 100.0  # everything of the first epoch is gone from the resume window
    log.expire()
    assert len(log) == 0
    second = log.begin("s")  # the same wall clock: still a different epoch
    assert second != first
    assert log.append(final(0)).number == 2, "numbers are never reused under a stream name"


def test_a_resumed_session_gets_exactly_the_finals_it_missed_in_order() -> None:
    log = make_log()
    log.begin("s")
    sent = SentLog(first_number=log.next_number, capacity=100)
    seq = 1  # ready
    for window in range(5):
        for track in ("caption", "pt"):
            stamped = log.append(final(window, track))
            if window < 4:  # the connection sent 0..3 (the last one, window 3, never arrived)
                seq += 1
                sent.add(seq, stamped.number)
    seen_up_to = seq - 2  # the client saw up to the caption final of window 3
    log.park("old", "s", sent)
    for window in (5, 6):
        log.append(final(window, "pt"))
    claimed = log.claim("old", "s")
    assert claimed is sent
    after, exact = claimed.last_seen(seen_up_to)
    assert exact
    replay = log.replay("s", after, frozenset({"pt"}), before=log.next_number)
    assert replay.complete
    assert [(f.track, f.window) for f in replay.finals] == [("pt", 3), ("pt", 4), ("pt", 5), ("pt", 6)]
    assert log.claim("old", "s") is None, "a session resumes once"


def test_a_client_that_saw_no_final_gets_everything_since_it_joined() -> None:
    log = make_log()
    log.begin("s")
    log.append(final(0))
    sent = SentLog(first_number=log.next_number, capacity=100)
    log.append(final(1))
    after, exact = sent.last_seen(1)
    assert exact
    assert [f.window for f in log.replay("s", after, frozenset({"pt"}), before=99).finals] == [1]


def test_a_replay_after_the_resume_window_emptied_has_every_new_final_and_says_complete() -> None:
    """The stream's finals all expire while its viewer stays; the viewer leaves, the stream restarts
    under its name: the resumed viewer must get every final of the new epoch (they were numbered on
    from the old ones, not from 1 again)."""
    clock = Clock()
    log = make_log(clock, max_age_s=10.0)
    old = log.begin("s")
    sent = SentLog(first_number=log.next_number, capacity=100)
    for seq, window in ((2, 0), (3, 1)):
        sent.add(seq, log.append(final(window, "caption")).number)
    clock.now = 11.0
    log.expire()
    assert len(log) == 0
    log.park("viewer", "s", sent)
    log.end("s")
    new = log.begin("s")
    for window in range(3):
        log.append(final(window, "caption"))
    claimed = log.claim("viewer", "s")
    assert claimed is not None
    after, exact = claimed.last_seen(3)
    replay = log.replay("s", after, frozenset({"caption"}), before=log.next_number, exact=exact)
    assert replay.complete
    assert [(f.epoch, f.window) for f in replay.finals] == [(new, 0), (new, 1), (new, 2)]
    assert new != old


def test_a_replay_spans_epochs_each_final_with_its_own() -> None:
    log = make_log()
    old = log.begin("s")
    sent = SentLog(first_number=log.next_number, capacity=100)
    sent.add(2, log.append(final(0)).number)
    log.append(final(1))  # the viewer never got this one
    log.park("viewer", "s", sent)
    log.end("s")
    new = log.begin("s")
    log.append(final(0))
    claimed = log.claim("viewer", "s")
    assert claimed is not None
    after, _ = claimed.last_seen(2)
    replay = log.replay("s", after, frozenset({"pt"}), before=log.next_number)
    assert [(f.epoch, f.window) for f in replay.finals] == [(old, 1), (new, 0)]


def test_finals_beyond_the_window_are_reported_as_a_gap() -> None:
    log = make_log(max_finals=3)
    log.begin("s")
    for window in range(10):
        log.append(final(window))
    replay = log.replay("s", 2, frozenset({"pt"}), before=99)
    assert not replay.complete
    assert [f.window for f in replay.finals] == [7, 8, 9]
    assert len(log) == 3


def test_old_finals_and_trails_expire() -> None:
    clock = Clock()
    log = make_log(clock, max_age_s=10.0)
    log.begin("s")
    log.append(final(0))
    log.park("old", "s", SentLog(1, 10))
    clock.now = 8.0
    log.append(final(1))
    clock.now = 15.0
    log.expire()
    assert len(log) == 1
    assert log.claim("old", "s") is None
    assert log.next_number == 3, "numbers are never reused"


def test_trails_are_bounded_and_bound_to_their_stream() -> None:
    log = make_log(max_trails=2)
    for name in ("a", "b", "c"):
        log.park(name, "s", SentLog(1, 10))
    assert log.trails == 2
    assert log.claim("a", "s") is None
    assert log.claim("b", "other") is None
    assert log.claim("b", "s") is not None


def test_a_parked_session_keeps_its_stream_known() -> None:
    clock = Clock()
    log = make_log(clock, max_age_s=10.0, max_streams=1)
    log.begin("s")
    sent = SentLog(log.next_number, 10)
    log.append(final(0))  # never sent: the viewer missed it
    log.end("s")
    clock.now = 5.0
    log.park("viewer", "s", sent)
    log.begin("t")
    log.append(final(0, stream="t"))  # pushes "s" out of the captions
    clock.now = 11.0
    log.expire()  # ... and out of the resume window; the parked viewer still has 4 s to come back
    assert log.transcript("s") is None
    assert not log.replay("s", 0, frozenset({"pt"}), before=99).complete


def test_a_trimmed_log_gives_a_lower_bound_that_never_duplicates() -> None:
    sent = SentLog(first_number=1, capacity=4)
    for seq in range(1, 21):
        sent.add(seq + 1, seq)  # seq n+1 carried number n
    assert sent.overflowed
    assert sent.last_seen(21) == (20, True)
    after, exact = sent.last_seen(2)  # older than anything kept
    assert not exact
    assert after < 20
    assert after >= 12, "only what the log may no longer prove is left to the gap"


def test_captions_show_the_live_epoch_else_the_last_one_with_finals() -> None:
    log = make_log()
    assert log.transcript("s") is None
    first = log.begin("s")
    log.append(final(0, "caption"))
    log.end("s")
    assert log.epoch_of("s") == first  # forgotten by the hub, still readable
    assert [t.stream for t in log.remembered()] == ["s"]
    second = log.begin("s")
    live = log.transcript("s")
    assert live is not None
    assert (live.epoch, live.tracks) == (second, {})  # a new life: nothing said yet
    assert log.remembered() == []
    log.end("s")  # it ended without a final: the last epoch with finals shows again
    assert log.epoch_of("s") == first


def test_captions_keep_the_newest_finals_per_track_and_forget_old_streams_first() -> None:
    log = make_log(max_captions=2, max_streams=2)
    for name in ("a", "b", "c"):
        log.begin(name)
        for window in range(3):
            log.append(final(window, "caption", stream=name))
        if name != "c":
            log.end(name)
    assert [t.stream for t in log.remembered()] == ["b"]
    assert log.transcript("a") is None
    kept = log.transcript("c")
    assert kept is not None
    track = kept.tracks["caption"]
    assert [k.final.window for k in track.finals] == [1, 2]
    assert track.count == 3  # counted, though only the newest two are kept
    assert len(log) == 9, "resume keeps its own window"
