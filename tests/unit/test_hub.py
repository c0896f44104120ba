"""The sans-I/O StreamHub: caption finals, one job per language, draft relay, in-order exactly-once finals."""

from __future__ import annotations

import pytest

from engine.prompts import ContextEntry
from engine.types import CAPTION_TRACK, CanvasKey, Draft, Final
from stream.errors import ErrorCode, ProtocolError
from stream.hub import ORPHANED, StreamHub
from stream.stream_state import CONTEXT_WINDOWS
from stream.wire.messages import DraftMsg, FinalMsg
from tests.unit.hub_harness import IDLE_MS, ORPHAN_GRACE_MS, START_NS, Harness


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_caption_final_is_emitted_at_once_for_each_window(h: Harness) -> None:
    publisher = h.join(publisher=True)
    viewer = h.join(CAPTION_TRACK)
    h.advance(200)
    h.hub.publish_text("s", "Hello world. How are", 100)
    assert [(m.window, m.text, m.rev, m.t0_ms, m.latency_ms) for m in viewer.messages] == [
        (0, "Hello world.", 0, 100, 0)
    ]
    assert viewer.messages[0].track == CAPTION_TRACK
    assert viewer.messages[0].error is None
    h.hub.publish_text("s", "you? Fine.", 300)
    assert [(m.window, m.text, m.t0_ms, m.t1_ms) for m in viewer.finals()] == [
        (0, "Hello world.", 100, 100),
        (1, "How are you?", 100, 300),
        (2, "Fine.", 300, 300),
    ]
    assert publisher.messages == []  # the publisher subscribes to nothing
    assert h.jobs == []  # nobody wants a translation


def test_one_job_per_target_language_per_window_however_many_viewers(h: Harness) -> None:
    h.join(publisher=True)
    for _ in range(3):
        h.join("pt")
    h.join("es", "pt")
    h.join("es", CAPTION_TRACK)
    h.join(CAPTION_TRACK)
    h.hub.publish_text("s", "One. Two.", None)
    assert [(job.key, job.source, job.source_lang, job.target_lang) for job in h.jobs] == [
        (CanvasKey("s", "es", 0), "One.", "en", "es"),
        (CanvasKey("s", "pt", 0), "One.", "en", "pt"),
        (CanvasKey("s", "es", 1), "Two.", "en", "es"),
        (CanvasKey("s", "pt", 1), "Two.", "en", "pt"),
    ]
    assert all(job.submitted_ns == START_NS for job in h.jobs)


def test_no_jobs_when_only_the_caption_track_is_subscribed(h: Harness) -> None:
    h.join(CAPTION_TRACK, publisher=True)
    viewer = h.join(CAPTION_TRACK)
    h.hub.publish_text("s", "One. Two. Three.", None)
    assert h.jobs == []
    assert [m.text for m in viewer.finals()] == ["One.", "Two.", "Three."]
    assert h.hub.streams["s"].pending_windows == 0  # nothing waits for the engine


def test_engine_draft_is_relayed_to_viewers_of_that_track_only(h: Harness) -> None:
    h.join(publisher=True)
    pt_a, pt_b, es, caption = h.join("pt"), h.join("pt", "es"), h.join("es"), h.join(CAPTION_TRACK)
    h.hub.publish_text("s", "Good morning.", 40)
    h.advance(120)
    h.draft("pt", 0, "Bom di")
    for viewer in (pt_a, pt_b):
        assert [(m.track, m.window, m.rev, m.text, m.t0_ms, m.latency_ms) for m in viewer.drafts()] == [
            ("pt", 0, 0, "Bom di", 40, 120)
        ]
    assert es.messages == []
    assert caption.drafts() == []
    h.draft("es", 0, "Buenos")
    assert [m.text for m in pt_b.drafts()] == ["Bom di", "Buenos"]
    assert [m.text for m in es.drafts()] == ["Buenos"]
    assert [m.text for m in pt_a.drafts()] == ["Bom di"]


def test_finals_are_released_in_window_order_per_track(h: Harness) -> None:
    h.join(publisher=True)
    pt, es = h.join("pt"), h.join("es")
    h.hub.publish_text("s", "One. Two. Three.", None)
    h.final("pt", 1, "Dois.")
    assert pt.finals() == []  # window 1 waits for window 0
    h.final("es", 0, "Uno.")  # another track is not held up by pt
    assert [(m.window, m.text) for m in es.finals()] == [(0, "Uno.")]
    h.final("pt", 0, "Um.")
    assert [(m.window, m.text) for m in pt.finals()] == [(0, "Um."), (1, "Dois.")]
    h.final("pt", 2, "Três.")
    assert [m.window for m in pt.finals()] == [0, 1, 2]
    assert es.finals("pt") == []


def test_a_final_is_delivered_exactly_once(h: Harness) -> None:
    h.join(publisher=True)
    pt = h.join("pt")
    h.hub.publish_text("s", "One.", None)
    h.final("pt", 0, "Um.")
    h.final("pt", 0, "Um outra vez.")
    assert [m.text for m in pt.finals()] == ["Um."]


def test_a_duplicate_final_of_a_held_window_is_ignored(h: Harness) -> None:
    h.join(publisher=True)
    pt = h.join("pt")
    h.hub.publish_text("s", "One. Two.", None)
    h.draft("pt", 1, "Dois")
    h.final("pt", 1, "Dois.", rev=3)
    h.final("pt", 1, "", error="late duplicate", rev=5)  # the first final of a window is the one
    h.final("pt", 0, "Um.")
    # the hub numbers what it sends: a final's rev is one more than its window's last draft's
    assert [(m.window, m.text, m.rev, m.error) for m in pt.finals()] == [
        (0, "Um.", 0, None),
        (1, "Dois.", 1, None),
    ]


def test_drafts_arriving_after_the_final_are_dropped(h: Harness) -> None:
    h.join(publisher=True)
    pt = h.join("pt")
    h.hub.publish_text("s", "One. Two.", None)
    h.draft("pt", 0, "U", rev=0)
    h.final("pt", 0, "Um.", rev=1)
    h.draft("pt", 0, "stale", rev=0)
    assert [(type(m).__name__, m.window, m.text) for m in pt.messages] == [
        ("DraftMsg", 0, "U"),
        ("FinalMsg", 0, "Um."),
    ]
    # the same holds while a final waits for an earlier window: the engine has settled it
    h.hub.publish_text("s", "Three.", None)
    h.final("pt", 2, "Três.")  # held: window 1 is still open
    h.draft("pt", 2, "stale draft of a settled window")
    assert pt.messages[2:] == []
    h.final("pt", 1, "Dois.")
    assert [(type(m).__name__, m.window, m.text) for m in pt.messages[2:]] == [
        ("FinalMsg", 1, "Dois."),
        ("FinalMsg", 2, "Três."),
    ]


def test_events_for_unknown_streams_and_windows_are_ignored(h: Harness) -> None:
    h.join(publisher=True)
    pt = h.join("pt")
    h.hub.on_engine_events(
        [
            Final(key=CanvasKey("other", "pt", 0), rev=0, text="x", steps=1, tokens=1),
            Draft(key=CanvasKey("s", "pt", 7), rev=0, text="x", steps=1),
            Final(key=CanvasKey("s", "pt", 7), rev=0, text="x", steps=1, tokens=1),
        ]
    )
    assert pt.messages == []


def test_job_context_is_the_previous_committed_pairs_of_the_same_track(h: Harness) -> None:
    h.join(publisher=True)
    h.join("pt", "es")
    h.hub.publish_text("s", "One.", None)
    assert [job.context for job in h.jobs] == [(), ()]
    h.final("pt", 0, "Um.")
    h.final("es", 0, "Uno.")
    h.hub.publish_text("s", "Two.", None)
    assert h.jobs_for("pt")[1].context == (ContextEntry(source="One.", target="Um."),)
    assert h.jobs_for("es")[1].context == (ContextEntry(source="One.", target="Uno."),)
    h.final("pt", 1, "", error="engine failed")  # an error final is not context
    h.final("es", 1, "Dos.")
    h.hub.publish_text("s", "Three.", None)
    assert h.jobs_for("pt")[2].context == (ContextEntry("One.", "Um."),)
    assert h.jobs_for("es")[2].context == (ContextEntry("One.", "Uno."), ContextEntry("Two.", "Dos."))


def test_job_context_keeps_only_the_latest_windows(h: Harness) -> None:
    h.join(publisher=True)
    h.join("pt")
    for index in range(CONTEXT_WINDOWS + 2):
        h.hub.publish_text("s", f"Sentence {index}.", None)
        h.final("pt", index, f"Frase {index}.")
    h.hub.publish_text("s", "Last.", None)
    last = h.jobs_for("pt")[-1]
    assert last.key.window == CONTEXT_WINDOWS + 2
    assert [entry.target for entry in last.context] == [
        f"Frase {i}." for i in range(2, CONTEXT_WINDOWS + 2)
    ]  # oldest first, the newest CONTEXT_WINDOWS of them


def test_context_is_taken_when_the_window_is_committed(h: Harness) -> None:
    h.join(publisher=True)
    h.join("pt")
    h.hub.publish_text("s", "One. Two.", None)  # window 1 committed before window 0 has a final
    assert h.jobs_for("pt")[1].context == ()


def test_when_drained_fires_only_after_every_open_window_is_out(h: Harness) -> None:
    h.join(publisher=True)
    h.join("pt", "es")
    fired: list[str] = []
    h.hub.when_drained("s", lambda: fired.append("idle"))
    assert fired == ["idle"]  # nothing open: at once
    h.hub.publish_text("s", "One. Two.", None)
    h.hub.when_drained("s", lambda: fired.append("a"))
    h.hub.when_drained("s", lambda: fired.append("b"))
    h.final("pt", 0, "Um.")
    h.final("pt", 1, "Dois.")
    h.final("es", 1, "Dos.")  # held behind es window 0
    assert fired == ["idle"]
    h.final("es", 0, "Uno.")
    assert fired == ["idle", "a", "b"]
    h.hub.publish_text("s", "Three.", None)
    h.final("pt", 2, "Três.")
    h.final("es", 2, "Tres.")
    assert fired == ["idle", "a", "b"]  # a waiter fires once


def test_when_drained_on_an_unknown_stream_fires_at_once(h: Harness) -> None:
    fired: list[int] = []
    h.hub.when_drained("nobody-here", lambda: fired.append(1))
    assert fired == [1]


def test_publisher_leave_flushes_its_unfinished_text(h: Harness) -> None:
    publisher = h.join(publisher=True)
    caption, pt = h.join(CAPTION_TRACK), h.join("pt")
    h.hub.publish_text("s", "Done. And then", 10)
    assert [m.text for m in caption.finals()] == ["Done."]
    h.hub.leave("s", publisher)
    assert [(m.window, m.text) for m in caption.finals()] == [(0, "Done."), (1, "And then")]
    assert [(job.key.window, job.source) for job in h.jobs_for("pt")] == [(0, "Done."), (1, "And then")]
    assert h.hub.streams["s"].publisher is None
    h.final("pt", 0, "Feito.")
    h.final("pt", 1, "E depois")
    assert [m.text for m in pt.finals()] == ["Feito.", "E depois"]


def test_a_second_publisher_is_refused_until_the_first_leaves(h: Harness) -> None:
    first = h.join(publisher=True)
    with pytest.raises(ProtocolError) as refused:
        h.join(publisher=True)
    assert refused.value.code == ErrorCode.INVALID_STATE
    assert refused.value.code == "invalid_state"
    assert h.hub.streams["s"].publisher is first
    assert len(h.hub.streams["s"].viewers) == 1  # the refused one was not added
    h.join(CAPTION_TRACK)  # keeps the stream alive across the hand-over
    h.hub.leave("s", first)
    second = h.join(publisher=True)
    assert h.hub.streams["s"].publisher is second


def test_idle_tick_emits_an_unfinished_sentence_after_idle_ms(h: Harness) -> None:
    h.join(publisher=True)
    caption = h.join(CAPTION_TRACK)
    h.advance(1000)
    h.hub.publish_text("s", "and so we waited", None)  # no sentence end: stays buffered
    h.hub.tick()
    assert caption.messages == []
    h.advance(IDLE_MS - 1)
    h.hub.tick()
    assert caption.messages == []
    h.advance(1)
    h.hub.tick()
    assert [(m.window, m.text, m.t0_ms, m.t1_ms) for m in caption.finals()] == [
        (0, "and so we waited", 1000, 1000)
    ]  # t_ms defaults to the stream clock at publish time
    h.advance(10_000)
    h.hub.tick()
    assert len(caption.messages) == 1


def test_latency_is_measured_from_commit_with_the_hub_clock(h: Harness) -> None:
    h.join(publisher=True)
    pt = h.join("pt")
    h.advance(700)
    h.hub.publish_text("s", "One. Two.", None)
    h.advance(80)
    h.draft("pt", 0, "U")
    h.advance(170)
    h.final("pt", 1, "Dois.")  # held until window 0: its latency is its own, taken on arrival
    h.advance(50)
    h.final("pt", 0, "Um.")
    assert [(type(m).__name__, m.window, m.latency_ms) for m in pt.messages] == [
        ("DraftMsg", 0, 80),
        ("FinalMsg", 0, 300),
        ("FinalMsg", 1, 250),
    ]


def test_stream_is_forgotten_when_nobody_is_left_and_nothing_is_pending(h: Harness) -> None:
    publisher = h.join(publisher=True)
    viewer = h.join("pt")
    h.hub.publish_text("s", "One. Unfinished", None)
    h.hub.leave("s", publisher)  # flushes "Unfinished" into window 1
    h.hub.leave("s", viewer)
    assert "s" in h.hub.streams  # both windows still wait for their pt finals
    h.final("pt", 0, "Um.")
    assert "s" in h.hub.streams
    h.final("pt", 1, "Inacabado")
    assert "s" in h.hub.streams  # its publisher dropped: it may still resume, within the grace
    h.advance(ORPHAN_GRACE_MS)
    h.hub.tick()
    assert h.hub.streams == {}
    assert viewer.messages == []  # it left before the finals came
    h.hub.leave("s", viewer)  # leaving a forgotten stream is harmless


def test_stream_without_pending_work_is_forgotten_as_the_last_viewer_leaves(h: Harness) -> None:
    viewer = h.join(CAPTION_TRACK)
    other = h.join("pt", stream="other")
    assert set(h.hub.streams) == {"s", "other"}
    h.hub.leave("s", viewer)
    assert set(h.hub.streams) == {"other"}
    h.hub.leave("other", other)
    assert h.hub.streams == {}


def test_a_new_stream_of_the_same_name_starts_from_window_zero(h: Harness) -> None:
    publisher = h.join(CAPTION_TRACK, publisher=True)
    h.hub.publish_text("s", "One. Two.", None)
    h.hub.leave("s", publisher)
    h.advance(ORPHAN_GRACE_MS)
    h.hub.tick()
    assert h.hub.streams == {}
    again = h.join(CAPTION_TRACK, publisher=True)
    h.hub.publish_text("s", "Three.", None)
    assert [(m.window, m.text) for m in again.finals()] == [(0, "Three.")]


def test_a_publisher_back_within_the_grace_continues_its_stream(h: Harness) -> None:
    """Nothing left to do and nobody watching, but a dropped publisher may resume: its stream is kept
    through the grace, so the windows it publishes next are numbered on, not from 0 again."""
    publisher = h.join(CAPTION_TRACK, publisher=True)
    h.hub.publish_text("s", "One. Two.", None)
    epoch = h.hub.streams["s"].epoch
    h.hub.leave("s", publisher)  # the connection dropped: no end
    h.advance(ORPHAN_GRACE_MS - 1)
    h.hub.tick()
    assert "s" in h.hub.streams
    back = h.join(CAPTION_TRACK, publisher=True)
    h.hub.publish_text("s", "Three.", None)
    assert [(m.window, m.text) for m in back.finals()] == [(2, "Three.")]
    assert h.hub.streams["s"].epoch == epoch


def test_drafts_and_finals_carry_the_epoch_and_the_log_gets_every_final_stamped(h: Harness) -> None:
    publisher = h.join(CAPTION_TRACK, "pt", publisher=True)
    first = h.hub.streams["s"].epoch
    observed: list[DraftMsg | FinalMsg] = []
    h.hub.add_observer(observed.append)
    h.hub.publish_text("s", "One.", None)
    h.draft("pt", 0, "Um")
    h.final("pt", 0, "Um.")
    assert [(type(m).__name__, m.epoch) for m in publisher.messages] == [
        ("FinalMsg", first), ("DraftMsg", first), ("FinalMsg", first),
    ]  # fmt: skip
    assert observed == publisher.messages
    assert [f.number for f in publisher.finals()] == [1, 2]  # stamped once, by the hub's log
    kept = h.hub.finals.transcript("s")
    assert kept is not None
    assert [k.final for k in kept.tracks["pt"].finals] == publisher.finals("pt")
    h.hub.leave("s", publisher)
    h.advance(ORPHAN_GRACE_MS)  # it did not come back
    h.hub.tick()
    assert h.hub.finals.epoch_of("s") == first  # the hub forgot it; the log has not
    again = h.join(CAPTION_TRACK, publisher=True)
    h.hub.publish_text("s", "Two.", None)
    [restarted] = again.finals()
    assert restarted.window == 0
    assert restarted.epoch == h.hub.streams["s"].epoch != first, "a new life of the name, a new epoch"
    assert restarted.number == 3, "resume numbers go on across epochs"


class CancellingHarness(Harness):
    """A harness whose hub also records the engine cancellations it asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled: list[CanvasKey] = []
        self.hub = StreamHub(
            self.jobs.append,
            idle_ms=IDLE_MS,
            clock_ns=lambda: self.now[0],
            cancel=self.cancelled.extend,
            orphan_grace_ms=2000,
        )


def test_a_track_nobody_watches_any_more_is_cancelled_after_the_grace() -> None:
    h = CancellingHarness()
    publisher = h.join(CAPTION_TRACK, publisher=True)
    viewer = h.join("pt", "de")
    other = h.join("de")
    h.hub.publish_text("s", "One. Two. Three.", 0)
    h.hub.flush("s")
    assert {(j.key.track, j.key.window) for j in h.jobs} == {(t, w) for t in ("pt", "de") for w in range(3)}
    h.final("pt", 0, "Um.")
    h.hub.leave("s", viewer)  # pt has nobody now; de still has `other`
    h.advance(1999)
    h.hub.tick()
    assert h.cancelled == []  # within the grace: a reconnect keeps it
    h.advance(1)
    h.hub.tick()
    assert sorted(h.cancelled, key=lambda k: k.window) == [CanvasKey("s", "pt", 1), CanvasKey("s", "pt", 2)]
    kept = h.hub.finals.replay("s", 0, frozenset({"pt"}), 10**9)
    assert [(m.window, m.text, m.error) for m in kept.finals] == [
        (0, "Um.", None),
        (1, "", ORPHANED),
        (2, "", ORPHANED),
    ]  # exactly one final per window, for a client that resumes later
    h.final("pt", 1, "Dois.")  # a result already on its way is ignored
    assert len(h.hub.finals.replay("s", 0, frozenset({"pt"}), 10**9).finals) == 3
    h.advance(10_000)
    h.hub.tick()
    assert len(h.cancelled) == 2  # once only
    assert not [m for m in other.messages if m.track == "pt"]
    assert publisher.finals(CAPTION_TRACK)


def test_a_viewer_back_within_the_grace_keeps_its_track_computed() -> None:
    h = CancellingHarness()
    h.join(publisher=True)
    viewer = h.join("pt")
    h.hub.publish_text("s", "One. Two.", 0)
    h.hub.flush("s")
    h.hub.leave("s", viewer)
    h.advance(1500)
    h.hub.tick()
    back = h.join("pt")  # resumed
    h.advance(10_000)
    h.hub.tick()
    assert h.cancelled == []
    h.final("pt", 0, "Um.")
    h.final("pt", 1, "Dois.")
    assert [m.text for m in back.finals("pt")] == ["Um.", "Dois."]
