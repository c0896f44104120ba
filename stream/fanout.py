"""Per-connection outgoing queue: finals and control messages in order, drafts coalesced.

A viewer that reads slower than drafts arrive should see the newest draft of each window, not a
backlog of stale ones, and must never miss a final. So a queued draft is replaced in place by a newer
draft of the same (stream, track, window), and dropped once that window's final is queued. Finals and
every other message keep their order and are never dropped. Sans I/O: the connection's writer task
calls ``take()`` after ``ready`` reports something pending.

Coalescing can be paused (``coalesce = False``): a connection holding its messages back for a short
grace after ``ready`` (stream/session.py) is not behind, so every draft it is due is kept for it.

The outbox is bounded without ever dropping a final: while more than ``limit`` messages are pending
(drafts are coalesced, so that means finals and errors piling up) ``overflowed`` is true, and its owner
must then disconnect the viewer (stream/session.py does, with a reason). A slow viewer
therefore costs at most ``limit`` messages of memory and never slows the publisher or other viewers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from itertools import count

from stream.messages import DraftMsg, FinalMsg, ServerMessage

_DraftKey = tuple[str, str, int]


class Outbox:
    """See the module docstring. ``on_ready`` is called whenever something becomes pending."""

    def __init__(self, on_ready: Callable[[], None] = lambda: None, *, limit: int | None = None) -> None:
        self._pending: OrderedDict[object, ServerMessage] = OrderedDict()
        self._unique = count()
        self._on_ready = on_ready
        self.limit = limit
        self.drafts_coalesced = 0
        self.coalesce = True  # False: every message is kept, in order (the owner is not behind)

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, message: ServerMessage) -> None:
        if not self.coalesce:
            self._pending[next(self._unique)] = message
        elif isinstance(message, DraftMsg):
            key: object = ("draft", message.stream, message.track, message.window)
            if key in self._pending:
                self.drafts_coalesced += 1
                self._pending[key] = message  # replaced in place: keeps its position
            else:
                self._pending[key] = message
        else:
            if isinstance(message, FinalMsg):
                stale = ("draft", message.stream, message.track, message.window)
                if self._pending.pop(stale, None) is not None:
                    self.drafts_coalesced += 1
            self._pending[next(self._unique)] = message
        self._on_ready()

    @property
    def overflowed(self) -> bool:
        return self.limit is not None and len(self._pending) > self.limit

    def take(self) -> list[ServerMessage]:
        """Everything pending, in order; the outbox is empty afterwards."""
        messages = list(self._pending.values())
        self._pending.clear()
        return messages
