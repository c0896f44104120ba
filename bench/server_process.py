"""What every benchmark needs around a server: a free loopback port, ``livecanvas serve`` started as
its own process and waited for, and a percentile that matches the reports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    port: int, extra_args: Sequence[str] = (), *, timeout_s: float = 600
) -> subprocess.Popen[bytes]:
    """``livecanvas serve`` on ``port`` (offline), returned once it accepts connections."""
    command = [sys.executable, "-m", "livecanvas.cli", "--log-level", "warning", "serve", "--port", str(port)]
    command.append("--insecure-dev")  # loopback only; benchmarks measure the engine, not authentication
    process = subprocess.Popen([*command, *extra_args], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("server did not start listening in time")


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (NaN for no values)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
