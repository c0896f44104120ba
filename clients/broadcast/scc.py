"""Scenarist SCC output (sans-I/O): CEA-608 screens as byte pairs with odd parity, on 29.97 fps time.

An ``.scc`` file is ``Scenarist_SCC V1.0``, then one line per burst of codes:
``HH:MM:SS;FF<TAB>9420 9420 94ae ...``, each 4-hex-digit word one pair of bytes, each pair one frame
at 29.97 fps (drop-frame timecode, ``;``). Bytes carry odd parity in bit 7. Everything goes on
caption channel 1 (CC1, field 1). Control codes, special and extended characters are sent twice (the
usual redundancy: decoders skip an identical repeat), and start on a word boundary (a half-filled
word is padded with a null, ``80``).

Per ``Screen`` (clients/broadcast/cea608.py):

* roll-up: ``RU2|RU3|RU4`` (so a decoder that joins late knows the mode), ``CR`` (roll the rows up),
  a preamble address code for row 15, column 0, then the new row's characters; the burst starts at
  the row's time;
* pop-on: ``RCL`` (load mode), ``ENM`` (erase what is being built), per row a preamble address code
  (rows ending at 15, centred with an indent and a tab offset), the row's characters, then ``EOC``
  (flip it onto the screen); the burst is timed so that ``EOC`` falls on the caption's start;
* clear: ``EDM`` (erase what is displayed).

Scheduling (docs/broadcast.md, *When text comes faster than 608 carries it*): nothing is dropped or
reordered and bursts never overlap. A burst is due when its on-air word (pop-on: ``EOC``, otherwise
its first) falls on the screen's time, and starts at ``max(due - words before that, end of the
previous burst)``: a caption is late only by what the bursts ahead of it still need to send. A clear
is due at its time plus the delay of the caption it clears, so a late caption keeps its time on air.
"""

from __future__ import annotations

from typing import Final

from clients.broadcast.cea608 import BASE_ROW, COLUMNS, EXTENDED, SPECIAL, Mode, Screen, char_codes

HEADER: Final = "Scenarist_SCC V1.0\n\n"
FRAMES_PER_TEN_MINUTES: Final = 17982  # 29.97 drop-frame: 2 frame numbers skipped each minute but every 10th
FRAMES_PER_MINUTE: Final = 1798

# channel 1 control codes (first byte 0x14), before parity
RCL, EDM, CR, ENM, EOC = (0x14, 0x20), (0x14, 0x2C), (0x14, 0x2D), (0x14, 0x2E), (0x14, 0x2F)
ROLL_UP: Final = {2: (0x14, 0x25), 3: (0x14, 0x26), 4: (0x14, 0x27)}
TAB_OFFSET: Final = {1: (0x17, 0x21), 2: (0x17, 0x22), 3: (0x17, 0x23)}
# preamble address codes, white, indent 0: row -> (first byte, second byte)
PAC_ROWS: Final = {
    1: (0x11, 0x50), 2: (0x11, 0x70), 3: (0x12, 0x50), 4: (0x12, 0x70), 5: (0x15, 0x50),
    6: (0x15, 0x70), 7: (0x16, 0x50), 8: (0x16, 0x70), 9: (0x17, 0x50), 10: (0x17, 0x70),
    11: (0x10, 0x50), 12: (0x13, 0x50), 13: (0x13, 0x70), 14: (0x14, 0x50), 15: (0x14, 0x70),
}  # fmt: skip
NULL: Final = 0x00


def odd_parity(byte: int) -> int:
    """The 7-bit ``byte`` with bit 7 set when needed to make the number of one bits odd."""
    if not 0 <= byte < 0x80:
        raise ValueError(f"608 bytes are 7-bit, got {byte:#x}")
    return byte if bin(byte).count("1") % 2 else byte | 0x80


def word(first: int, second: int) -> str:
    return f"{odd_parity(first):02x}{odd_parity(second):02x}"


def ms_to_frames(ms: int) -> int:
    return (ms * 30 + 500) // 1001  # 30000/1001 frames a second, rounded


def frames_to_ms(frames: int) -> int:
    return (frames * 1001 + 15) // 30


def timecode(frames: int) -> str:
    """Drop-frame SMPTE timecode (``HH:MM:SS;FF``) of a 29.97 fps frame count."""
    tens, rest = divmod(frames, FRAMES_PER_TEN_MINUTES)
    skipped = 18 * tens + (2 * ((rest - 2) // FRAMES_PER_MINUTE) if rest > 1 else 0)
    number = frames + skipped
    hours, rest = divmod(number, 108_000)
    minutes, rest = divmod(rest, 1800)
    seconds, frame = divmod(rest, 30)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d};{frame:02d}"


def pac(row: int, indent: int = 0) -> list[tuple[int, int]]:
    """Preamble address code for ``row`` (1-15) at column ``indent`` (a multiple of 4 plus a tab offset)."""
    first, second = PAC_ROWS[row]
    codes = [(first, second + (indent // 4) * 2)]
    if indent % 4:
        codes.append(TAB_OFFSET[indent % 4])
    return codes


class _Burst:
    """Words of one SCC line: controls doubled and word-aligned, characters packed two to a word."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self._half: int | None = None  # a character byte waiting for its partner

    def control(self, code: tuple[int, int], *, double: bool = True) -> None:
        self._pad()
        self.words += [word(*code)] * (2 if double else 1)

    def text(self, row: str) -> None:
        for char in row:
            codes = char_codes(char)
            if char in SPECIAL:
                self.control((codes[0], codes[1]))
            elif char in EXTENDED:
                self._byte(codes[0])  # the fallback, overwritten by the extended character
                self.control((codes[1], codes[2]))
            else:
                self._byte(codes[0])
        self._pad()

    def _byte(self, byte: int) -> None:
        if self._half is None:
            self._half = byte
        else:
            self.words.append(word(self._half, byte))
            self._half = None

    def _pad(self) -> None:
        if self._half is not None:
            self.words.append(word(self._half, NULL))
            self._half = None


class SccWriter:
    """``header()`` once, then ``screen()`` for each ``Screen`` in order: text to append to a ``.scc``."""

    def __init__(self, mode: Mode | str = Mode.ROLL_UP, rows: int = 2) -> None:
        self.mode = Mode(mode)
        self.rows = rows
        self._free_frame = 0  # first frame after the last burst
        self._delay = 0  # frames the caption now on screen went on air after its time

    def header(self) -> str:
        return HEADER

    def screen(self, screen: Screen) -> str:
        burst = _Burst()
        lead = 0  # words sent before the one that must fall on the screen's time
        if screen.kind == "clear":
            burst.control(EDM)
        elif screen.kind == "roll-up":
            burst.control(ROLL_UP[self.rows])
            burst.control(CR)
            for code in pac(BASE_ROW):
                burst.control(code)
            for row in screen.added:
                burst.text(row)
        else:
            burst.control(RCL)
            burst.control(ENM)
            first_row = BASE_ROW - len(screen.added) + 1
            for offset, row in enumerate(screen.added):
                for code in pac(first_row + offset, (COLUMNS - len(row)) // 2):
                    burst.control(code)
                burst.text(row)
            lead = len(burst.words)
            burst.control(EOC)
        due = ms_to_frames(screen.t_ms) + (self._delay if screen.kind == "clear" else 0)
        start = max(self._free_frame, due - lead)
        if screen.kind != "clear":
            self._delay = start + lead - due
        self._free_frame = start + len(burst.words)
        return f"{timecode(start)}\t{' '.join(burst.words)}\n\n"
