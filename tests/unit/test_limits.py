"""Rate limiting and session counting (stream/limits.py), and the outbox bound (stream/fanout.py),
on explicit clocks: no event loop."""

from __future__ import annotations

import pytest

from stream.fanout import Outbox
from stream.limits import AUDIO_BYTES_PER_S, Limits, SessionCounter, TokenBucket
from tests.unit.test_fanout import draft, final


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert bucket.try_take(20, 0.0)
    assert not bucket.try_take(1, 0.0)
    assert not bucket.try_take(6, 0.5)  # 5 refilled
    assert bucket.try_take(5, 0.5)
    assert bucket.try_take(20, 100.0)  # refills up to the burst, not beyond
    assert not bucket.try_take(1, 100.0)


def test_throttling_says_how_long_to_wait_and_never_refuses() -> None:
    """Audio at 4x real time through a 1.5x bucket: the waits add up to the pace of 1.5x."""
    limits = Limits(max_audio_speed=1.5, audio_burst_s=2.0)
    bucket = TokenBucket(limits.audio_bytes_per_s, limits.audio_burst_bytes, now=0.0)
    chunk = AUDIO_BYTES_PER_S // 10  # 100 ms
    now = 0.0
    for _ in range(200):  # 20 s of audio, offered at 4x
        now += bucket.take(chunk, now)
        now += 0.025
    # after the 2 s burst, 18 s of audio at 1.5x takes 12 s at least
    assert now == pytest.approx(18 / 1.5, abs=0.2)


def test_real_time_audio_is_never_throttled() -> None:
    limits = Limits()
    bucket = TokenBucket(limits.audio_bytes_per_s, limits.audio_burst_bytes, now=0.0)
    chunk = AUDIO_BYTES_PER_S // 10
    assert all(bucket.take(chunk, i * 0.1) == 0 for i in range(3000))


def test_a_clock_going_backwards_does_not_mint_tokens() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=10.0)
    assert bucket.try_take(1, 10.0)
    assert not bucket.try_take(1, 5.0)
    assert not bucket.try_take(1, 10.5)


def test_sessions_are_counted_per_token_against_their_cap() -> None:
    counter = SessionCounter(default_cap=2)
    assert counter.open("a")
    assert counter.open("a")
    assert not counter.open("a")
    assert [counter.open("b", cap=3) for _ in range(3)] == [True, True, True]
    assert not counter.open("b", cap=3)
    counter.close("a")
    assert counter.count("a") == 1
    assert counter.open("a")


@pytest.mark.parametrize("name", ["max_sessions", "max_audio_speed", "history_s", "max_viewer_backlog"])
def test_limits_must_be_positive(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Limits(**{name: 0})


def test_the_outbox_overflows_on_finals_not_on_coalesced_drafts() -> None:
    outbox = Outbox(limit=4)
    for rev in range(100):
        outbox.put(draft(0, rev))
    assert not outbox.overflowed  # one draft pending, the newest
    for window in range(3):
        outbox.put(final(window))
    assert not outbox.overflowed  # that draft and 3 finals
    outbox.put(final(3))
    assert outbox.overflowed
    assert [m.window for m in outbox.take() if hasattr(m, "window")] == [0, 0, 1, 2, 3]  # nothing dropped
    assert not outbox.overflowed
