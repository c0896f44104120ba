"""The container's health check: the server's ``/healthz`` must answer 200 (it answers 503 while it
starts or drains; see docs/operations.md).

Exit status 0 when it does within 5 s, 1 otherwise (what Docker's HEALTHCHECK expects). The port is
``$LIVECANVAS_PORT`` (default 8765). ``/healthz`` needs no token.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def check(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        if response.status != 200:
            raise RuntimeError(f"/healthz answered {response.status}")


def main() -> int:
    port = int(os.environ.get("LIVECANVAS_PORT", "8765"))
    try:
        check(port)
    except Exception as error:  # any failure means unhealthy; say why in the container's health log
        print(f"unhealthy: {error!r}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
