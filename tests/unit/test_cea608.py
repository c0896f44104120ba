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
from clients.broadcast.scc import SccWriter, frames_to_ms, ms_to_frames, odd_parity, timecode, word
from stream.captions.cues import Cue

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
