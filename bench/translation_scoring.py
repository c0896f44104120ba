"""Scoring one translation track as a viewer saw it: when each translated word was on screen in the
text it keeps, how much the drafts flickered, and how readable they were.

**Per-word latency.** A track's ``final`` for window *w* carries the window's audio span
``t0_ms``..``t1_ms``; its word *j* of *k* is placed proportionally along that span (it is "spoken"
when the source has reached ``t0 + (t1 - t0) * (j + 1) / k``, the same estimate the caption scoring
uses, :mod:`bench.caption_scoring`). It is *shown for good* when the first draft of window *w* that
arrived before the final starts with the final's words up to and including *j* (normalised,
``tests.speech.normalize``); a word no draft showed that way counts at its final. Latency = shown -
spoken, on the client's clock.

**Normalized erasure** (NE; Arivazhagan et al. 2020, https://aclanthology.org/2020.iwslt-1.27/): for
each window, the texts a viewer saw in order (its drafts, then its final); between two consecutive
texts, the words of the first after their longest common prefix with the second are erased. NE =
erased words over the final words, summed over the windows.

**Readability.** Draft words that repeat the word before them (``repeats``), and the share of draft
words found in a word list (``real_word_share``; for Portuguese, Debian's ``wbrazilian`` list at
``/usr/share/dict/brazilian``), numbers and the source's own words (names carried over) counted as
real, and a hyphenated word (a clitic, a compound) real when each of its parts is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.caption_scoring import Caption, word_spoken_ns
from tests.speech import normalize


@dataclass
class TrackRecord:
    """One stream's translation track as received (drafts and finals, as the caption's are)."""

    drafts: list[Caption] = field(default_factory=list)
    finals: list[Caption] = field(default_factory=list)


@dataclass
class TrackScore:
    shown_s: list[float]  # per final word: spoken -> on screen for good
    final_s: list[float]  # per final word: spoken -> its final
    erased: int
    final_words: int
    draft_words: list[str]
    repeats: int
    windows_drafted_before_final: int
    windows: int


def erased_words(texts: Sequence[str]) -> int:
    """Words taken back between consecutive texts (module docstring)."""
    erased = 0
    for before, after in itertools.pairwise(texts):
        old, new = before.split(), after.split()
        common = 0
        while common < min(len(old), len(new)) and old[common] == new[common]:
            common += 1
        erased += len(old) - common
    return erased


def normalized_erasure(windows: Iterable[Sequence[str]]) -> float:
    """NE over windows, each the sequence of texts shown (drafts, then the final)."""
    erased = total = 0
    for texts in windows:
        erased += erased_words(texts)
        total += len(texts[-1].split())
    return erased / total if total else 0.0


def score_track(record: TrackRecord, start_ns: int) -> TrackScore:
    """Per-word latencies, erasure and readability of one stream's translation track."""
    shown_s: list[float] = []
    final_s: list[float] = []
    erased = final_words = repeats = drafted = 0
    draft_words: list[str] = []
    for final in sorted(record.finals, key=lambda f: f.window):
        own = sorted(
            (d for d in record.drafts if d.window == final.window and d.at_ns <= final.at_ns),
            key=lambda d: d.at_ns,
        )
        drafted += bool(own)
        erased += erased_words([*(d.text for d in own), final.text])
        words = final.text.split()
        final_words += len(words)
        keys = [normalize(w) for w in words]
        draft_keys = [[normalize(w) for w in d.text.split()] for d in own]
        for d in own:
            shown = d.text.split()
            draft_words += shown
            repeats += sum(1 for a, b in itertools.pairwise(shown) if normalize(a) == normalize(b))
        for j in range(len(words)):
            spoken_ns = word_spoken_ns(start_ns, final, j, len(words))
            at = next(
                (d.at_ns for d, k in zip(own, draft_keys, strict=True) if k[: j + 1] == keys[: j + 1]), None
            )
            shown_s.append(((final.at_ns if at is None else at) - spoken_ns) / 1e9)
            final_s.append((final.at_ns - spoken_ns) / 1e9)
    return TrackScore(
        shown_s=shown_s,
        final_s=final_s,
        erased=erased,
        final_words=final_words,
        draft_words=draft_words,
        repeats=repeats,
        windows_drafted_before_final=drafted,
        windows=len(record.finals),
    )


def word_list(path: Path) -> frozenset[str] | None:
    """A word list's words, case folded (None where it is not installed)."""
    if not path.is_file():
        return None
    return frozenset(normalize(line) for line in path.read_text(encoding="utf-8").splitlines())


def real_word_share(words: Sequence[str], known: frozenset[str], source_words: frozenset[str]) -> float:
    """The share of ``words`` in ``known``, numbers and words of the source (names carried over)
    counted as real; punctuation around a word is ignored."""
    counted = real = 0
    for word in words:
        bare = normalize(word)
        if not bare:
            continue
        counted += 1
        parts = [normalize(part) for part in word.split("-")]  # lembre-se, frio-coração: each part a word
        whole = all(part in known for part in parts if part)
        real += whole or bare in known or bare in source_words or any(c.isdigit() for c in bare)
    return real / counted if counted else 1.0
