"""The MQTT bridge's sans-I/O outbox: finals in order, spilled past the bound, acked ones never resent."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.mqtt.outbox import MqttOutbox, OutboxStateError, SpillFile
from stream.wire.messages import DraftMsg, Ended, FinalMsg, LanguageMsg


def final(window: int, *, track: str = "pt", stream: str = "s", error: str | None = None) -> FinalMsg:
    return FinalMsg(
        stream=stream, track=track, window=window, rev=3, text=f"{track} {window} ✓", t0_ms=window * 10,
        t1_ms=window * 10 + 5, latency_ms=7, error=error,
    )  # fmt: skip


def draft(window: int, rev: int, *, track: str = "pt") -> DraftMsg:
    return DraftMsg(
        stream="s", track=track, window=window, rev=rev, text=f"d{window}.{rev}", t0_ms=0, t1_ms=0,
        latency_ms=1,
    )  # fmt: skip


def deliver_all(outbox: MqttOutbox) -> list[tuple[int, FinalMsg | Ended, bool]]:
    delivered = []
    while (pending := outbox.next_final()) is not None:
        delivered.append((pending.seq, pending.final, pending.redelivered))
        outbox.acked(pending.seq)
    return delivered


def test_finals_are_numbered_and_delivered_in_order(tmp_path: Path) -> None:
    outbox = MqttOutbox(tmp_path / "spill.jsonl", memory_bound=10)
    for window in range(5):
        outbox.put(final(window))
    assert outbox.pending_finals == 5
    delivered = deliver_all(outbox)
    assert [(seq, f.window, again) for seq, f, again in delivered] == [(i + 1, i, False) for i in range(5)]
    assert outbox.pending_finals == 0
    assert outbox.stats.acked_total == 5
    assert outbox.stats.spilled_total == 0
    assert not (tmp_path / "spill.jsonl").exists()


def test_past_the_bound_finals_spill_to_disk_and_come_back_in_order(tmp_path: Path) -> None:
    spill = tmp_path / "spill" / "finals.jsonl"
    outbox = MqttOutbox(spill, memory_bound=3)
    for window in range(10):
        outbox.put(final(window, track="pt" if window % 2 else "caption"))
    assert outbox.stats.spilled_now == 7
    assert len(spill.read_text(encoding="utf-8").splitlines()) == 7  # JSON lines, one per final
    assert outbox.pending_finals == 10
    delivered = deliver_all(outbox)
    assert [f.window for _, f, _ in delivered] == list(range(10))
    assert [seq for seq, _, _ in delivered] == list(range(1, 11))
    assert delivered[9][1] == final(9, track="pt")  # survives the round trip through the file unchanged
    assert outbox.stats.spilled_total == 7
    assert not spill.exists(), "an emptied spill file is removed"
    # a later outage starts a fresh file
    for window in range(10, 15):
        outbox.put(final(window))
    assert outbox.stats.spilled_now == 2
    assert [f.window for _, f, _ in deliver_all(outbox)] == list(range(10, 15))


def test_the_final_in_flight_at_a_disconnect_goes_again_flagged_and_acked_ones_never(tmp_path: Path) -> None:
    outbox = MqttOutbox(tmp_path / "spill.jsonl", memory_bound=2)
    outbox.connected()
    for window in range(4):
        outbox.put(final(window))
    first = outbox.next_final()
    assert first is not None
    outbox.acked(first.seq)
    second = outbox.next_final()
    assert second is not None
    assert (second.seq, second.redelivered) == (2, False)
    outbox.disconnected()  # no PUBACK for seq 2: the broker may or may not have it
    outbox.connected()
    again = outbox.next_final()
    assert again is not None
    assert (again.seq, again.final.window, again.redelivered) == (2, 1, True)
    outbox.acked(again.seq)
    rest = deliver_all(outbox)
    assert [(seq, again) for seq, _, again in rest] == [(3, False), (4, False)]
    assert outbox.stats.redelivered_total == 1
    with pytest.raises(OutboxStateError):
        outbox.acked(1)  # acked long ago: never in flight again


def test_one_final_in_flight_at_a_time(tmp_path: Path) -> None:
    outbox = MqttOutbox(tmp_path / "spill.jsonl")
    outbox.put(final(0))
    outbox.put(final(1))
    pending = outbox.next_final()
    assert pending is not None
    with pytest.raises(OutboxStateError):
        outbox.next_final()
    with pytest.raises(OutboxStateError):
        outbox.acked(pending.seq + 1)


@settings(max_examples=60, deadline=None)
@given(
    bound=st.integers(min_value=1, max_value=6),
    script=st.lists(st.sampled_from(["put", "send", "ack", "drop"]), max_size=80),
)
def test_any_interleaving_delivers_every_final_once_acked_in_order(
    tmp_path_factory: pytest.TempPathFactory, bound: int, script: list[str]
) -> None:
    outbox = MqttOutbox(tmp_path_factory.mktemp("spill") / "f.jsonl", memory_bound=bound)
    outbox.connected()
    put = 0
    acked: list[int] = []
    in_flight: int | None = None
    for step in [*script, "ack"]:
        if step == "put":
            outbox.put(final(put))
            put += 1
        elif step == "send" and in_flight is None:
            pending = outbox.next_final()
            in_flight = None if pending is None else pending.seq
        elif step == "ack" and in_flight is not None:
            outbox.acked(in_flight)
            acked.append(in_flight)
            in_flight = None
        elif step == "drop":
            outbox.disconnected()
            outbox.connected()
            in_flight = None
    acked += [seq for seq, _, _ in deliver_all(outbox)]
    assert acked == list(range(1, put + 1))
    assert outbox.pending_finals == 0


def test_drafts_coalesce_are_bounded_and_dropped_while_disconnected(tmp_path: Path) -> None:
    outbox = MqttOutbox(tmp_path / "spill.jsonl", max_drafts=2)
    outbox.put(draft(0, 0))
    assert outbox.take_drafts() == [], "disconnected: drafts are not kept"
    outbox.connected()
    outbox.put(draft(0, 0))
    outbox.put(draft(0, 1))
    outbox.put(draft(1, 0))
    assert outbox.take_drafts() == [draft(0, 1), draft(1, 0)]
    outbox.put(draft(2, 0))
    outbox.put(draft(3, 0))
    outbox.put(draft(4, 0))  # over max_drafts: the oldest goes
    outbox.put(final(3))  # its draft stays, to go out before it
    assert outbox.take_drafts() == [draft(3, 0), draft(4, 0)]
    outbox.put(draft(5, 0))
    outbox.disconnected()
    assert outbox.take_drafts() == []
    assert outbox.stats.drafts_dropped == 3  # one before connecting, one over the bound, one at the drop


def test_current_caption_follows_acknowledged_finals_without_errors(tmp_path: Path) -> None:
    outbox = MqttOutbox(tmp_path / "spill.jsonl")
    outbox.connected()
    outbox.put(final(0))
    outbox.put(final(0, track="caption"))
    outbox.put(final(1))
    outbox.put(final(2, error="engine failed"))
    assert outbox.current() == []  # nothing acknowledged yet
    deliver_all(outbox)
    assert outbox.current() == [final(0, track="caption"), final(1)]
    outbox.current_published(final(0, track="caption"))
    outbox.current_published(final(0))  # stale: the track has a newer one
    assert outbox.current() == [final(1)]
    assert not outbox.idle
    outbox.current_published(outbox.current()[0])
    assert outbox.idle


def test_error_answers_are_best_effort(tmp_path: Path) -> None:
    outbox = MqttOutbox(tmp_path / "spill.jsonl")
    outbox.put_error("p/s/error", {"code": "bad_field"})
    assert outbox.take_errors() == []
    outbox.connected()
    outbox.put_error("p/s/error", {"code": "bad_field"})
    assert outbox.take_errors() == [("p/s/error", {"code": "bad_field"})]


def test_spill_file_refuses_to_read_past_its_end(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "x.jsonl")
    spill.append({"a": 1})
    assert spill.read() == {"a": 1}
    with pytest.raises(OutboxStateError):
        spill.read()


def test_close_discards_the_spill_file(tmp_path: Path) -> None:
    outbox = MqttOutbox(tmp_path / "spill.jsonl", memory_bound=1)
    outbox.put(final(0))
    outbox.put(final(1))
    assert (tmp_path / "spill.jsonl").exists()
    outbox.close()
    assert not (tmp_path / "spill.jsonl").exists()


def test_a_streams_ended_follows_its_finals_once_even_through_the_spill_file(tmp_path: Path) -> None:
    outbox = MqttOutbox(tmp_path / "spill.jsonl", memory_bound=1)
    ended = Ended(stream="s", reason="end", windows=2, epoch="e1")
    for message in (final(0), final(1), ended, final(0, stream="t")):
        outbox.put(message)
    assert outbox.stats.spilled_now == 3  # the ended among them, read back as an Ended
    delivered = deliver_all(outbox)
    assert [seq for seq, _, _ in delivered] == [1, 2, 3, 4]
    assert delivered[2][1] == ended
    assert [(m.stream, m.track) for _, m, _ in delivered if isinstance(m, FinalMsg)] == [
        ("s", "pt"),
        ("s", "pt"),
        ("t", "pt"),
    ]
    assert [f.stream for f in outbox.current()] == ["s", "t"]  # an ended is no caption


def test_close_keeping_writes_every_pending_final_and_restore_queues_them_first(tmp_path: Path) -> None:
    spill = tmp_path / "finals.jsonl"
    outbox = MqttOutbox(spill, memory_bound=2)
    outbox.connected()
    for window in range(5):  # two in memory, three spilled
        outbox.put(final(window))
    head = outbox.next_final()
    assert head is not None
    outbox.acked(head.seq)  # window 0 reached the broker
    outbox.next_final()  # window 1 is in flight when the broker goes
    outbox.disconnected()
    assert outbox.close(keep=True) == 4
    assert not spill.exists()
    assert outbox.kept_path == tmp_path / "finals.kept.jsonl"
    assert len(outbox.kept_path.read_text(encoding="utf-8").splitlines()) == 4

    later = MqttOutbox(spill, memory_bound=2)
    assert later.restore() == 4
    later.put(final(0, stream="new"))
    later.connected()
    delivered = deliver_all(later)
    assert [(f.stream, f.window, again) for _, f, again in delivered] == [
        ("s", 1, True),  # published once, never acknowledged: flagged
        ("s", 2, False),
        ("s", 3, False),
        ("s", 4, False),
        ("new", 0, False),
    ]
    assert [seq for seq, _, _ in delivered] == [1, 2, 3, 4, 5]
    assert not spill.exists()
    assert not list(tmp_path.iterdir())


def test_restore_skips_a_line_cut_short_and_close_without_keep_keeps_nothing(tmp_path: Path) -> None:
    spill = tmp_path / "finals.jsonl"
    outbox = MqttOutbox(spill)
    outbox.put(final(0))
    outbox.put(final(1))
    assert outbox.close(keep=True) == 2
    kept = outbox.kept_path
    kept.write_text(kept.read_text(encoding="utf-8")[:-5], encoding="utf-8")  # cut short
    later = MqttOutbox(spill)
    assert later.restore() == 1
    assert later.close() == 0
    assert not list(tmp_path.iterdir())
    assert MqttOutbox(spill).restore() == 0


def test_the_latest_language_of_each_stream_is_kept_until_published(tmp_path: Path) -> None:
    outbox = MqttOutbox(tmp_path / "spill.jsonl")
    spanish = LanguageMsg(stream="a", language="es", probability=0.9)
    outbox.put(LanguageMsg(stream="a", language="pt", probability=0.4))
    outbox.put(LanguageMsg(stream="b", language="fr", probability=0.8))
    outbox.put(spanish)  # a newer announcement for stream a replaces the older one
    assert not outbox.idle
    assert [m.stream for m in outbox.languages()] == ["b", "a"]
    outbox.connected()
    outbox.disconnected()  # kept across an outage: retained state, like current captions
    assert outbox.languages()[1] == spanish
    outbox.language_published(LanguageMsg(stream="a", language="pt", probability=0.4))  # not the pending one
    assert len(outbox.languages()) == 2
    for message in outbox.languages():
        outbox.language_published(message)
    assert outbox.languages() == []
    assert outbox.idle
