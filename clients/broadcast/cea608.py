"""CEA-608 captions (sans-I/O): the 608 character set and the screen layout (roll-up 2/3/4, pop-on).

Character set. A 608 decoder shows 32 columns of: the basic set (ASCII 0x20-0x7F, except that
0x2A, 0x5C, 0x5E-0x60 and 0x7B-0x7F show ``á é í ó ú ç ÷ Ñ ñ █``), the special North American set
(``® ° ½ ¿ ™ ¢ £ ♪ à è â ê î ô û``) and the extended Western European sets (Spanish, French,
Portuguese, German, Danish letters, curly quotes, ``— © • « »``, and the ASCII characters the basic
set lost: ``* \\ ^ _ { } | ~``). ``to_608`` maps text onto it:

1. a character in the set is kept (``*`` and friends are sent as extended characters);
2. a few typographic characters are replaced: en dash, hyphen and minus sign → ``-``, ``…`` →
   ``...``, low quotation marks → ``"`` and ``,``, single angle quotation marks → ``<`` ``>``, the
   multiplication sign → ``x``, the middle dot → ``.``, ligatures are spelled out (``œ æ`` →
   ``oe ae``), ``€`` → ``EUR``, ``ł đ ð þ`` → ``l d d th``, any Unicode space → space;
3. otherwise the character is decomposed (NFKD) and its accents dropped if the base letter is in the
   set (``ő ą ş ř`` → ``o a s r``; ``ﬁ`` → ``fi``);
4. anything else (Greek, Cyrillic, CJK, emoji, control characters) is dropped: 608 has no way to show
   it. ``dropped_characters`` tells which.

Layout. ``Cea608Layout`` wraps each cue's text at word boundaries into rows of at most 32 columns and
turns cues into ``Screen`` events, with times from the cue's window times (``stream.captions.cues``):

* roll-up with 2, 3 or 4 rows: the cue's rows appear one by one, spread evenly over the cue, each
  rolling the window up by one row (the base row is row 15, column 0); the captions are cleared
  when nothing follows for ``clear_gap_ms`` and at the end;
* pop-on with 1 to 4 rows: each cue is built off screen and shown whole at its start (a cue with
  more rows than fit becomes several captions spread over the cue), centred, bottom row 15; it is
  cleared at its end, unless the next caption comes within ``pop_on_gap_ms`` (1.5 s) and replaces
  it (clearing first would leave too little time to load the next one).

``render`` prints the screens as text; stream/``scc.py`` turns them into 608 byte pairs.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from stream.captions.cues import Cue, wrap

COLUMNS: Final = 32
BASE_ROW: Final = 15

# basic characters whose 608 glyph differs from ASCII: byte -> what the decoder shows
_BASIC_OVERRIDES: Final = {
    0x2A: "á", 0x5C: "é", 0x5E: "í", 0x5F: "ó", 0x60: "ú",
    0x7B: "ç", 0x7C: "÷", 0x7D: "Ñ", 0x7E: "ñ", 0x7F: "█",
}  # fmt: skip
BASIC: Final[dict[str, int]] = {_BASIC_OVERRIDES.get(byte, chr(byte)): byte for byte in range(0x20, 0x80)}
# two-byte characters (channel 1, no parity): (first byte, second byte)
SPECIAL: Final[dict[str, tuple[int, int]]] = {
    char: (0x11, 0x30 + i) for i, char in enumerate("®°½¿™¢£♪à\0èâêîôû") if char != "\0"
}  # 0x39 is the transparent space, never sent
_LSQ, _RSQ = "\N{LEFT SINGLE QUOTATION MARK}", "\N{RIGHT SINGLE QUOTATION MARK}"
EXTENDED: Final[dict[str, tuple[int, int]]] = {
    **{char: (0x12, 0x20 + i) for i, char in enumerate(f"ÁÉÓÚÜü{_LSQ}¡*{_RSQ}—©℠•“”ÀÂÇÈÊËëÎÏïÔÙùÛ«»")},
    **{char: (0x13, 0x20 + i) for i, char in enumerate("ÃãÍÌìÒòÕõ{}\\^_|~ÄäÖöß¥¤│ÅåØø┌┐└┘")},
}
_SUBSTITUTES: Final = {
    "\N{EN DASH}": "-",
    "\N{HYPHEN}": "-",
    "\N{NON-BREAKING HYPHEN}": "-",
    "\N{MINUS SIGN}": "-",
    "\N{HORIZONTAL BAR}": "—",
    "…": "...",
    "„": '"',
    "\N{SINGLE LOW-9 QUOTATION MARK}": ",",
    "\N{SINGLE LEFT-POINTING ANGLE QUOTATION MARK}": "<",
    "\N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}": ">",
    "\N{MULTIPLICATION SIGN}": "x",
    "\N{MIDDLE DOT}": ".",
    "\N{PRIME}": "'",
    "\N{DOUBLE PRIME}": '"',
    "`": _LSQ,
    "\N{LATIN SMALL LETTER DOTLESS I}": "i",
    "\N{BROKEN BAR}": "|",
    "œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "€": "EUR", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D",
    "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "\t": " ",
}  # fmt: skip
_FALLBACKS: Final = {_LSQ: "'", _RSQ: "'", "“": '"', "”": '"', "¡": "!", "—": "-", "«": '"', "»": '"'}


def _fallback(char: str) -> int:
    """The basic character sent before an extended one, for decoders without the extended sets."""
    base = unicodedata.normalize("NFKD", char)[0]
    if base in BASIC:
        return BASIC[base]
    return BASIC[_FALLBACKS.get(char, " ")]


def _to_608_char(char: str) -> str:
    if char in BASIC or char in SPECIAL or char in EXTENDED:
        return char
    if char in _SUBSTITUTES:
        return "".join(_to_608_char(c) for c in _SUBSTITUTES[char])
    if unicodedata.category(char) == "Zs":
        return " "
    decomposed = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    if (
        decomposed
        and decomposed != char
        and all(c in BASIC or c in SPECIAL or c in EXTENDED for c in decomposed)
    ):
        return decomposed
    return ""


def to_608(text: str) -> str:
    """``text`` in the characters a 608 decoder can show (see the module docstring), spaces collapsed."""
    return " ".join("".join(_to_608_char(char) for char in text).split())


def dropped_characters(text: str) -> set[str]:
    return {char for char in text if not char.isspace() and not _to_608_char(char)}


def char_codes(char: str) -> tuple[int, ...]:
    """The bytes (channel 1, without parity) that put ``char`` on screen: one basic byte, or a special
    pair, or a fallback byte followed by an extended pair (the decoder overwrites the fallback)."""
    if char in BASIC:
        return (BASIC[char],)
    if char in SPECIAL:
        return SPECIAL[char]
    if char in EXTENDED:
        return (_fallback(char), *EXTENDED[char])
    raise ValueError(f"{char!r} is not a 608 character; map text with to_608() first")


class Mode(StrEnum):
    ROLL_UP = "roll-up"
    POP_ON = "pop-on"


@dataclass(frozen=True, slots=True)
class Screen:
    """One change of the display at ``t_ms``: ``rows`` is what shows afterwards (bottom row last);
    ``added`` the rows this event sends (roll-up: the new bottom row; pop-on: the whole caption)."""

    t_ms: int
    kind: Literal["roll-up", "pop-on", "clear"]
    rows: tuple[str, ...]
    added: tuple[str, ...]


class Cea608Layout:
    """See the module docstring: ``add(cue)`` and ``finish()`` return the screens now settled."""

    def __init__(
        self,
        mode: Mode | str = Mode.ROLL_UP,
        rows: int = 2,
        *,
        columns: int = COLUMNS,
        clear_gap_ms: int = 4000,
        pop_on_gap_ms: int = 1500,
    ) -> None:
        self.mode = Mode(mode)
        allowed = (2, 3, 4) if self.mode is Mode.ROLL_UP else (1, 2, 3, 4)
        if rows not in allowed:
            raise ValueError(f"{self.mode} captions take {allowed} rows, not {rows}")
        if not 1 <= columns <= COLUMNS:
            raise ValueError(f"columns must be 1..{COLUMNS}, got {columns}")
        self.rows = rows
        self.columns = columns
        self.clear_gap_ms = clear_gap_ms
        self.pop_on_gap_ms = pop_on_gap_ms
        self._shown: tuple[str, ...] = ()
        self._last_end: int | None = None
        self._last_t = 0

    def add(self, cue: Cue) -> list[Screen]:
        lines = wrap(to_608(cue.text), self.columns)
        if not lines:
            return []
        screens: list[Screen] = []
        if self._last_end is not None and self._shown:
            gap = self.clear_gap_ms if self.mode is Mode.ROLL_UP else self.pop_on_gap_ms
            if cue.start_ms - self._last_end >= gap:
                screens.append(self._clear(self._last_end))
        groups = [lines[i : i + 1] for i in range(len(lines))]
        if self.mode is Mode.POP_ON:
            groups = [lines[i : i + self.rows] for i in range(0, len(lines), self.rows)]
        duration = cue.end_ms - cue.start_ms
        for position, group in enumerate(groups):
            t_ms = max(self._last_t, cue.start_ms + duration * position // len(groups))
            if self.mode is Mode.ROLL_UP:
                self._shown = (*self._shown, *group)[-self.rows :]
                screens.append(Screen(t_ms, "roll-up", self._shown, tuple(group)))
            else:
                self._shown = tuple(group)
                screens.append(Screen(t_ms, "pop-on", self._shown, tuple(group)))
            self._last_t = t_ms
        self._last_end = cue.end_ms
        return screens

    def finish(self) -> list[Screen]:
        if self._last_end is None or not self._shown:
            return []
        return [self._clear(self._last_end)]

    def _clear(self, t_ms: int) -> Screen:
        self._shown = ()
        self._last_t = max(self._last_t, t_ms)
        return Screen(self._last_t, "clear", (), ())


def render(screen: Screen, *, columns: int = COLUMNS) -> str:
    """A screen as text: its time, its kind, and each row between bars, padded to the 608 width."""
    hours, rest = divmod(screen.t_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    head = f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d} {screen.kind}"
    return "\n".join([head, *(f"  |{row.ljust(columns)}|" for row in screen.rows)]) + "\n\n"
