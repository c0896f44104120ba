"""The container's health check: the server must answer a subscriber's ``hello`` with ``ready``.

Exit status 0 when it does within 5 s, 1 otherwise (what Docker's HEALTHCHECK expects). The port is
``$LIVECANVAS_PORT`` (default 8765), the token ``$LIVECANVAS_TOKEN``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from clients.python.client import connect


async def check(port: int, token: str) -> None:
    async with connect(
        f"ws://127.0.0.1:{port}", stream="healthcheck", role="subscribe", token=token, open_timeout=5
    ) as session:
        assert session.ready.stream == "healthcheck"


def main() -> int:
    port = int(os.environ.get("LIVECANVAS_PORT", "8765"))
    try:
        asyncio.run(asyncio.wait_for(check(port, os.environ.get("LIVECANVAS_TOKEN", "")), timeout=5))
    except Exception as error:  # any failure means unhealthy; say why in the container's health log
        print(f"unhealthy: {error!r}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
