"""The one coalescing rule for drafts, shared by every outbox: the viewers' (``stream/fanout.py``) and
the MQTT bridge's (``stream/mqtt/outbox.py``).

Per window (stream, track, window) only the newest pending draft is kept, and it keeps the place of
the window's first pending draft. A final queued behind its window's pending draft leaves the draft in
place: a draft and its final queued in one turn of the event loop are the common case under load (a
window translated only once closed drafts once, a few milliseconds before its final), not a reader
that is behind, and dropping the draft there made which drafts anyone saw a matter of loop timing.
Since the draft keeps its earlier place, it still goes out before its final. Finals are never touched
here. With a ``limit``, the windows whose pending drafts are oldest go first. Sans I/O: callers pass
the order in which messages arrived and merge the drafts back among their other messages by it.
"""

from __future__ import annotations

from collections import OrderedDict

from stream.wire.messages import DraftMsg

WindowKey = tuple[str, str, int]


def window_key(message: DraftMsg) -> WindowKey:
    return (message.stream, message.track, message.window)


class LatestDrafts:
    """See the module docstring."""

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"a draft limit must be at least 1, got {limit}")
        self._drafts: OrderedDict[WindowKey, tuple[int, DraftMsg]] = OrderedDict()
        self.limit = limit
        self.superseded = 0  # drafts replaced by a newer draft of their window
        self.evicted = 0  # drafts dropped over the limit

    def __len__(self) -> int:
        return len(self._drafts)

    def put(self, draft: DraftMsg, order: int) -> None:
        """Queue ``draft``, which arrived ``order``-th; it replaces its window's pending draft."""
        key = window_key(draft)
        pending = self._drafts.get(key)
        if pending is not None:
            self.superseded += 1
            self._drafts[key] = (pending[0], draft)
            return
        self._drafts[key] = (order, draft)
        while self.limit is not None and len(self._drafts) > self.limit:
            self._drafts.popitem(last=False)
            self.evicted += 1

    def take(self) -> list[tuple[int, DraftMsg]]:
        """Every pending draft with its order; none are pending afterwards."""
        drafts = list(self._drafts.values())
        self._drafts.clear()
        return drafts

    def clear(self) -> int:
        """Drop every pending draft; returns how many."""
        dropped = len(self._drafts)
        self._drafts.clear()
        return dropped
