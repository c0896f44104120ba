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
from stream.captions.webvtt import HlsSegmenter, WebVttWriter, vtt_time

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
    assert timer.settled_until(12_000) == 2000


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
    assert all(len(line) <= 42 for c in parsed for line in c.raw_text.splitlines())
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
    writer = CaptionWriter("vtt", hls_segment_ms=2000)
    assert writer.start() == ""
    out = Output()
    out.extend(writer.add(Caption("One.", 0, 0, 0, arrival_ms=1000)))
    out.extend(writer.poll(2500))  # "One." settles (default minimum 1.2 s); stream time is 1.5 s
    assert [c.text for c in writer.cues] == ["One."]
    assert out.segments == []
    out.extend(writer.poll(4000))  # stream time 3 s: segment 0 (0-2 s) is closed
    assert [s.sequence for s in out.segments] == [0]
    assert re.search(r"00:00:00.000 --> 00:00:01.200\nOne\.", out.segments[0].text)


def test_caption_writer_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="format"):
        CaptionWriter("ttml")
    with pytest.raises(ValueError, match="WebVTT"):
        CaptionWriter("srt", hls_segment_ms=6000)
    with pytest.raises(ValueError, match="rows"):
        CaptionWriter("scc", mode="roll-up", rows=1)
