"""Property tests of the HLS segmenter and the CEA-608 scheduler over random arrival patterns: finals
late, early, in bursts, after idle gaps, with long lines. The bounds are docs/broadcast.md's."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycaption import SCCReader

from clients.broadcast.cea608 import Cea608Layout, to_608
from clients.broadcast.formats import CaptionWriter
from clients.broadcast.scc import frames_to_ms
from stream.captions.cues import Caption
from tests.unit.test_captions import assert_every_cue_in_every_segment_it_overlaps, run_hls, segment_cues
from tests.unit.test_cea608 import bursts_of, documented_schedule

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzéçã&<>", min_size=1, max_size=12)
TEXT = st.lists(WORD, min_size=1, max_size=30).map(" ".join)  # up to 3 lines of WebVTT, 12 of 608


@dataclass(frozen=True, slots=True)
class Step:
    """One final: how long after the previous window's start its window starts, how long it was
    spoken, how long after its start it arrives, and its text."""

    gap_ms: int
    span_ms: int
    lag_ms: int
    text: str


STEP = st.builds(
    Step,
    gap_ms=st.one_of(
        st.integers(0, 400),  # a burst
        st.integers(400, 6000),  # speech
        st.integers(6000, 40_000),  # an idle gap
    ),
    span_ms=st.integers(0, 4000),
    lag_ms=st.one_of(
        st.integers(0, 300), st.integers(300, 5000), st.integers(5000, 20_000)
    ),  # prompt .. late
    text=TEXT,
)


def captions_of(steps: list[Step], clock_ms: int) -> list[Caption]:
    """The finals in the order they arrive: in window order, each no sooner than the one before."""
    captions: list[Caption] = []
    t0, arrival = 0, clock_ms
    for window, step in enumerate(steps):
        t0 += step.gap_ms
        arrival = max(arrival, clock_ms + t0 + step.lag_ms)
        captions.append(Caption(step.text, window, t0, t0 + step.span_ms, arrival_ms=arrival))
    return captions


@PROPERTIES
@given(
    steps=st.lists(STEP, min_size=1, max_size=25),
    segment_ms=st.sampled_from([1000, 2000, 2500, 6000]),
    late_ms=st.sampled_from([0, 1500, 4000, 10_000]),
    poll_ms=st.sampled_from([50, 250, 1000]),
    clock_ms=st.integers(0, 10**9),
)
def test_hls_segments_hold_every_cue_they_overlap_whatever_the_arrivals(
    steps: list[Step], segment_ms: int, late_ms: int, poll_ms: int, clock_ms: int
) -> None:
    captions = captions_of(steps, clock_ms)
    writer, segments = run_hls(captions, segment_ms, late_ms=late_ms, poll_ms=poll_ms)
    cues = writer.cues
    assert [c.window for c in cues] == [c.window for c in captions]  # no final lost
    assert_every_cue_in_every_segment_it_overlaps(cues, segments)
    for sequence, read in segment_cues(segments).items():
        names = [name for name, *_ in read]
        assert len(names) == len(set(names)), f"a cue twice in segment {sequence}"
    playlist = writer.hls.playlist() if writer.hls is not None else ""
    target = int(playlist.split("#EXT-X-TARGETDURATION:")[1].split("\n")[0])
    durations = [float(line[8:-1]) for line in playlist.splitlines() if line.startswith("#EXTINF:")]
    assert len(durations) == len(segments)
    assert all(duration <= target for duration in durations)
    # on time, or late by no more than the final's own lateness past the bound
    prompt: int | None = None  # the smallest arrival - t0 before this final
    end = 0  # the previous cue's end
    for caption, cue in zip(captions, cues, strict=True):
        assert caption.t0_ms is not None
        lag = caption.arrival_ms - caption.t0_ms
        lateness = 0 if prompt is None else max(0, lag - prompt)
        assert cue.start_ms >= max(caption.t0_ms, end)
        if lateness <= late_ms:
            assert cue.start_ms == max(caption.t0_ms, end), (caption, cue, lateness)
        else:
            assert cue.start_ms <= max(caption.t0_ms + lateness - late_ms, end), (caption, cue, lateness)
        prompt = lag if prompt is None else min(prompt, lag)
        end = cue.end_ms


def scc_of(captions: list[Caption], mode: str, rows: int) -> tuple[CaptionWriter, str]:
    writer = CaptionWriter("scc", mode=mode, rows=rows)
    text = writer.start()
    for caption in captions:
        text += writer.add(caption).text
    return writer, text + writer.finish().text


LAYOUT = st.sampled_from(
    [("roll-up", 2), ("roll-up", 3), ("roll-up", 4), ("pop-on", 1), ("pop-on", 2), ("pop-on", 4)]
)


@PROPERTIES
@given(steps=st.lists(STEP, min_size=1, max_size=15), layout=LAYOUT)
def test_608_sends_every_caption_in_order_late_only_by_the_backlog(
    steps: list[Step], layout: tuple[str, int]
) -> None:
    mode, rows = layout
    writer, text = scc_of(captions_of(steps, 0), mode, rows)
    grid = Cea608Layout(mode, rows)
    screens = [s for cue in writer.cues for s in grid.add(cue)] + grid.finish()
    bursts = bursts_of(text)
    starts = [start for start, _ in bursts]
    assert starts == documented_schedule(screens, bursts)  # the rule, frame by frame
    for (start, words), after in zip(bursts, starts[1:], strict=False):
        assert start + len(words) <= after  # bursts never overlap
    captions = SCCReader().read(text)
    read = captions.get_captions(captions.get_languages()[0])
    assert " ".join(" ".join(c.get_text().replace("\xa0", " ").split()) for c in read) == " ".join(
        to_608(c.text) for c in writer.cues
    )  # every final's text, in order


@PROPERTIES
@given(
    gaps=st.lists(st.integers(2000, 30_000), min_size=1, max_size=12),
    texts=st.lists(st.text(alphabet="abcdefghij ", min_size=1, max_size=32).filter(str.strip), min_size=12),
    layout=LAYOUT,
)
def test_608_text_no_faster_than_the_channel_goes_on_air_on_time(
    gaps: list[int], texts: list[str], layout: tuple[str, int]
) -> None:
    mode, rows = layout
    t0, captions = 0, []
    for window, gap in enumerate(gaps):
        t0 += gap
        captions.append(Caption(texts[window], window, t0, t0))
    writer, text = scc_of(captions, mode, rows)
    grid = Cea608Layout(mode, rows)
    screens = [s for cue in writer.cues for s in grid.add(cue)] + grid.finish()
    captions_read = SCCReader().read(text)
    read = captions_read.get_captions(captions_read.get_languages()[0])
    shown = [s for s in screens if s.kind != "clear"]
    assert len(read) == len(shown)
    for caption, screen in zip(read, shown, strict=True):
        # on its frame: a frame's rounding, and drop-frame timecode up to 2 frames behind within a minute
        assert abs(caption.start / 1000 - screen.t_ms) <= frames_to_ms(3), (caption, screen)
