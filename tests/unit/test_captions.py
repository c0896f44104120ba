"""Caption timing and the WebVTT / HLS / SubRip writers, checked with independent parsers from PyPI."""

from __future__ import annotations

import html
import itertools
import re

import pytest
import srt
import webvtt

from clients.broadcast.formats import CaptionWriter, Output
from stream.captions.cues import Caption, Cue, CueTimer, CueTiming, wrap
from stream.captions.srt import SrtWriter, srt_time
from stream.captions.webvtt import HlsSegmenter, Segment, WebVttWriter, vtt_time

TIMING = CueTiming(min_ms=1000, ms_per_char=50, max_ms=6000, floor_ms=500)


def cues_of(captions: list[Caption], timing: CueTiming = TIMING) -> list[Cue]:
    timer = CueTimer(timing)
    cues = [cue for caption in captions for cue in timer.add(caption)]
    return cues + timer.finish()


def assert_clean(cues: list[Cue]) -> None:
    for cue in cues:
        assert cue.start_ms < cue.end_ms, cue
    for before, after in itertools.pairwise(cues):
        assert before.end_ms <= after.start_ms, (before, after)
    assert [cue.index for cue in cues] == list(range(len(cues)))


def test_cues_follow_window_times_and_last_at_least_their_reading_time() -> None:
    cues = cues_of(
        [
            Caption("Good evening.", 0, 1000, 3500),  # spoken for 2.5 s: keeps its span
            Caption("Welcome.", 1, 4000, 4000),  # zero length: gets the minimum
            Caption("x" * 200, 2, 9000, 9100),  # long text: reading time, capped
        ]
    )
    assert [(c.window, c.start_ms, c.end_ms) for c in cues] == [
        (0, 1000, 3500),
        (1, 4000, 5000),
        (2, 9000, 15000),
    ]
    assert_clean(cues)


def test_overlapping_and_backwards_windows_become_clean_cues() -> None:
    cues = cues_of(
        [
            Caption("One two three four five six seven.", 0, 1000, 1000),  # wants 1.75 s
            Caption("Next.", 1, 1500, 1500),  # starts before the first would end: the first is cut
            Caption("Too soon.", 2, 1600, 1600),  # would leave 'Next.' under the floor
            Caption("Backwards.", 3, 100, 200),  # times run backwards: starts after the previous
        ]
    )
    assert_clean(cues)
    assert cues[0].end_ms == 1500
    assert cues[1].end_ms - cues[1].start_ms == TIMING.floor_ms
    assert cues[3].start_ms >= cues[2].end_ms


def test_captions_without_times_use_arrival_and_empty_ones_are_skipped() -> None:
    cues = cues_of(
        [
            Caption("First.", 0, arrival_ms=50_000),
            Caption("", 1, arrival_ms=50_500),  # an engine failure's empty final
            Caption("  Second   line. ", 2, arrival_ms=53_000),
        ]
    )
    assert [(c.window, c.start_ms, c.end_ms, c.text) for c in cues] == [
        (0, 0, 1000, "First."),
        (2, 3000, 4000, "Second line."),
    ]


def test_poll_settles_a_cue_once_its_time_is_up() -> None:
    timer = CueTimer(TIMING)
    assert timer.add(Caption("Hello.", 0, 0, 0, arrival_ms=10_000)) == []
    assert timer.poll(10_500) == []
    assert [c.end_ms for c in timer.poll(11_000)] == [1000]
    assert timer.finish() == []
    assert timer.watermark(12_000) == 1000  # nothing starts before the last cue's end ...
    assert timer.watermark(23_000) == 3000  # ... nor 10 s (late_ms) before the prompt clock's time


@pytest.mark.parametrize(
    ("text", "width", "lines"),
    [
        ("one two three", 7, ["one two", "three"]),
        ("abcdefghij klm", 4, ["abcd", "efgh", "ij", "klm"]),
        ("  spaced   out  ", 32, ["spaced out"]),
        ("", 32, []),
    ],
)
def test_wrap_breaks_at_spaces(text: str, width: int, lines: list[str]) -> None:
    assert wrap(text, width) == lines


def test_time_stamps() -> None:
    assert vtt_time(3_723_004) == "01:02:03.004"
    assert srt_time(3_723_004) == "01:02:03,004"
    assert vtt_time(0) == "00:00:00.000"


CAPTIONS = [
    Caption("Good evening, and welcome to the live broadcast from the city centre.", 0, 0, 2600),
    Caption("Tom & Jerry <live> --> tonight", 1, 3000, 3000),
    Caption("Olá, São Paulo! Ça va, “München”?", 2, 9000, 11000),
    Caption("The end.", 3, 14000, 14000),
]


def test_live_webvtt_parses_with_webvtt_py() -> None:
    writer = CaptionWriter("vtt")
    text = writer.start()
    for caption in CAPTIONS:
        text += writer.add(caption).text
    text += writer.finish().text
    parsed = webvtt.from_string(text, strict=True)
    assert [c.identifier for c in parsed] == [f"window-{i}" for i in range(4)]
    assert [html.unescape(c.text).replace("\n", " ") for c in parsed] == [c.text for c in CAPTIONS]
    assert [(c.start, c.end) for c in parsed] == [
        (vtt_time(q.start_ms), vtt_time(q.end_ms)) for q in writer.cues
    ]
    assert [q.start_ms for q in writer.cues] == [0, 3000, 9000, 14000]
    assert all(len(html.unescape(line)) <= 42 for c in parsed for line in c.raw_text.splitlines())
    assert "-->" not in parsed[1].raw_text


def test_webvtt_grows_cue_by_cue() -> None:
    writer = WebVttWriter()
    text = writer.header()
    for cue in cues_of(CAPTIONS):
        text += writer.cue(cue)
        assert len(webvtt.from_string(text, strict=True)) == cue.index + 1  # valid after every append


def test_srt_parses_with_srt_library() -> None:
    writer = CaptionWriter("srt")
    text = writer.start()
    for caption in CAPTIONS:
        text += writer.add(caption).text
    text += writer.finish().text
    subtitles = list(srt.parse(text))
    assert [s.index for s in subtitles] == [1, 2, 3, 4]
    assert [s.content.replace("\n", " ") for s in subtitles] == [c.text for c in CAPTIONS]
    assert [(s.start.total_seconds(), s.end.total_seconds()) for s in subtitles] == [
        (cue.start_ms / 1000, cue.end_ms / 1000) for cue in writer.cues
    ]
    assert srt.compose(subtitles, reindex=False) == text  # the library writes exactly the same file


def test_srt_numbers_continue_across_calls() -> None:
    writer = SrtWriter()
    first = writer.cue(Cue(0, 0, 0, 1000, "a"))
    second = writer.cue(Cue(1, 1, 1000, 2000, "b"))
    assert first.startswith("1\n")
    assert second.startswith("2\n")


def test_hls_segments_carry_the_timestamp_map_and_repeat_cues_across_boundaries() -> None:
    segmenter = HlsSegmenter(6000, mpegts=126_000)
    segments = []
    for cue in cues_of(CAPTIONS):
        segments += segmenter.add(cue)
    assert [s.sequence for s in segments] == [0, 1], "a segment is done once a cue starts after its end"
    segments += segmenter.finish()
    assert [s.sequence for s in segments] == [0, 1, 2]
    by_window: dict[str, list[int]] = {}
    for segment in segments:
        assert segment.text.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\n\n")
        parsed = webvtt.from_string(segment.text, strict=True)
        for cue in parsed:
            by_window.setdefault(cue.identifier or "", []).append(segment.sequence)
            assert cue.start_in_seconds < (segment.sequence + 1) * 6
            assert cue.end_in_seconds >= segment.sequence * 6
    assert by_window == {"window-0": [0], "window-1": [0], "window-2": [1], "window-3": [2]}
    playlist = segmenter.playlist()
    assert playlist.splitlines() == [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-TARGETDURATION:6",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:EVENT",
        "#EXTINF:6.000,",
        "captions00000.vtt",
        "#EXTINF:6.000,",
        "captions00001.vtt",
        "#EXTINF:6.000,",
        "captions00002.vtt",
        "#EXT-X-ENDLIST",
    ]


def test_a_cue_across_a_segment_boundary_is_in_both_and_empty_stretches_get_empty_segments() -> None:
    segmenter = HlsSegmenter(2000)
    done = segmenter.add(Cue(0, 0, 10_500, 12_500, "spans two"))
    assert done == []  # the grid starts at the first cue's segment (sequence 5)
    done = segmenter.add(Cue(1, 1, 17_000, 18_000, "later"))
    assert [(s.sequence, s.text.count("-->")) for s in done] == [(5, 1), (6, 1), (7, 0)]
    assert [s.sequence for s in segmenter.finish()] == [8]
    assert "#EXT-X-MEDIA-SEQUENCE:5" in segmenter.playlist()


def test_caption_writer_in_hls_mode_polls_segments_closed() -> None:
    writer = CaptionWriter("vtt", hls_segment_ms=2000, hls_late_ms=1000)
    assert writer.start() == ""
    out = Output()
    out.extend(writer.add(Caption("One.", 0, 0, 0, arrival_ms=1000)))
    out.extend(writer.poll(2500))  # "One." settles (default minimum 1.2 s); stream time is 1.5 s
    assert [c.text for c in writer.cues] == ["One."]
    assert out.segments == []
    out.extend(writer.poll(3900))  # stream time 2.9 s, less 1 s for a late final: 0-2 s not yet
    assert out.segments == []
    out.extend(writer.poll(4000))  # stream time 3 s, less 1 s: segment 0 (0-2 s) is closed
    assert [s.sequence for s in out.segments] == [0]
    assert re.search(r"00:00:00.000 --> 00:00:01.200\nOne\.", out.segments[0].text)


def test_caption_writer_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="format"):
        CaptionWriter("ttml")
    with pytest.raises(ValueError, match="WebVTT"):
        CaptionWriter("srt", hls_segment_ms=6000)
    with pytest.raises(ValueError, match="rows"):
        CaptionWriter("scc", mode="roll-up", rows=1)


@pytest.mark.parametrize(
    "text",
    [
        "Tom & Jerry disse que 3 no 5 é verdade.",  # 39 characters, 43 once escaped
        "Diz que 3 < 5 e 5 > 3, e tem toda razão.",  # 40 characters, 46 once escaped
    ],
)
def test_webvtt_wraps_the_text_and_escapes_after(text: str) -> None:
    cue = Cue(0, 0, 0, 2000, text)
    block = WebVttWriter().cue(cue)
    assert block.splitlines()[2:-1] == [html.escape(text, quote=False)]  # one line: the text fits in 42
    segmenter = HlsSegmenter(2000)
    segmenter.add(cue)
    (segment,) = segmenter.finish()
    (parsed,) = webvtt.from_string(segment.text, strict=True)
    assert html.unescape(parsed.text) == text


def run_hls(
    finals: list[Caption], segment_ms: int, *, late_ms: int | None = None, poll_ms: int = 250
) -> tuple[CaptionWriter, list[Segment]]:
    """Feed captions in arrival order, polling every ``poll_ms`` of the arrival clock in between (as
    ``livecanvas captions`` does), then finish; the writer and every segment."""
    late = {} if late_ms is None else {"hls_late_ms": late_ms}
    writer = CaptionWriter("vtt", hls_segment_ms=segment_ms, **late)
    segments: list[Segment] = []
    now = finals[0].arrival_ms
    for caption in finals:
        while now + poll_ms < caption.arrival_ms:
            now += poll_ms
            segments += writer.poll(now).segments
        now = caption.arrival_ms
        segments += writer.add(caption).segments
    return writer, segments + writer.finish().segments


def vtt_ms(stamp: str) -> int:
    hours, minutes, seconds = stamp.split(":")
    whole, millis = seconds.split(".")
    return ((int(hours) * 60 + int(minutes)) * 60 + int(whole)) * 1000 + int(millis)


def segment_cues(segments: list[Segment]) -> dict[int, list[tuple[str, int, int, str]]]:
    """What webvtt-py reads in each segment: (identifier, start ms, end ms, text) by sequence."""
    read: dict[int, list[tuple[str, int, int, str]]] = {}
    for segment in segments:
        parsed = webvtt.from_string(segment.text, strict=True)
        read[segment.sequence] = [
            (c.identifier or "", vtt_ms(c.start), vtt_ms(c.end), html.unescape(c.text).replace("\n", " "))
            for c in parsed
        ]  # fmt: skip
    return read


def assert_every_cue_in_every_segment_it_overlaps(cues: list[Cue], segments: list[Segment]) -> None:
    read = segment_cues(segments)
    assert sorted(read) == list(range(min(read), max(read) + 1)), "segments are contiguous"
    for segment in segments:
        want = [
            (f"window-{c.window}", c.start_ms, c.end_ms, c.text)
            for c in cues
            if c.start_ms < segment.end_ms and c.end_ms > segment.start_ms
        ]
        assert read[segment.sequence] == want, f"segment {segment.sequence}"
    last = max(c.end_ms for c in cues)
    assert segments[-1].end_ms >= last > segments[-1].start_ms
    assert segments[0].start_ms <= min(c.start_ms for c in cues)


def test_hls_a_final_later_than_the_one_before_keeps_every_segment_it_overlaps() -> None:
    # the reproduction: "Item N is done." is final at once, "short line N" (no full stop) only
    # after a 4 s idle timeout; one every 5 s, 6 s segments
    finals = []
    for n in range(8):
        t0 = 5000 * n + 885
        text, lag = (f"Item {n} is done.", 100) if n % 2 == 0 else (f"short line {n}", 4100)
        finals.append(Caption(text, n, t0, t0, arrival_ms=70_000 + t0 + lag))
    writer, segments = run_hls(finals, 6000)
    assert [c.start_ms for c in writer.cues] == [5000 * n + 885 for n in range(8)]  # none is shifted
    assert_every_cue_in_every_segment_it_overlaps(writer.cues, segments)


def test_hls_a_final_later_than_the_bound_starts_late_in_an_open_segment() -> None:
    finals = [
        Caption("On time.", 0, 1000, 1000, arrival_ms=1100),
        Caption("Very late.", 1, 2500, 2500, arrival_ms=8500),  # 5.9 s later than the first; bound 2 s
        Caption("On time again.", 2, 9000, 9000, arrival_ms=9100),
    ]
    writer, segments = run_hls(finals, 1000, late_ms=2000)
    assert [c.text for c in writer.cues] == ["On time.", "Very late.", "On time again."]
    late = writer.cues[1]
    assert 2500 < late.start_ms <= 2500 + (5900 - 2000)  # later by at most its lateness past the bound
    assert_every_cue_in_every_segment_it_overlaps(writer.cues, segments)
