"""The engine's admission order, sans I/O: streams served in turn, each stream's jobs in order."""

from __future__ import annotations

from dataclasses import replace

from engine.fair_queue import FairQueue
from engine.types import CanvasKey, WindowJob


def job(stream: str, window: int, track: str = "pt") -> WindowJob:
    return WindowJob(
        key=CanvasKey(stream, track, window), source=f"{stream} {window}.", context=(), source_lang="en",
        target_lang=track, submitted_ns=0,
    )  # fmt: skip


def names(jobs: list[WindowJob]) -> list[str]:
    return [f"{j.key.stream}{j.key.window}" for j in jobs]


def test_a_flood_does_not_queue_in_front_of_another_stream() -> None:
    queue = FairQueue()
    for window in range(1000):
        queue.put(job("flood", window))
    assert names(queue.take(32)) == [f"flood{w}" for w in range(32)]  # alone, it takes every place
    queue.put(job("calm", 0))
    assert names(queue.take(2)) == ["flood32", "calm0"]  # the second free place, not the 969th
    queue.put(job("calm", 1))
    queue.put(job("calm", 2))
    assert names(queue.take(4)) == ["flood33", "calm1", "flood34", "calm2"]
    assert len(queue) == 1000 - 35


def test_streams_take_turns_and_keep_their_own_order() -> None:
    queue = FairQueue()
    for stream, windows in (("a", 3), ("b", 1), ("c", 2)):
        for window in range(windows):
            queue.put(job(stream, window))
    assert names(queue.take(2)) == ["a0", "b0"]
    queue.put(job("b", 1))  # b had left the turns: it rejoins at the back
    assert names(queue.take(10)) == ["c0", "a1", "b1", "c1", "a2"]
    assert queue.take(1) == []
    assert queue.take(0) == []


def test_abort_drops_queued_jobs_and_streams_left_empty() -> None:
    queue = FairQueue()
    for stream in ("a", "b"):
        for window in range(2):
            queue.put(job(stream, window))
    found = queue.abort(
        [CanvasKey("a", "pt", 0), CanvasKey("a", "pt", 1), CanvasKey("b", "pt", 1), CanvasKey("z", "pt", 0)]
    )
    assert sorted(map(str, found)) == ["a/pt/0", "a/pt/1", "b/pt/1"]
    assert names(queue.take(5)) == ["b0"]
    assert len(queue) == 0


def test_a_newer_provisional_source_takes_the_queued_ones_place_and_the_final_supersedes_it() -> None:
    queue = FairQueue()
    queue.put(job("a", 0))
    draft = job("a", 1)
    queue.put(replace(draft, source="a 1", provisional=True))
    queue.put(job("b", 0))
    queue.put(replace(draft, source="a 1 and", provisional=True))
    assert len(queue) == 3  # one job per window: the newest source
    queue.put(draft)  # the window closed: its final job replaces the provisional one in place
    queue.put(replace(draft, source="a 1 late", provisional=True))  # dropped
    taken = queue.take(10)
    assert names(taken) == ["a0", "b0", "a1"]
    assert not taken[2].provisional
    assert taken[2].source == "a 1."
