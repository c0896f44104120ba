"""``livecanvas send``'s terminal output, sans-I/O: what a terminal shows after the live view's writes
(replayed on a small VT100 screen model), the plain and JSON views, and the summary."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace

from clients.python.render import JsonView, LiveView, LogView, bar, cells, fit_tail
from clients.python.send import SendOptions, Tally, make_view, summary
from stream.wire.messages import Bye, DraftMsg, ErrorMsg, FinalMsg, StatsMsg

SGR = re.compile(r"\x1b\[[0-9;]*m")


class Screen:
    """Just enough of a terminal: printable text, CR, LF, erase line (ESC[2K), cursor up (ESC[1A)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.lines: list[list[str]] = [[]]
        self.row = 0
        self.col = 0

    def feed(self, data: str) -> None:
        data = SGR.sub("", data)
        i = 0
        while i < len(data):
            if data.startswith("\x1b[2K", i):
                self.lines[self.row] = []
                i += 4
            elif data.startswith("\x1b[1A", i):
                self.row = max(0, self.row - 1)
                i += 4
            elif data[i] == "\x1b":
                raise AssertionError(f"unexpected escape {data[i : i + 6]!r}")
            elif data[i] == "\r":
                self.col = 0
                i += 1
            elif data[i] == "\n":
                self.row += 1
                self.col = 0
                if self.row == len(self.lines):
                    self.lines.append([])
                i += 1
            else:
                if self.col >= self.width:  # auto-wrap
                    self.row += 1
                    self.col = 0
                    if self.row == len(self.lines):
                        self.lines.append([])
                line = self.lines[self.row]
                line.extend(" " * (self.col - len(line)))
                line[self.col : self.col + 1] = [data[i]]
                self.col += 1
                i += 1

    def text(self) -> list[str]:
        rows = ["".join(line).rstrip() for line in self.lines]
        while rows and not rows[-1]:
            rows.pop()
        return rows


def draft(track: str, window: int, text: str, seq: int, rev: int = 0) -> DraftMsg:
    return DraftMsg(
        stream="s", track=track, window=window, rev=rev, text=text, t0_ms=0, t1_ms=0, latency_ms=80, seq=seq
    )


def final(track: str, window: int, text: str, seq: int, latency_ms: int = 200) -> FinalMsg:
    return FinalMsg(
        stream="s",
        track=track,
        window=window,
        rev=9,
        text=text,
        t0_ms=0,
        t1_ms=0,
        latency_ms=latency_ms,
        seq=seq,
    )


def test_drafts_are_overwritten_in_place_by_their_finals() -> None:
    view, screen = LiveView(width=60), Screen(60)
    screen.feed(view.message(draft("pt", 0, "Bom", 1), 0))
    screen.feed(view.message(draft("pt", 0, "Bom dia a", 2, rev=1), 0))
    assert screen.text() == ["     pt #0   Bom dia a \u2026"]
    screen.feed(view.message(final("caption", 1, "How are you?", 3, latency_ms=0), 0))
    screen.feed(view.message(draft("pt", 1, "Como", 4), 0))
    assert screen.text() == [
        "caption #1   How are you?  +0 ms",
        "     pt #0   Bom dia a \u2026",
        "     pt #1   Como \u2026",
    ]
    screen.feed(view.message(final("pt", 0, "Bom dia a todos.", 5), 0))
    screen.feed(view.progress(3, 10, "lines"))
    assert screen.text() == [
        "caption #1   How are you?  +0 ms",
        "     pt #0   Bom dia a todos.  +200 ms",
        "     pt #1   Como \u2026",
        "[#######.................]  30%  3/10 lines",
    ]
    screen.feed(view.message(final("pt", 1, "Como vai?", 6), 0))
    screen.feed(view.message(StatsMsg(values={"engine_forwards": 3}, seq=7), 0))
    screen.feed(view.message(Bye(reason="end", seq=8), 0))
    screen.feed(view.close())
    screen.feed("summary\n")
    assert screen.text() == [
        "caption #1   How are you?  +0 ms",
        "     pt #0   Bom dia a todos.  +200 ms",
        "     pt #1   Como vai?  +200 ms",
        "bye (end)",
        "summary",
    ]


def test_live_lines_never_wrap_and_show_the_newest_words() -> None:
    view, screen = LiveView(width=30, color=False), Screen(30)
    long_draft = "one two three four five six seven eight nine ten eleven"
    output = view.message(draft("caption", 4, long_draft, 1), 0)
    assert "\x1b[2m" not in output  # no colour when asked
    screen.feed(output)
    screen.feed(view.progress(12.5, 50, "s"))
    [live, progress] = screen.text()
    assert live.startswith("caption #4   \u2026")
    assert live.endswith("eleven \u2026")
    assert cells(live) <= 29
    assert progress == "[#....]  25%  12.5/50.0 s"  # the bar shrinks to fit
    assert cells(progress) <= 29
    screen.feed(view.message(draft("caption", 4, long_draft + " twelve", 2, rev=1), 0))
    assert screen.text()[0].endswith("twelve \u2026")
    assert len(screen.text()) == 2  # redrawn over itself, not below
    assert view.progress(12.5, 50, "s") == ""  # nothing changed, nothing written


def test_wide_characters_count_two_cells() -> None:
    assert cells("字幕") == 4
    fitted = fit_tail("這是一個很長的字幕句子", 9)
    assert fitted.startswith("\u2026")
    assert cells(fitted) <= 9
    assert fit_tail("short", 9) == "short"
    assert bar(0, 0, "s").endswith("  0%  0.0/0.0 s")
    assert bar(7, 5, "lines").startswith("[" + "#" * 24 + "] 100%")


def test_errors_and_engine_failures_are_permanent_lines() -> None:
    view, screen = LiveView(width=60, color=False), Screen(60)
    screen.feed(view.message(draft("pt", 0, "Bo", 1), 0))
    failed = FinalMsg(
        stream="s", track="pt", window=0, rev=1, text="", t0_ms=0, t1_ms=0, latency_ms=5, error="oom", seq=2
    )
    screen.feed(view.message(failed, 0))
    screen.feed(view.message(ErrorMsg(code="bad_field", message="nope", seq=3), 0))
    assert screen.text() == ["     pt #0   <error: oom>  +5 ms", "error bad_field: nope"]


def test_plain_and_json_views_write_one_line_per_message() -> None:
    log = LogView(started_ns=0)
    line = log.message(draft("pt", 2, "Ol\x07a", 4), 1_500_000_000)
    assert line == "[  1500 ms] draft      pt #2 r0 (+80 ms)  Ol\u00b7a\n"
    assert log.progress(1, 2, "lines") == ""
    assert log.close() == ""
    record = json.loads(JsonView().message(final("pt", 2, "Olá.", 5), 0))
    assert (record["type"], record["text"], record["seq"]) == ("final", "Olá.", 5)


def test_the_view_follows_the_output() -> None:
    options = SendOptions(url="ws://x")
    assert isinstance(make_view(options, io.StringIO(), 0), LogView)  # not a terminal
    assert isinstance(make_view(SendOptions(url="ws://x", live=True), io.StringIO(), 0), LiveView)
    assert isinstance(
        make_view(SendOptions(url="ws://x", as_json=True, live=True), io.StringIO(), 0), JsonView
    )


def test_summary_has_counts_medians_and_p95_per_track() -> None:
    tally = Tally()
    for window, (first, last) in enumerate([(100, 300), (120, 500), (90, 250), (400, 900)]):
        tally.record(replace(draft("pt", window, "x", 0), latency_ms=first), 0)
        tally.record(replace(draft("pt", window, "xy", 0, rev=1), latency_ms=first + 50), 0)
        tally.record(final("pt", window, "xyz", 0, latency_ms=last), 0)
        tally.record(final("caption", window, "abc", 0, latency_ms=0), 0)
    lines = summary(tally)
    [caption] = [line for line in lines if line.strip().startswith("caption:")]
    [pt] = [line for line in lines if line.strip().startswith("pt:")]
    assert "4 windows, 4 finals, 0 drafts; no drafts; final median 0 ms, p95 0 ms" in caption
    assert "4 windows, 4 finals, 8 drafts" in pt
    assert "first draft median 110 ms, p95 358 ms" in pt
    assert "final median 400 ms, p95 840 ms, max 900 ms" in pt
