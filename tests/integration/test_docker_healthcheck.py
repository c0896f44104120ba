"""docker/healthcheck.py, the image's HEALTHCHECK, against a real server and against a closed port."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from stream.server import LivecanvasServer

HEALTHCHECK = Path(__file__).resolve().parents[2] / "docker" / "healthcheck.py"


async def run_healthcheck(port: int) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HEALTHCHECK),
        env={**os.environ, "LIVECANVAS_PORT": str(port), "PYTHONPATH": str(HEALTHCHECK.parents[1])},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_healthy_when_the_server_answers(server: LivecanvasServer) -> None:
    code, output = await run_healthcheck(server.port)
    assert (code, output.strip()) == (0, "healthy")


async def test_unhealthy_when_nothing_listens() -> None:
    code, output = await run_healthcheck(9)
    assert code == 1
    assert output.startswith("unhealthy:")
