"""The per-connection Outbox: order kept, drafts coalesced per window, finals never dropped."""

from __future__ import annotations

from stream.fanout import Outbox
from stream.wire.messages import Bye, DraftMsg, ErrorMsg, FinalMsg, ServerMessage, StatsMsg


def draft(window: int, rev: int, *, track: str = "pt", stream: str = "s") -> DraftMsg:
    return DraftMsg(
        stream=stream, track=track, window=window, rev=rev, text=f"{track}{window}r{rev}",
        t0_ms=0, t1_ms=0, latency_ms=rev,
    )  # fmt: skip


def final(window: int, *, track: str = "pt", stream: str = "s", error: str | None = None) -> FinalMsg:
    return FinalMsg(
        stream=stream, track=track, window=window, rev=9, text=f"{track}{window}final",
        t0_ms=0, t1_ms=0, latency_ms=0, error=error,
    )  # fmt: skip


def test_messages_come_out_in_the_order_they_were_put() -> None:
    outbox = Outbox()
    messages: list[ServerMessage] = [
        final(0),
        ErrorMsg(code="overloaded", message="slow down"),
        draft(1, 0),
        StatsMsg(values={"forwards": 3}),
        final(0, track="es"),
        Bye(reason="end"),
    ]
    for message in messages:
        outbox.put(message)
    assert len(outbox) == len(messages)
    assert outbox.take() == messages
    assert len(outbox) == 0
    assert outbox.take() == []
    assert outbox.drafts_coalesced == 0


def test_a_newer_draft_replaces_the_queued_one_in_place() -> None:
    outbox = Outbox()
    outbox.put(draft(0, 0))
    outbox.put(final(7, track="es"))
    outbox.put(draft(1, 0))
    outbox.put(draft(0, 1))
    outbox.put(draft(0, 2))
    assert outbox.take() == [draft(0, 2), final(7, track="es"), draft(1, 0)]
    assert outbox.drafts_coalesced == 2


def test_a_draft_after_take_is_queued_afresh() -> None:
    outbox = Outbox()
    outbox.put(draft(0, 0))
    assert outbox.take() == [draft(0, 0)]
    outbox.put(final(3))
    outbox.put(draft(0, 1))
    assert outbox.take() == [final(3), draft(0, 1)]
    assert outbox.drafts_coalesced == 0


def test_a_final_leaves_the_queued_draft_of_its_window_to_go_out_before_it() -> None:
    outbox = Outbox()
    outbox.put(draft(0, 0))
    outbox.put(draft(1, 0))
    outbox.put(draft(0, 1))
    outbox.put(final(0))  # queued in the same turn as its draft: the draft is not stale to this viewer
    assert outbox.take() == [draft(0, 1), draft(1, 0), final(0)]
    assert outbox.drafts_coalesced == 1


def test_finals_are_never_dropped_or_coalesced() -> None:
    outbox = Outbox()
    finals = [final(0), final(0), final(0, error="engine failed"), final(1)]
    for message in finals:
        outbox.put(message)
    assert outbox.take() == finals
    assert outbox.drafts_coalesced == 0


def test_a_final_with_nothing_queued_for_its_window_counts_nothing() -> None:
    outbox = Outbox()
    outbox.put(draft(0, 0, track="es"))
    outbox.put(draft(0, 0, stream="other"))
    outbox.put(final(0))
    assert outbox.take() == [draft(0, 0, track="es"), draft(0, 0, stream="other"), final(0)]
    assert outbox.drafts_coalesced == 0


def test_drafts_of_different_windows_tracks_or_streams_do_not_coalesce() -> None:
    outbox = Outbox()
    drafts = [draft(0, 0), draft(1, 0), draft(0, 0, track="es"), draft(0, 0, stream="other")]
    for message in drafts:
        outbox.put(message)
    assert outbox.take() == drafts
    assert outbox.drafts_coalesced == 0


def test_on_ready_is_called_for_every_put() -> None:
    calls: list[int] = []
    outbox = Outbox(on_ready=lambda: calls.append(len(outbox)))
    outbox.put(draft(0, 0))
    outbox.put(draft(0, 1))  # coalesced: still something pending to wake the writer for
    outbox.put(final(0))
    assert calls == [1, 1, 2]  # called after the message is queued
    outbox.take()
    outbox.put(Bye(reason="end"))
    assert calls == [1, 1, 2, 1]


def test_drafts_coalesced_accumulates_across_takes() -> None:
    outbox = Outbox()
    for rev in range(4):
        outbox.put(draft(0, rev))
    assert outbox.take() == [draft(0, 3)]
    outbox.put(draft(2, 0))
    outbox.put(draft(2, 1))
    outbox.put(final(2))
    assert outbox.take() == [draft(2, 1), final(2)]
    assert outbox.drafts_coalesced == 4


def test_with_coalescing_paused_every_draft_is_kept_in_order_and_nothing_counts() -> None:
    outbox = Outbox()
    outbox.coalesce = False  # a connection holding messages back for its resume grace
    held: list[ServerMessage] = [draft(0, 0), draft(0, 1), final(0), draft(1, 0)]
    for message in held:
        outbox.put(message)
    assert outbox.take() == held
    assert outbox.drafts_coalesced == 0
    outbox.coalesce = True  # live again: a viewer behind gets the newest draft only
    outbox.put(draft(2, 0))
    outbox.put(draft(2, 1))
    assert outbox.take() == [draft(2, 1)]
    assert outbox.drafts_coalesced == 1
