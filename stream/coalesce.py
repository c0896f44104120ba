"""The one coalescing rule for drafts, shared by every outbox: the viewers' (``stream/fanout.py``) and
the MQTT bridge's (``stream/mqtt/outbox.py``).

Per window (stream, track, window) only the newest pending draft is kept, and it keeps the place of
the window's first pending draft; when the window's final is queued, its pending draft is dropped (the
final says more). Finals are never touched here. With a ``limit``, the windows whose pending drafts are
oldest go first. Sans I/O: callers pass the order in which messages arrived and merge the drafts back
among their other messages by it.
"""

from __future__ import annotations

from collections import OrderedDict

from stream.wire.messages import DraftMsg, FinalMsg

WindowKey = tuple[str, str, int]


def window_key(message: DraftMsg | FinalMsg) -> WindowKey:
    return (message.stream, message.track, message.window)


class LatestDrafts:
    """See the module docstring."""

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"a draft limit must be at least 1, got {limit}")
        self._drafts: OrderedDict[WindowKey, tuple[int, DraftMsg]] = OrderedDict()
        self.limit = limit
        self.superseded = 0  # drafts replaced by a newer draft or by their window's final
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

    def settle(self, final: FinalMsg) -> None:
        """The window's final is queued: its pending draft is stale."""
        if self._drafts.pop(window_key(final), None) is not None:
            self.superseded += 1

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
