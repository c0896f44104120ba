"""How livecanvas's commands run their event loop: uvloop where it is installed, else asyncio's."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run_event_loop(coroutine: Coroutine[Any, Any, object]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it exists
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)
