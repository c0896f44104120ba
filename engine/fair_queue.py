"""Which window job the engine admits next: streams served in turn, so one stream's backlog waits
behind itself and never in front of another stream's windows.

Sans I/O: the engine worker (engine/worker.py) ``put``s every job it is handed and, at each step
boundary, ``take``s as many as the scheduler has free places (``max_batch`` less the canvases running
or waiting there). The scheduler's own queue therefore never holds a backlog; the backlog waits here,
one FIFO per stream, and ``take`` serves the streams with jobs round-robin, one job per stream per
turn (a stream that had no job queued joins the turns at the back). A publisher that floods the
server with a thousand windows fills the free places only while no other stream has a job waiting: a
window of another stream waits for at most one free place per stream queued ahead of it, i.e. for a
few canvases to finish (a few denoising steps), not for the whole backlog. Within a stream jobs keep
their order. ``abort`` drops queued jobs (a window nobody reads any more).

A job for a key that already has a job queued takes that job's place in its stream's FIFO (the turn
order does not change) when it is newer news about the same window: a newer provisional source
replaces a queued provisional one, and the window's final job replaces a queued provisional one. So
under load a window waits with one job, its newest, never a backlog of stale drafts. A provisional
job that finds its window's final job queued is dropped (the final already covers it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection

from engine.types import CanvasKey, WindowJob


class FairQueue:
    """See the module docstring."""

    def __init__(self) -> None:
        self._jobs: dict[str, deque[WindowJob]] = {}  # per stream, in arrival order
        self._turns: deque[str] = deque()  # streams with jobs; the next to serve first

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._jobs.values())

    def put(self, job: WindowJob) -> None:
        stream = job.key.stream
        jobs = self._jobs.get(stream)
        if jobs is None:
            jobs = self._jobs[stream] = deque()
            self._turns.append(stream)
        for position, queued in enumerate(jobs):
            if queued.key == job.key and queued.provisional:
                jobs[position] = job
                return
            if queued.key == job.key and job.provisional:
                return  # the window's final job is queued: a provisional source adds nothing
        jobs.append(job)

    def take(self, places: int) -> list[WindowJob]:
        """Up to ``places`` jobs, one per stream in turn."""
        taken: list[WindowJob] = []
        while len(taken) < places and self._turns:
            stream = self._turns.popleft()
            jobs = self._jobs[stream]
            taken.append(jobs.popleft())
            if jobs:
                self._turns.append(stream)
            else:
                del self._jobs[stream]
        return taken

    def abort(self, keys: Collection[CanvasKey]) -> list[CanvasKey]:
        """Drop the queued jobs of ``keys``; returns the keys found."""
        wanted = set(keys)
        dropped: list[CanvasKey] = []
        for stream in list(self._turns):
            jobs = self._jobs[stream]
            kept = deque(job for job in jobs if job.key not in wanted)
            dropped.extend(job.key for job in jobs if job.key in wanted)
            if kept:
                self._jobs[stream] = kept
            else:
                del self._jobs[stream]
                self._turns.remove(stream)
        return dropped
