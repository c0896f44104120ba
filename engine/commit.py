"""When recognised words become final: the LocalAgreement-n commit policy for streaming recognition.

This module owns the rule that turns a series of whisper hypotheses over a growing (and re-transcribed)
audio buffer into words that are final and never revised. It is whisper_streaming's HypothesisBuffer,
typed and generalised to n hypotheses, and sans-I/O: hypotheses come in through ``LocalAgreement.insert``
and ``CommitUpdate``s come out.

Each hypothesis is first stripped of what is already committed: leading words that lie inside the
committed audio (they end by ``committed_until_ms + tolerance_ms`` and start before
``committed_until_ms - tolerance_ms``), then a repeat of the last 1 to 5 committed words (whisper
re-emits them when the buffer starts before the committed end). A word is committed once the last
``agreement`` hypotheses all hold it at the same place in that stripped sequence, with every word
before it. Words are compared by ``normalise``: case-folded, punctuation stripped at both ends. A
committed word takes the text and times of the latest hypothesis, with its times clamped so that each
committed word starts no earlier than the previous one ended.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from engine.types import Word

MAX_OVERLAP_WORDS = 5
"""The longest repeat of the committed tail that ``insert`` removes from a hypothesis."""


def _is_edge(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


def normalise(text: str) -> str:
    """The form in which words are compared: case-folded, punctuation (and whitespace) stripped at both
    ends ("Hello," and "hello" agree; "don't" keeps its apostrophe)."""
    start, end = 0, len(text)
    while start < end and _is_edge(text[start]):
        start += 1
    while end > start and _is_edge(text[end - 1]):
        end -= 1
    return text[start:end].casefold()


@dataclass(frozen=True, slots=True)
class CommitUpdate:
    """What one hypothesis changed: words that became final (in order, never repeated by a later
    update) and the current unconfirmed tail (which the next update replaces)."""

    committed: tuple[Word, ...]
    tentative: tuple[Word, ...]


class LocalAgreement:
    """Commits the words on which the last ``agreement`` hypotheses agree, as a prefix.

    Callers must know: a hypothesis must cover the audio from at or before ``committed_until_ms``
    (words in a gap between the committed end and the hypothesis' first word are simply never
    seen); a repeat of the committed tail is only recognised when the hypothesis' first new-looking
    word starts within ``overlap_window_ms`` of ``committed_until_ms``; only ``committed_count`` and
    the last ``MAX_OVERLAP_WORDS`` committed words are kept, so memory stays bounded on long streams.
    """

    def __init__(self, *, agreement: int = 2, tolerance_ms: int = 100, overlap_window_ms: int = 1000) -> None:
        if agreement < 1:
            raise ValueError(f"agreement must be >= 1, got {agreement}")
        if tolerance_ms < 0:
            raise ValueError(f"tolerance_ms must be >= 0, got {tolerance_ms}")
        if overlap_window_ms < 0:
            raise ValueError(f"overlap_window_ms must be >= 0, got {overlap_window_ms}")
        self.agreement = agreement
        self.tolerance_ms = tolerance_ms
        self.overlap_window_ms = overlap_window_ms
        self._history: deque[list[Word]] = deque(maxlen=agreement)  # stripped hypotheses, latest last
        self._tail: deque[Word] = deque(maxlen=MAX_OVERLAP_WORDS)
        self._count = 0
        self._until_ms = 0

    @property
    def committed_until_ms(self) -> int:
        """End time of the last committed word (0 before any)."""
        return self._until_ms

    @property
    def committed_count(self) -> int:
        """How many words have been committed."""
        return self._count

    @property
    def committed_tail(self) -> tuple[Word, ...]:
        """The last (up to ``MAX_OVERLAP_WORDS``) committed words, oldest first."""
        return tuple(self._tail)

    @property
    def tentative(self) -> tuple[Word, ...]:
        """The latest hypothesis' words after the committed ones."""
        return tuple(self._history[-1]) if self._history else ()

    def insert(self, hypothesis: Sequence[Word], *, settled_until_ms: int | None = None) -> CommitUpdate:
        """Take the recogniser's words for the current audio buffer (absolute times); commit what the
        last ``agreement`` hypotheses agree on. With ``settled_until_ms``, only agreed words that end
        by then *in this hypothesis* are committed (the caller's margin before the buffer's end, where
        a word may be cut); earlier hypotheses only have to agree, wherever their words ended."""
        self._history.append(self._strip_committed(hypothesis))
        committed: list[Word] = []
        if len(self._history) == self.agreement:
            latest = self._history[-1]
            keys = [[normalise(word.text) for word in hyp] for hyp in self._history]
            agreed = 0
            while agreed < min(map(len, keys)) and all(key[agreed] == keys[-1][agreed] for key in keys):
                agreed += 1
            if settled_until_ms is not None:
                agreed = next(
                    (i for i, w in enumerate(latest[:agreed]) if w.t1_ms > settled_until_ms), agreed
                )
            committed = self._commit(latest[:agreed])
            for hyp in self._history:
                del hyp[:agreed]
        return CommitUpdate(tuple(committed), self.tentative)

    def finish(self) -> CommitUpdate:
        """End of stream: commit the tentative tail as it stands."""
        committed = self._commit(self.tentative)
        self._history.clear()
        return CommitUpdate(tuple(committed), ())

    def commit_through(self, until_ms: int) -> CommitUpdate:
        """Commit the latest hypothesis' words that end by ``until_ms`` without waiting for agreement.

        For a caller about to drop that audio (a full buffer): the latest hypothesis is the best
        reading of it, and dropping it unconfirmed would lose the words. Agreement restarts after them.
        """
        latest = list(self.tentative)
        count = 0
        while count < len(latest) and latest[count].t1_ms <= until_ms:
            count += 1
        committed = self._commit(latest[:count])
        self._history.clear()
        if latest[count:]:
            self._history.append(latest[count:])
        return CommitUpdate(tuple(committed), self.tentative)

    def reset_tentative(self) -> None:
        """Forget the unconfirmed hypotheses (e.g. after a long silence): the next ``agreement``
        hypotheses start a fresh agreement. Committed words are kept."""
        self._history.clear()

    def _is_old(self, word: Word) -> bool:
        """Whether ``word`` lies inside the committed audio (a re-emitted committed word)."""
        until = self._until_ms
        return word.t1_ms <= until + self.tolerance_ms and word.t0_ms < until - self.tolerance_ms

    def _strip_committed(self, hypothesis: Sequence[Word]) -> list[Word]:
        words = list(hypothesis)
        if not self._count:
            return words
        skip = 0
        while skip < len(words) and self._is_old(words[skip]):
            skip += 1
        words = words[skip:]
        if words and abs(words[0].t0_ms - self._until_ms) <= self.overlap_window_ms:
            tail = [normalise(word.text) for word in self._tail]
            for size in range(min(len(tail), len(words)), 0, -1):
                if tail[-size:] == [normalise(word.text) for word in words[:size]]:
                    return words[size:]
        return words

    def _commit(self, words: Sequence[Word]) -> list[Word]:
        out: list[Word] = []
        for word in words:
            t0 = max(word.t0_ms, self._until_ms)
            t1 = max(word.t1_ms, t0)
            final = word if (t0, t1) == (word.t0_ms, word.t1_ms) else replace(word, t0_ms=t0, t1_ms=t1)
            out.append(final)
            self._tail.append(final)
            self._until_ms = t1
            self._count += 1
        return out
