"""The sans-I/O StreamHub's ``ended``: viewers are told, after the stream's last final, that its
publisher's input is over (``end``, or a publisher that left and did not come back within the grace)."""

from __future__ import annotations

import pytest

from engine.types import CAPTION_TRACK
from stream.hub import ENDED_BY_DISCONNECT, ENDED_BY_END
from stream.wire.messages import Ended, FinalMsg
from tests.unit.hub_harness import Harness, RecordingViewer

GRACE_MS = 1000


@pytest.fixture
def h() -> Harness:
    return Harness(orphan_grace_ms=GRACE_MS)


def ended(viewer: RecordingViewer) -> list[Ended]:
    return [m for m in viewer.messages if isinstance(m, Ended)]


def test_ended_comes_after_every_final_of_the_stream_once_the_publisher_ends(h: Harness) -> None:
    publisher = h.join(CAPTION_TRACK, publisher=True)
    translated = h.join(CAPTION_TRACK, "pt")
    captions_only = h.join(CAPTION_TRACK)
    h.hub.publish_text("s", "One. Two and", None)
    h.hub.end_input("s")  # "Two and" becomes window 1; both windows wait for their pt finals
    assert [m.window for m in captions_only.finals()] == [0, 1]
    assert ended(captions_only) == []  # the stream's pt finals are not out yet
    h.final("pt", 1, "Dois e")
    assert ended(translated) == []  # window 1 waits for window 0
    assert ended(captions_only) == []
    h.final("pt", 0, "Um.")
    epoch = h.hub.streams["s"].epoch
    expected = Ended(stream="s", reason=ENDED_BY_END, windows=2, epoch=epoch)
    for viewer in (translated, captions_only):
        assert viewer.messages[-1] == expected, "ended is the viewer's last message"
        assert ended(viewer) == [expected]
    assert [(m.track, m.window) for m in translated.finals()] == [
        (CAPTION_TRACK, 0),
        (CAPTION_TRACK, 1),
        ("pt", 0),
        ("pt", 1),
    ]
    assert ended(publisher) == []  # the publisher gets bye instead
    h.hub.tick()
    assert len(ended(translated)) == 1  # sent once


def test_ended_is_sent_at_once_when_nothing_is_pending(h: Harness) -> None:
    h.join(publisher=True)
    viewer = h.join(CAPTION_TRACK)
    h.hub.publish_text("s", "Only this.", None)
    h.hub.end_input("s")
    assert [type(m).__name__ for m in viewer.messages] == ["FinalMsg", "Ended"]
    assert ended(viewer)[0].windows == 1


def test_a_publisher_that_leaves_is_ended_after_the_grace_and_its_last_final(h: Harness) -> None:
    publisher = h.join(publisher=True)
    viewer = h.join(CAPTION_TRACK, "pt")
    h.hub.publish_text("s", "An unfinished thought", None)
    h.hub.leave("s", publisher)  # flushed into window 0; its pt final is still to come
    h.advance(GRACE_MS)
    h.hub.tick()
    assert ended(viewer) == []  # past the grace, but a final is still due
    h.final("pt", 0, "Um pensamento inacabado")
    assert viewer.messages[-1] == Ended(
        stream="s", reason=ENDED_BY_DISCONNECT, windows=1, epoch=h.hub.streams["s"].epoch
    )


def test_a_drained_stream_whose_publisher_left_is_ended_only_once_the_grace_is_over(h: Harness) -> None:
    publisher = h.join(publisher=True)
    viewer = h.join(CAPTION_TRACK)
    h.hub.publish_text("s", "Said.", None)
    h.hub.leave("s", publisher)
    h.advance(GRACE_MS - 1)
    h.hub.tick()
    assert ended(viewer) == []
    h.advance(1)
    h.hub.tick()
    assert [m.reason for m in ended(viewer)] == [ENDED_BY_DISCONNECT]
    assert isinstance(viewer.messages[-2], FinalMsg)


def test_a_publisher_back_within_the_grace_is_no_end(h: Harness) -> None:
    first = h.join(publisher=True)
    viewer = h.join(CAPTION_TRACK)
    h.hub.publish_text("s", "Before the drop.", None)
    h.hub.leave("s", first)
    h.advance(GRACE_MS // 2)
    h.join(publisher=True)  # it reconnected (resume)
    h.advance(2 * GRACE_MS)
    h.hub.tick()
    h.hub.publish_text("s", "After it.", None)
    assert ended(viewer) == []
    assert [m.window for m in viewer.finals()] == [0, 1]  # the same stream goes on


def test_a_viewer_joining_an_ended_stream_is_told_at_once_until_a_publisher_starts_again(h: Harness) -> None:
    first = h.join(publisher=True)
    h.join(CAPTION_TRACK)  # keeps the stream (and its epoch) alive
    h.hub.publish_text("s", "First talk.", None)
    h.hub.end_input("s")
    h.hub.leave("s", first)
    late = h.join(CAPTION_TRACK)
    epoch = h.hub.streams["s"].epoch
    assert late.messages == [Ended(stream="s", reason=ENDED_BY_END, windows=1, epoch=epoch)]
    second = h.join(publisher=True)
    later = h.join(CAPTION_TRACK)
    assert later.messages == []
    h.hub.publish_text("s", "Second talk.", None)
    h.hub.leave("s", second)
    h.advance(GRACE_MS)
    h.hub.tick()
    assert [(type(m).__name__, getattr(m, "window", None)) for m in late.messages] == [
        ("Ended", None),
        ("FinalMsg", 1),
        ("Ended", None),
    ]
    assert ended(late)[-1].reason == ENDED_BY_DISCONNECT
    assert ended(late)[-1].windows == 2
    assert ended(later) == ended(late)[-1:]


def test_no_ended_for_a_stream_that_never_had_a_publisher(h: Harness) -> None:
    viewer = h.join(CAPTION_TRACK)
    h.advance(10 * GRACE_MS)
    h.hub.tick()
    assert viewer.messages == []
