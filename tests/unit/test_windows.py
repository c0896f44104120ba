"""Unit and property tests for engine.windows.TextWindower."""

# ruff: noqa: RUF001  (CJK and typographic punctuation is the point of these tests)

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.types import Segment, Window
from engine.windows import ABBREVIATIONS, TextWindower


def sources(windows: list[Window]) -> list[str]:
    return [w.source for w in windows]


def push_all(windower: TextWindower, *texts: str, now_ms: int = 0) -> list[Window]:
    out: list[Window] = []
    for text in texts:
        out += windower.push(Segment(text), now_ms)
    return out


# --- sentences -----------------------------------------------------------------------------------------


def test_several_sentences_in_one_push_are_separate_windows() -> None:
    w = TextWindower()
    assert sources(push_all(w, "Hello there. How are you? Fine!")) == [
        "Hello there.",
        "How are you?",
        "Fine!",
    ]
    assert w.pending_text == ""
    assert w.next_deadline_ms is None


def test_sentence_completed_across_pushes() -> None:
    w = TextWindower()
    assert push_all(w, "The quick brown") == []
    assert push_all(w, "fox jumps") == []
    assert w.pending_text == "The quick brown fox jumps"
    assert sources(push_all(w, "over the dog. And")) == ["The quick brown fox jumps over the dog."]
    assert w.pending_text == "And"


def test_segments_join_with_single_spaces_and_glue_punctuation() -> None:
    w = TextWindower()
    push_all(w, "  Hello\n\n", "there", "\tmy  friend", ", you")
    assert w.pending_text == "Hello there my friend, you"


def test_cjk_segments_join_without_space() -> None:
    w = TextWindower()
    push_all(w, "我们", "今天")
    assert w.pending_text == "我们今天"


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith met Mr. Jones at St. Mary's church.",
        "Bring fruit, e.g. apples, pears etc. and more.",
        "Meet at 5 p.m. tomorrow vs. today.",
        "J. R. R. Tolkien wrote it.",
        "Pi is about 3.14 and e is 2.72 roughly.",
        "Item No. 5 is mine.",
    ],
)
def test_abbreviations_initials_decimals_do_not_end_a_sentence(text: str) -> None:
    w = TextWindower()
    assert sources(push_all(w, text)) == [text]


@pytest.mark.parametrize("tail", ["I met Dr.", "Written by J.", "See e.g.", "Number No.", "Pi is 3."])
def test_ambiguous_dot_at_end_of_buffer(tail: str) -> None:
    w = TextWindower()
    if tail == "Pi is 3.":
        assert sources(push_all(w, tail)) == [tail]  # a number then a dot ends a sentence
    else:
        assert push_all(w, tail) == []
        assert w.pending_text == tail


def test_abbreviation_list_is_lower_case_without_final_dot() -> None:
    assert all(a == a.lower() and not a.endswith(".") for a in ABBREVIATIONS)
    assert {"mr", "dr", "e.g", "i.e", "u.s", "no"} <= set(ABBREVIATIONS)


def test_no_before_a_word_ends_a_sentence() -> None:
    w = TextWindower()
    assert sources(push_all(w, "No. I refuse.")) == ["No.", "I refuse."]


def test_ender_at_end_of_buffer_emits_at_once() -> None:
    w = TextWindower()
    assert sources(push_all(w, "Really?")) == ["Really?"]
    assert sources(push_all(w, "I went home.")) == ["I went home."]
    assert sources(push_all(w, "Wait...")) == ["Wait..."]
    assert sources(push_all(w, "Hmm…")) == ["Hmm…"]


def test_ellipsis_ends_a_sentence_mid_text() -> None:
    w = TextWindower()
    assert sources(push_all(w, "Well... I think so.")) == ["Well...", "I think so."]


def test_closing_quotes_and_brackets_stay_with_the_sentence() -> None:
    w = TextWindower()
    out = push_all(w, 'He said "Stop!" Then he left. (Really?) Yes, «Oui.» Done')
    assert sources(out) == ['He said "Stop!"', "Then he left.", "(Really?)", "Yes, «Oui.»"]
    assert w.pending_text == "Done"


def test_dot_not_followed_by_space_is_not_a_boundary() -> None:
    w = TextWindower()
    assert push_all(w, "Visit example.com now") == []


def test_cjk_sentences_without_spaces() -> None:
    w = TextWindower()
    assert sources(push_all(w, "你好。我是小明！你呢？还")) == ["你好。", "我是小明！", "你呢？"]
    assert w.pending_text == "还"


def test_cjk_closing_quote_after_ender() -> None:
    w = TextWindower()
    assert sources(push_all(w, "他说：「好。」然后走了。")) == ["他说：「好。」", "然后走了。"]


# --- token budget --------------------------------------------------------------------------------------


def test_over_budget_sentence_split_at_clauses_balanced() -> None:
    w = TextWindower(max_tokens=6)
    out = push_all(w, "red blue, green black, white pink, gray brown.")
    # greedy would give 6 + 2; balanced gives 4 + 4
    assert sources(out) == ["red blue, green black,", "white pink, gray brown."]


def test_clauses_that_cannot_merge_stay_separate() -> None:
    w = TextWindower(max_tokens=5)
    out = push_all(w, "one two three, four five six; seven eight nine ten.")
    assert sources(out) == ["one two three,", "four five six;", "seven eight nine ten."]


def test_dash_is_a_clause_boundary() -> None:
    w = TextWindower(max_tokens=4)  # the dash counts as a word
    assert sources(push_all(w, "we went there — and came back.")) == ["we went there —", "and came back."]


def test_over_budget_clause_split_at_words() -> None:
    w = TextWindower(max_tokens=3)
    out = push_all(w, "alpha beta, one two three four five six seven, end.")
    assert sources(out)[0] == "alpha beta,"
    assert sources(out)[-1] == "end."
    assert all(len(s.split()) <= 3 for s in sources(out))
    assert " ".join(sources(out)) == "alpha beta, one two three four five six seven, end."
    assert len(out) == 5  # 2 | 3 + 2 + 2 | 1


def test_word_split_is_balanced() -> None:
    w = TextWindower(max_tokens=4)
    out = push_all(w, "a1 b2 c3 d4 e5 f6 g7 h8 i9 j10.")
    assert sorted(len(s.split()) for s in sources(out)) == [3, 3, 4]


def test_single_long_word_may_exceed_budget() -> None:
    w = TextWindower(count_tokens=len, max_tokens=5)
    out = push_all(w, "hello supercalifragilistic ok.")
    assert sources(out) == ["hello", "supercalifragilistic", "ok."]


def test_cjk_over_budget_split_at_characters() -> None:
    w = TextWindower(count_tokens=len, max_tokens=4)
    out = push_all(w, "今天天气很好。我们去公园吧！")
    assert all(len(s) <= 4 for s in sources(out))
    assert "".join(sources(out)) == "今天天气很好。我们去公园吧！"
    assert len(out) == 4
    assert not any(s[0] in "。！" for s in sources(out))  # enders stay with the text before them


def test_cjk_clause_split() -> None:
    w = TextWindower(count_tokens=len, max_tokens=6)
    out = push_all(w, "今天，我们去公园，然后回家。")
    assert sources(out) == ["今天，", "我们去公园，", "然后回家。"]


def test_over_budget_tail_emits_leading_part_at_clause_then_word() -> None:
    w = TextWindower(max_tokens=4)
    assert sources(push_all(w, "one two three, four five six seven")) == ["one two three,"]
    assert w.pending_text == "four five six seven"
    assert sources(push_all(w, "eight nine")) == ["four five six seven"]
    assert w.pending_text == "eight nine"


def test_min_tokens_merges_short_sentence_with_next() -> None:
    w = TextWindower(min_tokens=3)
    out = push_all(w, "Yes. No way. I agree with you. Ok. I think")
    assert sources(out) == ["Yes. No way.", "I agree with you.", "Ok."]
    assert w.pending_text == "I think"


def test_min_tokens_merge_respects_budget() -> None:
    w = TextWindower(min_tokens=2, max_tokens=4)
    assert sources(push_all(w, "Yes. I agree with you.")) == ["Yes.", "I agree with you."]


# --- time, idle, flush -----------------------------------------------------------------------------------


def test_idle_poll_emits_tail_at_deadline_and_not_before() -> None:
    w = TextWindower(idle_ms=1500)
    assert w.push(Segment("Hello there"), 1000) == []
    assert w.next_deadline_ms == 2500
    assert w.poll(2499) == []
    assert w.push(Segment("my friend"), 2000) == []
    assert w.next_deadline_ms == 3500
    assert w.poll(3499) == []
    assert sources(w.poll(3500)) == ["Hello there my friend"]
    assert w.next_deadline_ms is None
    assert w.poll(10_000) == []


def test_whitespace_push_does_not_reset_idle() -> None:
    w = TextWindower(idle_ms=100)
    w.push(Segment("Hello"), 0)
    w.push(Segment("   "), 50)
    assert w.next_deadline_ms == 100


def test_push_emits_stale_tail_first() -> None:
    w = TextWindower(idle_ms=1000)
    w.push(Segment("so"), 0)
    assert sources(w.push(Segment("anyway."), 5000)) == ["so", "anyway."]


def test_flush_emits_everything_split_by_budget() -> None:
    w = TextWindower(max_tokens=3)
    assert w.flush(0) == []
    push_all(w, "Done. one two")
    push_all(w, "three")
    assert w.pending_text == "one two three"
    assert sources(push_all(w, "four five")) == ["one two three"]
    assert sources(w.flush(0)) == ["four five"]
    assert w.pending_text == ""
    assert w.flush(0) == []


def test_indexes_are_gapless_from_start_index() -> None:
    w = TextWindower(start_index=7, idle_ms=10)
    out = w.push(Segment("Ab cd. Ef gh. Ij"), 0) + w.poll(100) + w.push(Segment("Kl"), 200) + w.flush(300)
    assert [x.index for x in out] == [7, 8, 9, 10]


def test_window_times_span_contributing_segments() -> None:
    w = TextWindower()
    out = w.push(Segment("Hello", 100), 100)
    out += w.push(Segment("world. Next", 300), 300)
    out += w.push(Segment("part.", 900), 900)
    assert [(x.source, x.t0_ms, x.t1_ms) for x in out] == [
        ("Hello world.", 100, 300),
        ("Next part.", 300, 900),
    ]


def test_segment_without_time_uses_now() -> None:
    w = TextWindower()
    w.push(Segment("Hi"), 40)
    (window,) = w.push(Segment("there.", None), 70)
    assert (window.t0_ms, window.t1_ms) == (40, 70)


def test_times_of_tail_cut_over_budget() -> None:
    w = TextWindower(max_tokens=2)
    out = w.push(Segment("a b c", 10), 10)
    assert [(x.source, x.t0_ms, x.t1_ms) for x in out] == [("a b", 10, 10)]
    assert w.push(Segment("d", 30), 30) == []
    assert [(x.source, x.t0_ms, x.t1_ms) for x in w.flush(40)] == [("c d", 10, 30)]


@pytest.mark.parametrize("text", ["", " ", "\n\t  \u3000"])
def test_empty_input_produces_nothing(text: str) -> None:
    w = TextWindower()
    assert w.push(Segment(text), 0) == []
    assert w.pending_text == ""
    assert w.next_deadline_ms is None
    assert w.poll(10_000) == []
    assert w.flush(10_000) == []


@pytest.mark.parametrize(
    "kwargs", [{"max_tokens": 0}, {"min_tokens": -1}, {"idle_ms": -1}, {"start_index": -1}]
)
def test_invalid_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        TextWindower(**kwargs)  # type: ignore[arg-type]


# --- properties ------------------------------------------------------------------------------------------

LATIN = "abAB3 \n\t.,;:!?…\"'()«»—–-"
ANY = LATIN + "你好。，！？「」、ไทย"


def _run(
    w: TextWindower, steps: list[tuple[str, int, bool]], with_time: bool
) -> tuple[list[Window], list[int]]:
    """Feed the steps (text, gap, poll first?); returns the windows and each segment's time."""
    now, out, times = 0, [], []
    for text, gap, poll_first in steps:
        now += gap
        if poll_first:
            out += w.poll(now)
        out += w.push(Segment(text, now if with_time else None), now)
        times.append(now)
    return out + w.flush(now), times


def _check_common(w_start: int, out: list[Window], max_tokens: int, count: Callable[[str], int]) -> None:
    assert [x.index for x in out] == list(range(w_start, w_start + len(out)))
    for x in out:
        assert x.source
        assert x.source == x.source.strip()
        assert x.t0_ms <= x.t1_ms
        assert count(x.source) <= max_tokens or len(x.source.split()) == 1


def _no_leading_glue(text: str) -> str:
    """Start every segment with a letter or whitespace, so joining always means one space."""
    stripped = text.lstrip()
    return text if not stripped or stripped[0].isalnum() else text.replace(stripped[0], "w", 1)


steps_latin = st.lists(
    st.tuples(st.text(LATIN, max_size=40).map(_no_leading_glue), st.integers(0, 2500), st.booleans()),
    max_size=12,
)
steps_any = st.lists(st.tuples(st.text(ANY, max_size=40), st.integers(0, 2500), st.booleans()), max_size=12)


@settings(max_examples=300, deadline=None)
@given(steps=steps_latin, max_tokens=st.integers(1, 6), min_tokens=st.integers(0, 3))
def test_property_latin_text_conserved_exactly(
    steps: list[tuple[str, int, bool]], max_tokens: int, min_tokens: int
) -> None:
    w = TextWindower(max_tokens=max_tokens, min_tokens=min_tokens, idle_ms=1000, start_index=3)
    out, _ = _run(w, steps, with_time=True)
    expected = re.sub(r"\s+", " ", " ".join(text for text, _, _ in steps)).strip()
    assert " ".join(x.source for x in out) == expected
    _check_common(3, out, max_tokens, lambda s: len(s.split()))
    assert w.pending_text == ""


@settings(max_examples=300, deadline=None)
@given(steps=steps_any, max_tokens=st.integers(1, 8), by_chars=st.booleans())
def test_property_any_text_conserved_and_within_budget(
    steps: list[tuple[str, int, bool]], max_tokens: int, by_chars: bool
) -> None:
    count: Callable[[str], int] = len if by_chars else (lambda s: len(s.split()))
    w = TextWindower(count_tokens=count, max_tokens=max_tokens, idle_ms=1000)
    out, times = _run(w, steps, with_time=False)
    squeeze = "".join("".join(text for text, _, _ in steps).split())
    assert "".join("".join(x.source for x in out).split()) == squeeze
    _check_common(0, out, max_tokens, count)
    starts = [x.t0_ms for x in out]
    assert starts == sorted(starts)
    assert all(x.t0_ms in times and x.t1_ms in times for x in out)
