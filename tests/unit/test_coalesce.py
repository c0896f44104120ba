"""The draft coalescing rule both outboxes share (stream/coalesce.py), and that both follow it."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.coalesce import LatestDrafts
from stream.fanout import Outbox
from stream.mqtt.outbox import MqttOutbox
from stream.wire.messages import DraftMsg, FinalMsg
from tests.unit.test_fanout import draft, final


def test_the_newest_draft_of_a_window_takes_the_place_of_its_first() -> None:
    drafts = LatestDrafts()
    drafts.put(draft(0, 0), order=0)
    drafts.put(draft(1, 0), order=1)
    drafts.put(draft(0, 1), order=2)
    drafts.put(draft(0, 2), order=3)
    assert drafts.take() == [(0, draft(0, 2)), (1, draft(1, 0))]
    assert drafts.superseded == 2
    assert len(drafts) == 0


def test_over_the_limit_the_oldest_windows_go_first() -> None:
    drafts = LatestDrafts(limit=2)
    for window in range(4):
        drafts.put(draft(window, 0), order=window)
    drafts.put(draft(3, 1), order=9)  # a newer draft of a kept window evicts nothing
    assert [d for _, d in drafts.take()] == [draft(2, 0), draft(3, 1)]
    assert drafts.evicted == 2
    with pytest.raises(ValueError, match="at least 1"):
        LatestDrafts(limit=0)


SEQUENCE: list[DraftMsg | FinalMsg] = [
    draft(0, 0),
    draft(1, 0),
    draft(0, 1),
    final(1),
    draft(2, 0),
    draft(0, 2),
    draft(2, 1, track="es"),
]


def test_the_viewer_and_the_mqtt_outboxes_keep_the_same_drafts(tmp_path: Path) -> None:
    viewer = Outbox()
    mqtt = MqttOutbox(tmp_path / "spill.jsonl")
    mqtt.connected()
    for message in SEQUENCE:
        viewer.put(message)
        mqtt.put(message)
    viewer_drafts = [m for m in viewer.take() if isinstance(m, DraftMsg)]
    expected = [draft(0, 2), draft(1, 0), draft(2, 0), draft(2, 1, track="es")]  # final(1) left draft(1, 0)
    assert viewer_drafts == mqtt.take_drafts() == expected
