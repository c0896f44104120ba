"""Per-connection outgoing queue: finals and control messages in order, drafts coalesced.

A viewer that reads slower than drafts arrive should see the newest draft of each window, not a
backlog of stale ones, and must never miss a final. So a queued draft is replaced in place by a newer
draft of the same (stream, track, window) (stream/coalesce.py: the rule, and why a final leaves its
window's queued draft in place). Finals and every other message keep their order and are never
dropped. Sans I/O: the connection's writer task calls ``take()`` after ``ready`` reports something
pending.

Coalescing can be paused (``coalesce = False``): a connection holding its messages back for a short
grace after ``ready`` (stream/session.py) is not behind, so every draft it is due is kept for it.

The outbox is bounded without ever dropping a final: while more than ``limit`` messages are pending
(drafts are coalesced, so that means finals and errors piling up) ``overflowed`` is true, and its owner
must then disconnect the viewer (stream/session.py does, with a reason). A slow viewer
therefore costs at most ``limit`` messages of memory and never slows the publisher or other viewers.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

from stream.coalesce import LatestDrafts
from stream.wire.messages import DraftMsg, ServerMessage


class Outbox:
    """See the module docstring. ``on_ready`` is called whenever something becomes pending."""

    def __init__(self, on_ready: Callable[[], None] = lambda: None, *, limit: int | None = None) -> None:
        self._drafts = LatestDrafts()  # the coalescing rule (stream/coalesce.py)
        self._others: list[tuple[int, ServerMessage]] = []  # finals and everything else, in order
        self._order = count()
        self._on_ready = on_ready
        self.limit = limit
        self.coalesce = True  # False: every message is kept, in order (the owner is not behind)

    def __len__(self) -> int:
        return len(self._drafts) + len(self._others)

    @property
    def drafts_coalesced(self) -> int:
        """Drafts a slow viewer never got because a newer draft of their window replaced them."""
        return self._drafts.superseded

    def put(self, message: ServerMessage) -> None:
        order = next(self._order)
        if self.coalesce and isinstance(message, DraftMsg):
            self._drafts.put(message, order)
        else:
            self._others.append((order, message))
        self._on_ready()

    @property
    def overflowed(self) -> bool:
        return self.limit is not None and len(self) > self.limit

    def take(self) -> list[ServerMessage]:
        """Everything pending, in order; the outbox is empty afterwards."""
        pending: list[tuple[int, ServerMessage]] = [*self._drafts.take(), *self._others]
        self._others = []
        pending.sort(key=lambda item: item[0])
        return [message for _, message in pending]
