"""CEA-608: the character mapping, roll-up and pop-on layout, and SCC byte pairs read back by pycaption."""

from __future__ import annotations

import re

import pytest
from pycaption import SCCReader

from clients.broadcast.cea608 import (
    BASIC,
    EXTENDED,
    SPECIAL,
    Cea608Layout,
    Screen,
    char_codes,
    dropped_characters,
    render,
    to_608,
)
from clients.broadcast.formats import CaptionWriter
from clients.broadcast.scc import SccWriter, frames_to_ms, ms_to_frames, odd_parity, timecode, word
from stream.captions.cues import Caption, Cue

TEXTS = [
    "Good evening, and welcome to the live broadcast from the city centre tonight.",
    "Ação em São Paulo: já são 25 °C — «ótimo» para todos!",
    "Ça va? Überall schön: 50 % * {x} ~ ¿qué? ♪",
    "The end.",
]


def cues() -> list[Cue]:
    starts = [3000, 8000, 14000, 32000]
    return [
        Cue(i, i, start, start + 4000, text)
        for i, (start, text) in enumerate(zip(starts, TEXTS, strict=True))
    ]


def test_the_character_set_tables() -> None:
    assert len(BASIC) == 96
    assert len(SPECIAL) == 15  # 16 codes, the transparent space is never sent
    assert len(EXTENDED) == 64
    assert BASIC["á"] == 0x2A
    assert BASIC["ñ"] == 0x7E
    assert "*" not in BASIC  # 0x2A shows á: an asterisk goes as an extended character
    assert char_codes("*") == (0x20, 0x12, 0x28)
    assert char_codes("♪") == (0x11, 0x37)
    assert char_codes("ü") == (0x75, 0x12, 0x25)  # fallback 'u', then the extended ü overwrites it
    with pytest.raises(ValueError, match="608"):
        char_codes("Ж")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Olá, “mundo” — ¿sí?", "Olá, “mundo” — ¿sí?"),
        ("en\N{EN DASH}dash … ﬁne", "en-dash ... fine"),
        ("Łódź, Kraków, Gdańsk", "Lódz, Kraków, Gdansk"),
        ("œuvre \N{MULTIPLICATION SIGN} 3 € · ok", "oeuvre x 3 EUR . ok"),
        ("tab\there  and\u00a0nbsp", "tab here and nbsp"),
        ("Привет world 東京 😀", "world"),
        ("back`tick", "back‘tick"),  # noqa: RUF001 - the 608 set has the left single quotation mark
    ],
)
def test_text_is_mapped_onto_the_608_set(text: str, shown: str) -> None:
    assert to_608(text) == shown
    assert all(char in BASIC or char in SPECIAL or char in EXTENDED for char in to_608(text))


def test_dropped_characters_are_reported() -> None:
    assert dropped_characters("Привет 東京 ok") == set("Привет東京")
    assert dropped_characters("Olá ¿sí?") == set()


def test_roll_up_rows_spread_over_the_cue_and_roll() -> None:
    layout = Cea608Layout("roll-up", 3)
    screens = [s for cue in cues() for s in layout.add(cue)] + layout.finish()
    for screen in screens:
        assert len(screen.rows) <= 3
        assert all(len(row) <= 32 for row in screen.rows)
    first = [s for s in screens if s.t_ms < 8000]
    assert [s.added for s in first] == [
        ("Good evening, and welcome to the",),
        ("live broadcast from the city",),
        ("centre tonight.",),
    ]
    assert [s.t_ms for s in first] == [3000, 4333, 5666]
    assert first[-1].rows == (
        "Good evening, and welcome to the",
        "live broadcast from the city",
        "centre tonight.",
    )
    kinds = [s.kind for s in screens]
    assert kinds.count("clear") == 2  # the 14 s gap before "The end." and the end
    assert screens[-1] == Screen(36000, "clear", (), ())


def test_pop_on_shows_whole_captions_and_splits_long_ones() -> None:
    layout = Cea608Layout("pop-on", 2)
    screens = [s for cue in cues() for s in layout.add(cue)] + layout.finish()
    pops = [s for s in screens if s.kind == "pop-on"]
    assert pops[0].rows == ("Good evening, and welcome to the", "live broadcast from the city")
    assert pops[1].rows == ("centre tonight.",)
    assert pops[1].t_ms == 5000  # the second half of a 3-row cue, half way through it
    assert all(len(s.rows) <= 2 for s in pops)
    # a clear after a cue only when the next one does not follow within 1.5 s
    assert [s.t_ms for s in screens if s.kind == "clear"] == [12000, 18000, 36000]  # not at 7 s


def test_render_shows_the_32_column_screen() -> None:
    text = render(Screen(61_001, "roll-up", ("Hello", "world"), ("world",)))
    assert text == "00:01:01.001 roll-up\n  |Hello" + " " * 27 + "|\n  |world" + " " * 27 + "|\n\n"


def test_parity_words_and_timecodes() -> None:
    assert [odd_parity(b) for b in (0x14, 0x20, 0x2C, 0x2F, 0x70, 0x61)] == [
        0x94,
        0x20,
        0x2C,
        0x2F,
        0x70,
        0x61,
    ]
    assert word(0x14, 0x2D) == "94ad"  # carriage return
    for byte in range(0x80):
        assert bin(odd_parity(byte)).count("1") % 2 == 1
    assert timecode(0) == "00:00:00;00"
    assert timecode(1799) == "00:00:59;29"
    assert timecode(1800) == "00:01:00;02"  # frames 00 and 01 are skipped at every minute ...
    assert timecode(17982) == "00:10:00;00"  # ... except every tenth
    assert timecode(ms_to_frames(3_600_000)) == "01:00:00;00"
    assert abs(frames_to_ms(ms_to_frames(12_345)) - 12_345) <= 17


def scc_file(mode: str, rows: int) -> str:
    layout, writer = Cea608Layout(mode, rows), SccWriter(mode, rows)
    text = writer.header()
    for screen in [s for cue in cues() for s in layout.add(cue)] + layout.finish():
        text += writer.screen(screen)
    return text


def test_scc_file_shape() -> None:
    text = scc_file("roll-up", 2)
    lines = text.split("\n\n")
    assert lines[0] == "Scenarist_SCC V1.0"
    timecodes = []
    for line in filter(None, lines[1:]):
        match = re.fullmatch(r"(\d\d:\d\d:\d\d;\d\d)\t([0-9a-f]{4}( [0-9a-f]{4})*)\n?", line)
        assert match, line
        timecodes.append(match.group(1))
        for pair in match.group(2).split():
            for byte in bytes.fromhex(pair):
                assert bin(byte).count("1") % 2 == 1, f"{pair} lacks odd parity"
    assert timecodes == sorted(timecodes)
    assert lines[1].startswith("00:00:03;00\t9425 9425 94ad 94ad 9470 9470 c7ef ef64")  # RU2 CR PAC "Good"


@pytest.mark.parametrize(("mode", "rows"), [("roll-up", 2), ("roll-up", 4), ("pop-on", 2), ("pop-on", 3)])
def test_pycaption_reads_back_our_text_and_times(mode: str, rows: int) -> None:
    captions = SCCReader().read(scc_file(mode, rows))
    read = captions.get_captions(captions.get_languages()[0])
    text = " ".join(" ".join(c.get_text().replace("\xa0", " ").split()) for c in read)
    assert text == " ".join(to_608(t) for t in TEXTS)
    expected = [s.t_ms for cue in cues() for s in Cea608Layout(mode, rows).add(cue) if s.kind != "clear"]
    starts = [c.start / 1000 for c in read]  # pycaption: microseconds
    assert len(starts) == len([t for t in expected if t is not None])
    for got, want in zip(starts, expected, strict=True):
        # drop-frame timecode runs up to 2 frames behind real time within a minute; pop-on may be late
        assert want - 70 <= got <= want + 150, (got, want)


def frames_of(stamp: str) -> int:
    """The frame count of a drop-frame timecode (the inverse of ``timecode``)."""
    hours, minutes, rest = stamp.split(":")
    seconds, frame = rest.split(";")
    total_minutes = int(hours) * 60 + int(minutes)
    number = total_minutes * 1800 + int(seconds) * 30 + int(frame)
    return number - 2 * (total_minutes - total_minutes // 10)


def bursts_of(scc: str) -> list[tuple[int, list[str]]]:
    """Each SCC line as (first frame, its words)."""
    lines = [line for line in scc.split("\n\n")[1:] if line.strip()]
    return [(frames_of(stamp), words.split()) for stamp, words in (line.split("\t") for line in lines)]


def documented_schedule(screens: list[Screen], bursts: list[tuple[int, list[str]]]) -> list[int]:
    """docs/broadcast.md's rule, from the screens and each burst's length: a burst's on-air word (pop-on:
    the first EOC, otherwise its first word) is due at its screen's frame, a clear's delayed by as
    much as the caption it clears was; a burst starts when due or when the one before it ends,
    whichever is later. The first frame of every burst."""
    starts: list[int] = []
    free, delay = 0, 0
    for screen, (_, words) in zip(screens, bursts, strict=True):
        lead = words.index("942f") if screen.kind == "pop-on" else 0
        due = ms_to_frames(screen.t_ms) + (delay if screen.kind == "clear" else 0)
        start = max(free, due - lead)
        if screen.kind != "clear":
            delay = start + lead - due
        starts.append(start)
        free = start + len(words)
    return starts


def fast_finals(count: int = 8) -> list[Caption]:
    """Finals 1 s apart of about 55 characters each: faster than 608 carries them."""
    texts = [
        "Window {} brings the news of the day to everyone here.",
        "And {} more words keep on coming in fast.",
    ]
    return [Caption(texts[n % 2].format(n), n, 1000 * n, 1000 * n + 900) for n in range(count)]


@pytest.mark.parametrize(("mode", "rows"), [("pop-on", 2), ("roll-up", 2), ("roll-up", 3)])
def test_scc_behind_in_a_burst_keeps_every_caption_on_air_as_long_as_its_cue(mode: str, rows: int) -> None:
    writer = CaptionWriter("scc", mode=mode, rows=rows)
    layout = Cea608Layout(mode, rows)
    text = writer.start()
    for caption in fast_finals():
        text += writer.add(caption).text
    text += writer.finish().text
    screens = [s for cue in writer.cues for s in layout.add(cue)] + layout.finish()
    bursts = bursts_of(text)
    assert [start for start, _ in bursts] == documented_schedule(screens, bursts)
    captions = SCCReader().read(text)
    read = captions.get_captions(captions.get_languages()[0])
    assert " ".join(" ".join(c.get_text().replace("\xa0", " ").split()) for c in read) == " ".join(
        to_608(c.text) for c in writer.cues
    )  # nothing dropped
    shown = [s for s in screens if s.kind != "clear"]
    on_air = [
        start + (words.index("942f") if screen.kind == "pop-on" else 0)
        for screen, (start, words) in zip(screens, bursts, strict=True)
        if screen.kind != "clear"
    ]
    assert len(read) == len(shown)
    for caption, screen, frame in zip(read, shown, on_air, strict=True):
        assert frame >= ms_to_frames(screen.t_ms)  # never early ...
        # ... and where pycaption reads it: within a frame's rounding and drop-frame's 2 frames
        assert abs(caption.start / 1000 - frames_to_ms(frame)) <= frames_to_ms(3), (caption, screen)
    last_due, clear_due = shown[-1].t_ms, screens[-1].t_ms
    late_ms = read[-1].start / 1000 - last_due
    assert late_ms > 1000, "the burst is faster than the channel: the last caption goes on air late"
    # ... and stays on screen as long as it should have (within a frame and drop-frame's 2)
    assert abs((read[-1].end - read[-1].start) / 1000 - (clear_due - last_due)) <= 3 * 34
