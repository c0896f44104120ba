"""Unit and property tests for engine.commit.LocalAgreement (the LocalAgreement-n commit policy)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.commit import CommitUpdate, LocalAgreement, normalise
from engine.types import Word

STEP_MS = 300
WORD_MS = 250
SENTENCE = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "and",
    "then",
    "it",
    "runs",
]


def words(text: str, first: int = 0, shift_ms: int = 0) -> list[Word]:
    """``text``'s words placed as words ``first``, ``first + 1``, ... of a stream (300 ms apart)."""
    return [
        Word(w, (first + i) * STEP_MS + shift_ms, (first + i) * STEP_MS + WORD_MS + shift_ms)
        for i, w in enumerate(text.split())
    ]


def texts(ws: Sequence[Word]) -> list[str]:
    return [w.text for w in ws]


def feed(policy: LocalAgreement, *hypotheses: list[Word]) -> list[Word]:
    """Insert each hypothesis; every word committed along the way, in order."""
    out: list[Word] = []
    for hyp in hypotheses:
        out += policy.insert(hyp).committed
    return out


def assert_monotonic(committed: Sequence[Word]) -> None:
    for word in committed:
        assert word.t0_ms <= word.t1_ms
    for before, after in pairwise(committed):
        assert before.t1_ms <= after.t0_ms


# --- normalise -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("Hello,", "hello"),
        ("¿Qué?", "qué"),
        ('"Stop!"', "stop"),
        ("don't", "don't"),
        (" A ", "a"),
        ("...", ""),
    ],
)
def test_normalise(raw: str, key: str) -> None:
    assert normalise(raw) == key


# --- agreement -------------------------------------------------------------------------------------------


def test_nothing_is_committed_from_a_single_hypothesis() -> None:
    policy = LocalAgreement()
    update = policy.insert(words("the quick brown"))
    assert update == CommitUpdate((), tuple(words("the quick brown")))
    assert policy.committed_until_ms == 0
    assert policy.committed_count == 0


def test_two_agreeing_hypotheses_commit() -> None:
    policy = LocalAgreement()
    policy.insert(words("the quick"))
    update = policy.insert(words("the quick"))
    assert texts(update.committed) == ["the", "quick"]
    assert update.tentative == ()
    assert policy.committed_until_ms == STEP_MS + WORD_MS
    assert policy.committed_count == 2
    assert policy.committed_tail == update.committed


def test_growing_hypotheses_commit_progressively() -> None:
    policy = LocalAgreement()
    steps = [policy.insert(words(" ".join(SENTENCE[:n]))) for n in range(1, 6)]
    assert [texts(u.committed) for u in steps] == [[], ["the"], ["quick"], ["brown"], ["fox"]]
    assert [texts(u.tentative) for u in steps] == [["the"], ["quick"], ["brown"], ["fox"], ["jumps"]]
    final = policy.finish()
    assert texts(final.committed) == ["jumps"]
    assert final.tentative == ()
    assert policy.committed_count == 5


def test_a_changed_word_stops_the_commit() -> None:
    policy = LocalAgreement()
    policy.insert(words("the quick brown fox"))
    update = policy.insert(words("the quick crown fox jumps"))
    assert texts(update.committed) == ["the", "quick"]
    assert texts(update.tentative) == ["crown", "fox", "jumps"]
    update = policy.insert(words("brown fox jumps over", first=2))
    assert update.committed == ()  # "crown" vs "brown": still no agreement at the first open word
    update = policy.insert(words("brown fox jumps over", first=2))
    assert texts(update.committed) == ["brown", "fox", "jumps", "over"]


@pytest.mark.parametrize("repeat", [1, 2, 3])
@pytest.mark.parametrize("shift_ms", [-40, 0, 30, 150])
def test_reemitted_committed_words_are_not_committed_twice(repeat: int, shift_ms: int) -> None:
    policy = LocalAgreement()
    committed = feed(policy, words("the quick brown fox"), words("the quick brown fox jumps"))
    assert texts(committed) == ["the", "quick", "brown", "fox"]
    # the buffer was trimmed to an earlier point and re-transcribed: the last `repeat` committed words
    # come back, with slightly different timestamps
    start = 4 - repeat
    retranscribed = SENTENCE[start:7]
    update = policy.insert(words(" ".join(retranscribed), first=start, shift_ms=shift_ms))
    assert texts(update.committed) == ["jumps"]
    assert texts(update.tentative) == ["over", "the"]
    update = policy.insert(words(" ".join(SENTENCE[start:8]), first=start, shift_ms=shift_ms // 2))
    assert texts(update.committed) == ["over", "the"]
    assert policy.committed_count == 7


def test_overlap_is_removed_by_text_when_times_do_not_show_it() -> None:
    policy = LocalAgreement()
    feed(policy, words("the quick brown"), words("the quick brown"))
    # "brown" again, but timed as if it started where the committed one ended
    late = [Word("Brown,", 760, 1000), *words("fox jumps", first=3)]
    assert policy.insert(late).tentative == tuple(words("fox jumps", first=3))
    assert texts(policy.insert(late).committed) == ["fox", "jumps"]


def test_a_genuinely_new_short_word_right_after_the_committed_end_is_kept() -> None:
    policy = LocalAgreement()
    feed(policy, words("it was"), words("it was"))
    until = policy.committed_until_ms
    hyp = [Word("a", until - 40, until + 60), Word("dog", until + 100, until + 400)]
    assert texts(policy.insert(hyp).tentative) == ["a", "dog"]
    assert texts(policy.insert(hyp).committed) == ["a", "dog"]


def test_punctuation_and_case_differences_still_agree() -> None:
    policy = LocalAgreement()
    policy.insert([Word("Hello", 0, 200), Word("world", 300, 500), Word("again", 600, 800)])
    update = policy.insert([Word("hello,", 0, 210), Word("World.", 300, 520), Word("Again?", 600, 800)])
    # the committed words carry the latest hypothesis' text and times
    assert update.committed == (Word("hello,", 0, 210), Word("World.", 300, 520), Word("Again?", 600, 800))


def test_finish_commits_the_tail_once() -> None:
    policy = LocalAgreement()
    feed(policy, words("the quick brown"), words("the quick brown fox jumps"))
    final = policy.finish()
    assert texts(final.committed) == ["fox", "jumps"]
    assert policy.finish() == CommitUpdate((), ())
    assert policy.committed_count == 5


def test_finish_without_hypotheses_is_empty() -> None:
    assert LocalAgreement().finish() == CommitUpdate((), ())


def test_reset_tentative_needs_fresh_agreement() -> None:
    policy = LocalAgreement()
    policy.insert(words("the quick"))
    policy.reset_tentative()
    assert policy.tentative == ()
    assert policy.insert(words("the quick")).committed == ()
    assert texts(policy.insert(words("the quick")).committed) == ["the", "quick"]


def test_committed_timestamps_never_go_backwards() -> None:
    policy = LocalAgreement()
    committed = feed(policy, words("the quick"), words("the quick"))
    # a later hypothesis puts the next word so that it overlaps the committed end
    overlapping = [Word("brown", 500, 700), Word("fox", 690, 680)]
    committed += feed(policy, overlapping, overlapping)
    assert texts(committed) == ["the", "quick", "brown", "fox"]
    assert_monotonic(committed)
    assert committed[2].t0_ms == STEP_MS + WORD_MS
    assert policy.committed_until_ms == committed[-1].t1_ms


def test_agreement_one_commits_everything_at_once() -> None:
    policy = LocalAgreement(agreement=1)
    update = policy.insert(words("the quick brown"))
    assert update == CommitUpdate(tuple(words("the quick brown")), ())
    update = policy.insert(words("brown fox", first=2))
    assert texts(update.committed) == ["fox"]


def test_agreement_three_waits_for_three() -> None:
    policy = LocalAgreement(agreement=3)
    assert feed(policy, words("the quick"), words("the quick brown")) == []
    assert texts(policy.insert(words("the quick brown fox")).committed) == ["the", "quick"]
    assert texts(policy.insert(words("the quick brown fox")).committed) == ["brown"]


@pytest.mark.parametrize("kwargs", [{"agreement": 0}, {"tolerance_ms": -1}, {"overlap_window_ms": -1}])
def test_invalid_options(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        LocalAgreement(**kwargs)


# --- properties ------------------------------------------------------------------------------------------

VOCAB = [f"w{i}" for i in range(40)]


def place(index: int, jitter: int) -> tuple[int, int]:
    return index * STEP_MS + jitter, index * STEP_MS + WORD_MS + jitter


@st.composite
def hypothesis_steps(draw: st.DrawFn) -> list[tuple[int, int, int, set[int]]]:
    """(grow by, re-transcribe from this many words back, timing jitter, positions to garble)."""
    return draw(
        st.lists(
            st.tuples(
                st.integers(0, 3),
                st.integers(0, 4),
                st.integers(-90, 90),
                st.sets(st.integers(0, 8), max_size=2),
            ),
            min_size=1,
            max_size=30,
        )
    )


@settings(max_examples=300, deadline=None)
@given(steps=hypothesis_steps(), agreement=st.integers(1, 3))
def test_commits_are_a_prefix_of_the_spoken_words_and_never_repeat(
    steps: list[tuple[int, int, int, set[int]]], agreement: int
) -> None:
    """Hypotheses grow over the fixed word list, start at or before the committed end, jitter in time
    and sometimes garble words (a garbled word is unique to its hypothesis, so it can never agree)."""
    policy = LocalAgreement(agreement=agreement)
    committed: list[Word] = []
    heard = 0
    last: list[Word] = []
    for n, (grow, back, jitter, garbled) in enumerate(steps):
        heard = min(heard + grow, len(VOCAB))
        start = max(policy.committed_count - back, 0)
        last = [
            Word(f"x{n}-{i}" if agreement > 1 and i - start in garbled else VOCAB[i], *place(i, jitter))
            for i in range(start, heard)
        ]
        update = policy.insert(last)
        committed += update.committed
        assert texts(committed) == VOCAB[: len(committed)]
        assert policy.committed_count == len(committed)
        assert update.tentative == policy.tentative
        assert_monotonic(committed)
        assert policy.committed_until_ms == (committed[-1].t1_ms if committed else 0)
    tail = policy.tentative
    final = policy.finish()
    assert texts(final.committed) == texts(tail)
    committed += final.committed
    assert_monotonic(committed)
    assert len({w.text for w in committed}) == len(committed)  # nothing committed twice
    if not any(w.text.startswith("x") for w in committed):
        assert texts(committed) == VOCAB[:heard]  # nothing lost either


def test_the_settled_limit_applies_to_the_latest_hypothesis_only() -> None:
    """A word the previous hypothesis held near its buffer's end (unsettled there) is committed as soon
    as the latest hypothesis agrees and holds it with enough audio after it; words past the latest
    hypothesis' settled limit wait, however many hypotheses agree on them."""
    policy = LocalAgreement(agreement=2)
    first = words("the quick brown fox")  # "fox" ends at 1150 ms, at this buffer's very end
    assert policy.insert(first, settled_until_ms=400).committed == ()
    latest = words("the quick brown fox jumps over")
    update = policy.insert(latest, settled_until_ms=latest[3].t1_ms)
    assert [w.text for w in update.committed] == ["the", "quick", "brown", "fox"]
    assert [w.text for w in update.tentative] == ["jumps", "over"]
    held = policy.insert(words("the quick brown fox jumps over"), settled_until_ms=latest[4].t1_ms - 1)
    assert held.committed == ()  # "jumps" is agreed but ends after the limit
    assert [w.text for w in policy.insert(latest, settled_until_ms=10_000).committed] == ["jumps", "over"]
