"""How ``bench.audio_latency`` scores a stream: per-word draft and final latency, and the draft text
that stands for each window."""

from __future__ import annotations

import pytest

from bench.caption_scoring import Caption, StreamRecord, draft_reading, score_stream

S = 1_000_000_000  # ns


def test_a_draft_reading_leaves_out_the_next_windows_words() -> None:
    assert draft_reading("He went down to the river and then", "He went down to the river.") == (
        "He went down to the river"
    )
    # a wrong or missing word still counts: only the tail that belongs to the next window goes
    wrong = draft_reading("He want to the river and then", "He went down to the river.")
    assert wrong == "He want to the river"
    assert draft_reading("", "Hello there.") == ""


def test_per_word_latency_from_spoken_to_first_draft_and_final() -> None:
    record = StreamRecord(start_ns=10 * S)
    # window 0: "bring your ticket to" spoken over 0..2000 ms, word ends at 500, 1000, 1500, 2000 ms
    record.drafts = [
        Caption(0, "bring your", 0, 1000, 11 * S + S // 2, 0),  # shows words 1-2 at 1.5 s
        Caption(0, "bring your ticket to the", 0, 2400, 13 * S, 0),  # words 3-4 at 3.0 s, "the" is next
    ]
    record.finals = [
        Caption(0, "bring your ticket to", 0, 2000, 14 * S, 0),
        Caption(1, "the desk", 2000, 3000, 15 * S, 0),
    ]
    score = score_stream(record)
    assert score.final_s == pytest.approx([3.5, 3.0, 2.5, 2.0, 2.5, 2.0])
    # window 1's "the" was first shown by window 0's last draft; "desk" was never drafted
    assert score.draft_s == pytest.approx([1.0, 0.5, 1.5, 1.0, 0.5, 2.0])
    assert score.words_drafted_at_final == 1
    assert score.draft_text == "bring your ticket to the desk"
    assert score.final_text == "bring your ticket to the desk"


def test_a_translated_word_counts_once_a_draft_starts_with_the_final_up_to_it() -> None:
    from bench.translation_scoring import TrackRecord, normalized_erasure, score_track

    # window 0 spans 0..3000 ms; its final has 3 words, placed at 1000, 2000, 3000 ms
    record = TrackRecord(
        drafts=[
            Caption(0, "Bom", 0, 1000, 12 * S, 0),  # word 1 for good at 2.0 s after the stream start
            Caption(0, "Bom tarde", 0, 2000, 13 * S, 0),  # "tarde" is taken back: erased once
            Caption(0, "Bom dia", 0, 2500, 14 * S, 0),  # word 2 at 4.0 s
        ],
        finals=[Caption(0, "Bom dia, todos.", 0, 3000, 15 * S, 0)],
    )
    score = score_track(record, start_ns=10 * S)
    assert score.shown_s == pytest.approx([1.0, 2.0, 2.0])  # 12-11, 14-12, final 15-13
    assert score.final_s == pytest.approx([4.0, 3.0, 2.0])
    # "tarde" erased, then "dia" -> "dia," at the final (punctuation changes a word): 2 of 3
    assert (score.erased, score.final_words) == (2, 3)
    assert normalized_erasure([["a b", "a c", "a c d"], ["x"]]) == pytest.approx(1 / 4)
