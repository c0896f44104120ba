"""The hub translates the open window (sans I/O): a publisher's ``partial`` line (the same path as
speech's caption drafts) becomes the caption's draft and one provisional job per watched track, the
engine's drafts of it go out through the display rule numbered per window, the window's final job
follows when it closes, and provisional canvases nobody will finish are cancelled."""

from __future__ import annotations

import pytest

from engine.types import CanvasKey
from stream.draft_display import DraftDisplay, clean, shown
from tests.unit.hub_harness import Harness

HOLD_ONE = DraftDisplay(min_source_words=2, hold_back_words=1, agreement=False)


@pytest.fixture
def h() -> Harness:
    return Harness(display=HOLD_ONE)


def test_a_partial_line_is_the_captions_draft_and_a_provisional_job_per_watched_track(h: Harness) -> None:
    h.join(publisher=True)
    caption, pt = h.join("caption"), h.join("pt")
    h.hub.publish_partial("s", "Good", None)  # one word: shown as caption, not translated yet
    h.hub.publish_partial("s", "Good morning every", None)
    assert [(m.window, m.rev, m.text) for m in caption.drafts()] == [
        (0, 0, "Good"),
        (0, 1, "Good morning every"),
    ]
    assert [(j.key, j.source, j.provisional) for j in h.jobs] == [
        (CanvasKey("s", "pt", 0), "Good morning every", True)
    ]
    h.draft("pt", 0, "Bom dia a cada")
    h.draft("pt", 0, "Bom dia a")  # would only take a word back: not sent
    h.draft("pt", 0, "Bom dia a todos vocês")
    assert [(m.window, m.rev, m.text) for m in pt.drafts()] == [
        (0, 0, "Bom dia a"),
        (0, 1, "Bom dia a todos"),
    ]
    h.hub.publish_text("s", "Good morning everyone.", None)
    h.hub.flush("s")
    final_job = h.jobs[-1]
    assert (final_job.key, final_job.source, final_job.provisional) == (
        CanvasKey("s", "pt", 0),
        "Good morning everyone.",
        False,
    )
    h.final("pt", 0, "Bom dia a todos.", rev=7)
    assert [(m.rev, m.text) for m in pt.finals()] == [(2, "Bom dia a todos.")]  # one more than its last draft
    assert [m.text for m in caption.finals()] == ["Good morning everyone."]
    assert h.cancelled == []


def test_the_next_window_is_translated_under_its_own_number_and_old_drafts_stay_with_theirs(
    h: Harness,
) -> None:
    h.join(publisher=True)
    pt = h.join("pt")
    h.hub.publish_text("s", "One two three.", None)
    h.hub.flush("s")
    h.hub.publish_partial("s", "Four five six", None)
    assert [(j.key.window, j.provisional) for j in h.jobs] == [(0, False), (1, True)]
    h.draft("pt", 0, "Um dois três")  # window 0's own draft, before its final
    h.draft("pt", 1, "Quatro cinco seis")
    assert [(m.window, m.rev, m.text) for m in pt.drafts()] == [(0, 0, "Um dois"), (1, 0, "Quatro cinco")]
    h.final("pt", 0, "Um dois três.")
    h.draft("pt", 0, "Um dois três quatro")  # after its final: dropped
    assert [m.window for m in pt.drafts()] == [0, 1]


def test_provisional_canvases_of_a_track_that_lost_its_viewers_are_cancelled(h: Harness) -> None:
    h.join(publisher=True)
    pt, es = h.join("pt"), h.join("es")
    h.hub.publish_partial("s", "Three words here", None)
    assert sorted(j.key.track for j in h.jobs) == ["es", "pt"]
    h.hub.leave("s", es)
    h.hub.publish_text("s", "Three words here.", None)
    h.hub.flush("s")
    assert h.cancelled == [CanvasKey("s", "es", 0)]  # its window closed without it: nobody finishes it
    assert [(j.key.track, j.provisional) for j in h.jobs[2:]] == [("pt", False)]
    h.hub.publish_partial("s", "More words to come", None)
    h.hub.leave("s", pt)
    h.advance(10_000)
    h.hub.tick()
    assert CanvasKey("s", "pt", 1) in h.cancelled


def test_translating_open_windows_can_be_turned_off() -> None:
    h = Harness(display=DraftDisplay(translate_open=False))
    h.join(publisher=True)
    h.join("pt")
    h.hub.publish_partial("s", "Good morning everyone", None)
    assert h.jobs == []


def test_drafts_are_cleaned_held_back_and_never_only_take_words_back() -> None:
    assert clean("o resfriamento resfriamento, Resfriamento e e o") == "o resfriamento e o"
    display = DraftDisplay(hold_back_words=2, agreement=False)
    assert shown(display, None, "a b") is None
    assert shown(display, None, "a b c d") == "a b"
    assert shown(display, "a b", "a b c") is None  # nothing new
    assert shown(display, "a b c", "a b c") is None  # "a" alone would only take words back
    assert shown(display, "a b", "a x c d") == "a x"  # a real change is sent
    assert shown(DraftDisplay(hold_back_words=0, agreement=False), "a", "a a b") == "a b"
    with pytest.raises(ValueError, match="hold_back_words"):
        DraftDisplay(hold_back_words=-1)


def test_with_agreement_only_what_two_consecutive_drafts_start_with_is_shown() -> None:
    display = DraftDisplay(hold_back_words=0, agreement=True)
    assert shown(display, None, "Bom dia a todos") is None  # nothing to agree with yet
    assert shown(display, None, "Bom dia a todos vocês", "Bom dia a cada") == "Bom dia a"
    assert shown(display, "Bom dia a", "Bom dia para", "Bom dia a todos") is None  # only a take-back
    h = Harness(display=DraftDisplay(min_source_words=2, hold_back_words=0, agreement=True))
    h.join(publisher=True)
    pt = h.join("pt")
    h.hub.publish_partial("s", "Good morning every", None)
    h.draft("pt", 0, "Bom dia a cada")
    h.draft("pt", 0, "Bom dia a todos")
    h.draft("pt", 0, "Bom dia a todos vocês")
    assert [(m.rev, m.text) for m in pt.drafts()] == [(0, "Bom dia a"), (1, "Bom dia a todos")]


def test_a_window_translated_only_once_closed_shows_its_draft_without_agreement() -> None:
    h = Harness(display=DraftDisplay())  # the defaults: agreement on
    h.join(publisher=True)
    pt = h.join("pt")
    h.hub.publish_text("s", "Good morning everyone.", None)
    h.hub.flush("s")
    h.draft("pt", 0, "Bom dia a todos")
    assert [(m.rev, m.text) for m in pt.drafts()] == [(0, "Bom dia a todos")]
