"""``livecanvas send`` on a real terminal (a pseudo-terminal) against a real server: drafts overwritten
in place by finals, a progress bar while a file is sent, and the summary."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from stream.server import LivecanvasServer
from tests.integration.conftest import url_of
from tests.unit.test_render import Screen

LINES = [
    "The first speaker is already on stage.",
    "She will talk about the river and the bridges.",
    "Questions come at the end.",
]


def run_on_a_terminal(args: list[str], columns: int) -> tuple[int, str]:
    """Run the CLI with its stdout on a pseudo-terminal; everything it wrote there, and its exit code."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm", "HF_HUB_OFFLINE": "1"}
    env.pop("NO_COLOR", None)
    with subprocess.Popen(
        [sys.executable, "-m", "livecanvas.cli", "--log-level", "warning", *args],
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
    ) as process:
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        assert process.stderr is not None
        stderr = process.stderr.read().decode()
        process.wait(timeout=120)
    assert "Traceback" not in stderr, stderr
    return process.returncode, b"".join(chunks).decode()


async def test_send_on_a_terminal_overwrites_drafts_and_shows_progress(
    server: LivecanvasServer, tmp_path: Path
) -> None:
    talk = tmp_path / "talk.txt"
    talk.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    args = ["send", "--url", url_of(server), "--stream", "tty", "--tracks", "caption,pt"]
    code, output = await asyncio.to_thread(
        run_on_a_terminal, [*args, "--file", str(talk), "--interval", "0.5"], 100
    )
    assert code == 0, output
    assert "\x1b[2K" in output  # the live area was redrawn in place
    assert "\r\n" in output  # the terminal's own line discipline: proof that stdout was a real tty
    assert "3/3 lines" in output
    screen = Screen(100)
    screen.feed(output.replace("\r\n", "\n"))
    rows = screen.text()
    for track in ("caption", "pt"):  # one line per final (a long one wraps onto more rows)
        heads = [int(m[1]) for row in rows if (m := re.match(rf"\s*{track} #(\d+) ", row))]
        assert heads == list(range(len(LINES))), (track, rows)
    for line in LINES:
        assert any(row.startswith("caption #") and line in row for row in rows), (line, rows)
    assert not [row for row in rows if row.endswith("\u2026")], f"a draft was left on screen: {rows}"
    assert not [row for row in rows if row.startswith("[#")], f"the progress bar was left on screen: {rows}"
    assert "summary (server-measured latency from window commit):" in rows
    [pt_summary] = [row for row in rows if row.strip().startswith("pt:")]
    assert "3 windows, 3 finals" in pt_summary
    assert "p95" in pt_summary
    assert "bye (end)" in rows
