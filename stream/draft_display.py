"""What viewers see of a translation track's drafts: when an open window is translated, and the display
rule that turns the engine's drafts into the text shown (sans I/O; the hub applies it).

A window still open (speech's caption draft, a publisher's ``partial`` line) is translated once its
text has ``min_source_words`` words: shorter sources are mostly a sentence's first word or two, whose
translation changes with the next word. Each draft the engine sends for a translation track goes
through :func:`shown`:

* *cleaned*: a word that repeats the word before it (compared without case or punctuation) is
  dropped, so a viewer never sees "resfriamento resfriamento";
* *agreed*: with ``agreement``, only the words it shares, from its start, with the window's previous
  engine draft are shown (LocalAgreement-2, Liu et al. 2020, as SimulStreaming confirms words): a
  word both translations of consecutive source texts start with is seldom taken back (a window
  translated only once closed, with no draft of it before, has one source: its drafts show as they
  come);
* *held back*: its last ``hold_back_words`` words (after agreement) are not shown (mask-k, Ma et al.
  2019): the translation of a source's last words is what the next words most often change;
* *biased toward the previous draft*: a draft that would only take words back (its shown words are a
  prefix of what is on screen) is not sent, and nor is one that shows nothing new.

``hold_back_words`` is the one setting for the latency/flicker trade (``--draft-hold-back``): each
word held back costs about a quarter of a second and saves the erasures of the words that change.
The defaults, agreement on and nothing held back, were chosen on the dev speech (LibriVox + Piper,
``bench.translation_latency --sweep``): agreement took normalized erasure from 2.1 to 0.09 for 0.5 s
of latency, where holding back 3 words without it still erased 0.8 (bench/README.md, *Translating
open windows*). Finals are never touched.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal, get_args

OpenWindows = Literal["edit", "restart", "off"]
"""How windows still open are translated (``--open-windows``): ``edit`` edits one canvas per window in
place as its text grows (the default), ``restart`` translates each newer text from a blank canvas
(the baseline the benchmark compares with), ``off`` translates a window once it has closed only."""
OPEN_WINDOWS: tuple[OpenWindows, ...] = get_args(OpenWindows)


@dataclass(frozen=True, slots=True)
class DraftDisplay:
    """See the module docstring. ``translate_open`` False: windows are translated once closed only."""

    translate_open: bool = True
    min_source_words: int = 3
    hold_back_words: int = 0
    agreement: bool = True

    def __post_init__(self) -> None:
        if self.min_source_words < 1:
            raise ValueError(f"min_source_words must be at least 1, got {self.min_source_words}")
        if self.hold_back_words < 0:
            raise ValueError(f"hold_back_words must be >= 0, got {self.hold_back_words}")

    def translates(self, source: str) -> bool:
        """Whether an open window with this text is translated now."""
        return self.translate_open and len(source.split()) >= self.min_source_words


def clean(text: str) -> str:
    """The text with every word that repeats its left neighbour dropped."""
    kept: list[str] = []
    for word in text.split():
        if kept and _bare(word) and _bare(word) == _bare(kept[-1]):
            continue
        kept.append(word)
    return " ".join(kept)


def shown(
    display: DraftDisplay,
    on_screen: str | None,
    text: str,
    previous: str | None = None,
    *,
    source_closed: bool = False,
) -> str | None:
    """The text to show for a new engine draft ``text`` of a window while ``on_screen`` (None: nothing
    yet) is shown and ``previous`` was the window's engine draft before it (None: none), or None when
    nothing should be sent (module docstring). ``source_closed``: the window has closed; its first
    engine draft then needs no agreement (a window translated only once closed drafts its one source)."""
    words = clean(text).split()
    if display.agreement and not (source_closed and previous is None):
        before = clean(previous).split() if previous is not None else []
        agreed = 0
        while agreed < min(len(words), len(before)) and words[agreed] == before[agreed]:
            agreed += 1
        words = words[:agreed]
    kept = words[: max(0, len(words) - display.hold_back_words)]
    if not kept:
        return None
    if on_screen is not None and on_screen.split()[: len(kept)] == kept:
        return None  # nothing new; sending it would only take words back
    return " ".join(kept)


def _bare(word: str) -> str:
    """The word without the punctuation around it, case folded."""
    start, end = 0, len(word)
    while start < end and unicodedata.category(word[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(word[end - 1]).startswith("P"):
        end -= 1
    return word[start:end].casefold()
