"""What the MQTT bridge still has to publish, and the rules that keep finals exactly once, in order.

Sans-I/O (no sockets, no event loop; the spill file is its only I/O): the bridge's publish loop asks
``next_final()`` / ``take_drafts()`` / ``current()`` / ``languages()`` / ``take_errors()`` what to send
and reports back with ``acked()`` / ``current_published()`` / ``language_published()``,
``connected()`` and ``disconnected()``. Not thread-safe: the bridge touches it on its own thread only,
and publishes ``stats`` snapshots for other threads.

Finals
    A FIFO of pending finals, numbered ``seq`` 1, 2, ... as they are put. A stream's ``ended`` rides in
    the same FIFO (after the stream's last final, exactly once, like a final). The oldest
    ``memory_bound`` are kept in memory; while that many wait, newer ones are appended to a spill file
    (JSON lines) and read back in order as the head drains, so memory stays bounded however long the
    broker is away. One final is in flight at a time: ``next_final()`` hands out the head, and only
    ``acked(seq)`` (the broker's PUBACK) removes it. After ``disconnected()`` the same head is handed
    out again, flagged ``redelivered`` (the broker may or may not have had it); a final that was
    acknowledged is never handed out again. The spill file bounds memory; it is not a journal (finals
    still pending when the process dies are lost), but ``close(keep=True)`` writes every pending final,
    in order, to a file beside it (``kept_path``), and ``restore()`` at the next start queues them again
    ahead of new ones (renumbered; one that had been published without an acknowledgement is still
    flagged ``redelivered``).
Drafts
    Only while connected: the newest draft per (stream, track, window), at most ``max_drafts`` (the
    oldest go first): the coalescing rule every outbox shares (``stream/coalesce.py``). The bridge
    publishes the pending drafts before the next final, so a draft goes out before its own final.
    Drafts of an outage are dropped.
Current
    Per (stream, track), the latest acknowledged final without an error, until it has been published
    (retained) to the track's ``current`` topic.
Languages
    Per stream, the latest ``language`` announcement (``source_lang`` ``auto``), kept across outages
    until it has been published (retained) to the stream's ``language`` topic.
Errors
    Answers to bad input, best effort like drafts.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import IO

from stream.coalesce import LatestDrafts
from stream.errors import LivecanvasStreamError
from stream.wire.messages import SERVER_MESSAGES, DraftMsg, Ended, FinalMsg, LanguageMsg

_TrackKey = tuple[str, str]


class OutboxStateError(LivecanvasStreamError):
    """The bridge called the outbox out of turn (a bug in the caller, never a network condition)."""


@dataclass(frozen=True, slots=True)
class PendingFinal:
    """A final (or a stream's ``ended``) to publish now: its bridge ``seq`` and whether an earlier
    attempt went unacknowledged."""

    seq: int
    final: FinalMsg | Ended
    redelivered: bool


@dataclass(slots=True)
class _Entry:
    seq: int
    final: FinalMsg | Ended
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending_finals: int
    spilled_now: int  # finals waiting in the spill file right now
    spilled_total: int  # finals ever written to the spill file
    acked_total: int
    redelivered_total: int
    drafts_dropped: int


class SpillFile:
    """An append-only file of JSON lines, read back front to back; emptied when everything is read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: IO[str] | None = None
        self._reader: IO[str] | None = None
        self.count = 0  # records written and not yet read

    def append(self, record: dict[str, object]) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self.path.open("w", encoding="utf-8", newline="\n")
            self._reader = self.path.open("r", encoding="utf-8", newline="\n")
        self._writer.write(_line(record))
        self._writer.flush()
        self.count += 1

    def read(self) -> dict[str, object]:
        if self._reader is None or self.count == 0:
            raise OutboxStateError("the spill file has nothing left to read")
        line = self._reader.readline()
        if not line.endswith("\n"):
            raise OutboxStateError(f"spill file {self.path} is truncated")
        record: dict[str, object] = json.loads(line)
        self.count -= 1
        if self.count == 0:
            self.close()  # everything read: start the next outage on an empty file
        return record

    def drain(self) -> list[dict[str, object]]:
        """Every record not read yet, in order; the file is then gone."""
        records = [self.read() for _ in range(self.count)]
        self.close()
        return records

    def close(self) -> None:
        for handle in (self._writer, self._reader):
            if handle is not None:
                handle.close()
        self._writer = self._reader = None
        self.path.unlink(missing_ok=True)
        self.count = 0


def _line(record: dict[str, object]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def _record(entry: _Entry) -> dict[str, object]:
    return {"seq": entry.seq, "final": entry.final.to_wire("json"), "attempts": entry.attempts}


def _entry(record: dict[str, object]) -> _Entry:
    seq, wire, attempts = record["seq"], record["final"], record.get("attempts", 0)
    if not (isinstance(seq, int) and isinstance(wire, dict) and isinstance(attempts, int)):
        raise OutboxStateError(f"not a spilled final: {record!r}")
    kind = SERVER_MESSAGES[str(wire["type"])]
    if kind is not FinalMsg and kind is not Ended:
        raise OutboxStateError(f"not a spilled final: {record!r}")
    return _Entry(seq, kind.from_wire(wire, "json"), attempts)


class MqttOutbox:
    """See the module docstring."""

    def __init__(
        self, spill_path: Path, *, memory_bound: int = 1000, max_drafts: int = 256, max_errors: int = 64
    ) -> None:
        if memory_bound < 1:
            raise ValueError(f"memory_bound must be at least 1, got {memory_bound}")
        self._memory: deque[_Entry] = deque()
        self._memory_bound = memory_bound
        self._spill = SpillFile(spill_path)
        self._next_seq = 1
        self._in_flight = False
        self._connected = False
        self._drafts = LatestDrafts(limit=max_drafts)
        self._draft_order = count()
        self._current: OrderedDict[_TrackKey, FinalMsg] = OrderedDict()
        self._languages: OrderedDict[str, LanguageMsg] = OrderedDict()
        self._errors: deque[tuple[str, dict[str, object]]] = deque(maxlen=max_errors)
        self._spilled_total = 0
        self._acked_total = 0
        self._redelivered_total = 0
        self._drafts_dropped = 0

    # -- input -------------------------------------------------------------------------------------
    def put(self, message: DraftMsg | FinalMsg | Ended | LanguageMsg) -> None:
        if isinstance(message, LanguageMsg):
            self._languages[message.stream] = message
            self._languages.move_to_end(message.stream)
            return
        if isinstance(message, Ended):
            self._put_final(message)
            return
        if isinstance(message, FinalMsg):
            self._put_final(message)
            return
        if not self._connected:
            self._drafts_dropped += 1
            return
        self._drafts.put(message, next(self._draft_order))

    def put_error(self, topic: str, fields: dict[str, object]) -> None:
        if self._connected:
            self._errors.append((topic, fields))

    def _put_final(self, final: FinalMsg | Ended, attempts: int = 0) -> None:
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        entry = _Entry(seq, final, attempts)
        if self._spill.count == 0 and len(self._memory) < self._memory_bound:
            self._memory.append(entry)
        else:
            self._spill.append(_record(entry))
            self._spilled_total += 1

    @property
    def kept_path(self) -> Path:
        """Where ``close(keep=True)`` writes the pending finals: beside the spill file, never the spill
        file itself (which, left by a crash, still holds finals that were delivered)."""
        path = self._spill.path
        return path.with_name(f"{path.stem}.kept{path.suffix}")

    def restore(self) -> int:
        """Queue the finals a previous ``close(keep=True)`` left in the spill file, ahead of any new
        one; returns how many. A last line cut short (the process died while writing it) is skipped."""
        if self._next_seq != 1 or not self.kept_path.exists():
            return 0
        kept = self.kept_path.with_name(self.kept_path.name + ".restoring")
        self.kept_path.replace(kept)
        restored = 0
        with kept.open("r", encoding="utf-8", newline="\n") as lines:
            for line in lines:
                if not line.endswith("\n"):
                    break
                entry = _entry(json.loads(line))
                self._put_final(entry.final, entry.attempts)
                restored += 1
        kept.unlink()
        return restored

    # -- connection --------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._connected

    def connected(self) -> None:
        self._connected = True

    def disconnected(self) -> None:
        """The connection is gone: the final in flight (if any) goes out again, flagged; drafts and error
        answers still waiting are dropped."""
        self._connected = False
        self._in_flight = False
        self._drafts_dropped += self._drafts.clear()
        self._errors.clear()

    # -- output ------------------------------------------------------------------------------------
    def next_final(self) -> PendingFinal | None:
        """The oldest pending final, now in flight until ``acked`` or ``disconnected``; ``None`` if none."""
        if self._in_flight:
            raise OutboxStateError("a final is already in flight: wait for its ack or the disconnect")
        if not self._memory:
            return None
        head = self._memory[0]
        redelivered = head.attempts > 0
        self._redelivered_total += redelivered
        head.attempts += 1
        self._in_flight = True
        return PendingFinal(head.seq, head.final, redelivered)

    def acked(self, seq: int) -> None:
        """The broker acknowledged final ``seq`` (the one in flight): it is never published again."""
        if not self._in_flight or not self._memory or self._memory[0].seq != seq:
            raise OutboxStateError(f"final {seq} is not the one in flight")
        head = self._memory.popleft()
        self._in_flight = False
        self._acked_total += 1
        if isinstance(head.final, FinalMsg) and head.final.error is None:
            key = (head.final.stream, head.final.track)
            self._current[key] = head.final
            self._current.move_to_end(key)
        while self._spill.count and len(self._memory) < self._memory_bound:
            self._memory.append(_entry(self._spill.read()))

    def take_drafts(self) -> list[DraftMsg]:
        return [draft for _, draft in self._drafts.take()]

    def take_errors(self) -> list[tuple[str, dict[str, object]]]:
        errors = list(self._errors)
        self._errors.clear()
        return errors

    def current(self) -> list[FinalMsg]:
        """Latest acknowledged finals whose ``current`` topic is not up to date yet."""
        return list(self._current.values())

    def current_published(self, final: FinalMsg) -> None:
        key = (final.stream, final.track)
        if self._current.get(key) == final:  # a newer one may have arrived meanwhile
            del self._current[key]

    def languages(self) -> list[LanguageMsg]:
        """Language announcements not yet published to their stream's ``language`` topic."""
        return list(self._languages.values())

    def language_published(self, message: LanguageMsg) -> None:
        if self._languages.get(message.stream) == message:  # a newer one may have arrived meanwhile
            del self._languages[message.stream]

    # -- state -------------------------------------------------------------------------------------
    @property
    def pending_finals(self) -> int:
        return len(self._memory) + self._spill.count

    @property
    def idle(self) -> bool:
        """Nothing left to publish (finals, current captions, languages, drafts, error answers)."""
        pending = self._current or self._languages or len(self._drafts) or self._errors
        return not (self.pending_finals or pending)

    @property
    def stats(self) -> OutboxStats:
        return OutboxStats(
            pending_finals=self.pending_finals,
            spilled_now=self._spill.count,
            spilled_total=self._spilled_total,
            acked_total=self._acked_total,
            redelivered_total=self._redelivered_total,
            drafts_dropped=self._drafts_dropped + self._drafts.evicted,
        )

    def close(self, *, keep: bool = False) -> int:
        """The end of the outbox. ``keep``: every pending final (in memory or spilled) is written to the
        spill file, in order, for ``restore()`` at the next start; returns how many. Otherwise the spill
        file is dropped and what it held is lost (the caller logs ``pending_finals`` first)."""
        pending = [_record(entry) for entry in self._memory] + self._spill.drain()
        self._memory.clear()
        self._in_flight = False
        if not keep or not pending:
            return 0
        path = self.kept_path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with partial.open("w", encoding="utf-8", newline="\n") as out:
            out.writelines(_line(record) for record in pending)
        partial.replace(path)  # whole or not at all
        return len(pending)
