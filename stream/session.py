"""One WebSocket connection: the thin asyncio adapter around ``ServerProtocol``, the hub, and the
server's auth, limits and final log (resume).

The reader task feeds frames to the protocol and dispatches the decoded messages; a writer task drains
the connection's ``Outbox`` into the protocol. Every frame goes out through ``_flush``, under one lock,
so frames reach the socket in ``seq`` order whichever task queued them.

Rules enforced here (settings in ``stream.limits.Limits``, docs/operations.md):

* a ``hello`` must be accepted within ``hello_timeout_s``; its token (or the ``Authorization: Bearer``
  header of the upgrade request) must grant the role on the stream. A refused or missing hello gets an
  ``error`` and the socket is closed with 1008;
* sessions per token, target tracks per stream, the text rate (refused with ``rate_limited``) and
  the audio rate (throttled: the reader waits, so TCP pushes back on the publisher);
* a viewer whose outbox overflows is cut off with 1008 (``slow_consumer``), never slowing others;
* ``resume``: for ``RESUME_GRACE_S`` after ``ready`` live drafts and finals are held back, so that
  the finals a resume replays come first and in order (the rules: ``stream/resumption.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Protocol, assert_never

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from stream.admission import Gate, Refusal, admit
from stream.auth import token_from_headers
from stream.errors import CloseCode, ErrorCode, ProtocolError
from stream.fanout import Outbox
from stream.limits import MIN_TEXT_COST, TokenBucket
from stream.resumption import RESUME_GRACE_S, Resumption
from stream.stream_state import Delivery
from stream.wire.messages import (
    Audio,
    ClientMessage,
    End,
    Flush,
    Hello,
    Partial,
    Ready,
    Resume,
    Role,
    StatsMsg,
    Text,
)
from stream.wire.protocol import ServerProtocol, State

if TYPE_CHECKING:
    from engine.cluster.frontend import ClusterModel
    from engine.runtime import ServingModel
    from engine.translator_pool import PooledModel
    from stream.auth import TokenTable
    from stream.config import ServerConfig
    from stream.final_log import FinalLog, SentLog
    from stream.hub import StreamHub
    from stream.limits import SessionCounter
    from stream.metrics import ServerMetrics


logger = logging.getLogger("livecanvas.session")


class SessionHost(Protocol):
    """What a connection uses of its server (``stream.server.LivecanvasServer`` is one): this module
    needs no import of the server, which imports it."""

    config: ServerConfig
    auth: TokenTable | None
    model: ServingModel | ClusterModel | PooledModel | None  # None until the model has loaded
    connections: set[Connection]
    finals: FinalLog
    hub: StreamHub
    metrics: ServerMetrics
    sessions: SessionCounter

    def stats(self) -> dict[str, int | float]: ...


TAKEOVER_BYE_TIMEOUT_S = 2.0  # a taken-over connection's bye may meet a dead peer: then close anyway


class Connection:
    """A connected client; as a hub ``Viewer`` it receives the drafts and finals of its tracks, and the
    stream's ``ended``."""

    def __init__(self, server: SessionHost, websocket: ServerConnection) -> None:
        self.server = server
        self.websocket = websocket
        self.limits = server.config.limits
        self.protocol = ServerProtocol(max_frame_bytes=server.config.max_frame_bytes)
        self._wake = asyncio.Event()
        self.outbox = Outbox(on_ready=self._wake.set, limit=self.limits.max_viewer_backlog)
        self._send_lock = asyncio.Lock()
        self.session_id = uuid.uuid4().hex[:12]
        self.stream: str | None = None
        self.role: Role | None = None
        self._tracks: frozenset[str] = frozenset()
        self._bye_reason: str | None = None
        self._going_away = False
        self._close: tuple[CloseCode, str] | None = None  # close with this once the reader stops
        self._rule: str | None = None  # the token rule this session counts against
        self._resumption: Resumption | None = None  # from an accepted hello on
        self._hold_timer: asyncio.TimerHandle | None = None
        self._slow = False
        self._parked = False
        self._coalesced = 0
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        now = time.monotonic()
        self._audio = TokenBucket(self.limits.audio_bytes_per_s, self.limits.audio_burst_bytes, now)
        self._text = TokenBucket(self.limits.max_text_chars_per_s, self.limits.text_burst_chars, now)
        request = websocket.request
        headers = {k.lower(): v for k, v in request.headers.raw_items()} if request is not None else {}
        self._header_token = token_from_headers(headers)

    # -- Viewer ------------------------------------------------------------------------------------
    @property
    def tracks(self) -> frozenset[str]:
        return self._tracks

    @property
    def _holding(self) -> bool:
        return self._resumption is not None and self._resumption.holding

    def deliver(self, message: Delivery) -> None:
        if self._slow:
            return
        self.outbox.put(message)
        if self.outbox.overflowed and not self._holding:  # a hold is short: it may take a burst
            self._too_slow()

    @property
    def authenticated(self) -> bool:
        return self.stream is not None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def run(self) -> None:
        self._writer = writer = asyncio.create_task(self._write_loop(), name=f"writer-{self.session_id}")
        deadline = asyncio.get_running_loop().time() + self.limits.hello_timeout_s
        try:
            while self._close is None and not self._slow and not writer.done():
                if self.protocol.state is State.AWAITING_HELLO:
                    try:
                        async with asyncio.timeout_at(deadline):
                            frame = await self.websocket.recv()
                    except TimeoutError:
                        self.server.metrics.auth_failures.labels(ErrorCode.HELLO_TIMEOUT).inc()
                        self._refuse(
                            ErrorCode.HELLO_TIMEOUT,
                            f"no hello accepted within {self.limits.hello_timeout_s:g} s",
                            CloseCode.POLICY,
                        )
                        await self._flush()
                        break
                else:
                    frame = await self.websocket.recv()
                await self._receive(frame)
            if self._close is not None:
                await self.websocket.close(*self._close)
        except ConnectionClosed:
            pass
        finally:
            self._leave()
            if self._hold_timer is not None:
                self._hold_timer.cancel()
            if not writer.done():
                # a clean end waits for the bye to go out; a vanished client does not
                if self._bye_reason is not None and self.websocket.state.name == "OPEN":
                    await asyncio.wait({writer}, timeout=self.server.config.drain_timeout_s)
                writer.cancel()

    async def _receive(self, frame: str | bytes) -> None:
        self.protocol.receive_frame(frame)
        for message in self.protocol.events_received():
            if isinstance(message, Audio) and self.server.hub.accepts_audio:
                await self._throttle_audio(len(message.pcm))
            if self._slow:
                break  # cut off: what it still sends is not taken
            self._dispatch(message)
            if self._close is not None:
                break
        if self._close is None and len(self.protocol.errors) >= self.limits.max_errors:
            self.server.metrics.limit_hits.labels("errors").inc()
            self._refuse(
                ErrorCode.TOO_MANY_ERRORS, f"{len(self.protocol.errors)} bad messages", CloseCode.POLICY
            )
        await self._flush()
        if len(self.outbox):
            await asyncio.sleep(0)  # let the writer drain what this frame produced before the next one

    async def _throttle_audio(self, size: int) -> None:
        """Audio faster than ``max_audio_speed`` x real time waits here; TCP then slows the sender."""
        delay = self._audio.take(size, time.monotonic())
        if delay > 0:
            self.server.metrics.audio_throttled.inc(delay)
            await asyncio.sleep(delay)

    def say_goodbye(self, reason: str, *, going_away: bool = False) -> None:
        """Send ``bye`` once everything queued before it has gone out, then close (1001 if
        ``going_away``: the server is shutting down, else 1000)."""
        if self._bye_reason is None:
            self._bye_reason = reason
            self._going_away = going_away
            self._release_hold()
            self._wake.set()

    def take_over(self) -> SentLog | None:
        """Another connection resumes this session: stop delivering, park nothing, close (1001); what
        this one was sent."""
        if self.stream is None or self._resumption is None:
            return None
        sent = self._resumption.sent
        self._parked = True  # its log goes to the new connection, not to the final log
        self._slow = True  # no more deliveries
        self._leave()
        self.outbox.take()  # never sent here: the new connection replays what this one was not sent
        if self._writer is not None:
            self._writer.cancel()
        reason = "session resumed on another connection"
        self._closer = asyncio.get_running_loop().create_task(self._bye_and_close(reason))
        return sent

    async def _bye_and_close(self, reason: str) -> None:
        """``bye`` (best effort: the peer may be gone), then a going-away close (1001)."""
        if self.protocol.state is not State.CLOSED:
            self.protocol.finish(reason)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush(), TAKEOVER_BYE_TIMEOUT_S)
        await self.websocket.close(CloseCode.GOING_AWAY, reason[:120])

    def _leave(self) -> None:
        if self.stream is not None:
            self.server.hub.leave(self.stream, self)
            if self._resumption is not None and not self._parked:
                self._parked = True
                self.server.finals.park(self.session_id, self.stream, self._resumption.sent)
        if self._rule is not None:
            self.server.sessions.close(self._rule)
            self._rule = None

    def _refuse(self, code: ErrorCode, message: str, close: CloseCode) -> None:
        """Answer with an ``error`` and close the connection after it."""
        if self.protocol.state is not State.CLOSED:
            self.protocol.reject(code, message)
        self._close = (close, f"{code}: {message}"[:120])
        logger.info("session %s refused: %s: %s", self.session_id, code, message)

    def _close_soon(self, code: CloseCode, reason: str) -> None:
        if self._writer is not None:
            self._writer.cancel()
        self._closer = asyncio.get_running_loop().create_task(self.websocket.close(code, reason[:120]))

    def _too_slow(self) -> None:
        self._slow = True
        self.server.metrics.limit_hits.labels("viewer_backlog").inc()
        logger.warning(
            "session %s: more than %d messages waiting; disconnecting a viewer that cannot keep up",
            self.session_id,
            self.limits.max_viewer_backlog,
        )
        self.outbox.take()
        asyncio.get_running_loop().call_soon(self._leave)  # not while the hub is broadcasting
        self._close_soon(
            CloseCode.POLICY, f"{ErrorCode.SLOW_CONSUMER}: more than {self.limits.max_viewer_backlog} waiting"
        )

    # -- incoming ----------------------------------------------------------------------------------
    def _dispatch(self, message: ClientMessage) -> None:
        hub = self.server.hub
        if not isinstance(message, Hello | Resume):
            self._release_hold()
        match message:
            case Hello():
                self._hello(message)
            case Text():
                assert self.stream is not None
                if self._text.try_take(max(len(message.segment), MIN_TEXT_COST), time.monotonic()):
                    try:
                        hub.publish_text(self.stream, message.segment, message.t_ms)
                    except ProtocolError as error:  # e.g. text on a source_lang auto stream
                        self.protocol.reject(ErrorCode(error.code), error.message, ref="text")
                else:
                    self.server.metrics.limit_hits.labels("text_rate").inc()
                    self.protocol.reject(
                        ErrorCode.RATE_LIMITED,
                        f"text faster than {self.limits.max_text_chars_per_s:g} characters/s; "
                        "this segment was not taken, send it again later",
                        ref="text",
                    )
            case Partial():
                assert self.stream is not None
                if self._text.try_take(max(len(message.segment), MIN_TEXT_COST), time.monotonic()):
                    try:
                        hub.publish_partial(self.stream, message.segment, message.t_ms)
                    except ProtocolError as error:
                        self.protocol.reject(ErrorCode(error.code), error.message, ref="partial")
                else:  # a newer partial will follow: this one is simply not shown
                    self.server.metrics.limit_hits.labels("text_rate").inc()
            case Flush():
                assert self.stream is not None
                hub.flush(self.stream)
            case End():
                assert self.stream is not None
                if self.role is Role.PUBLISH:
                    hub.end_input(self.stream)
                    hub.when_drained(self.stream, lambda: self.say_goodbye("end"))
                else:
                    self.say_goodbye("end")
            case Audio():
                assert self.stream is not None
                if hub.accepts_audio:
                    hub.publish_audio(self.stream, message.pcm)
                else:
                    self.protocol.reject(
                        ErrorCode.UNSUPPORTED,
                        "speech recognition is off on this server; send text",
                        ref="audio",
                    )
            case Resume():
                self._resume(message)
            case _:
                assert_never(message)

    def _hello(self, hello: Hello) -> None:
        server = self.server
        gate = Gate(server.auth, server.hub, server.sessions, self.limits, server.metrics)
        admitted = admit(gate, hello, self, header_token=self._header_token, model=server.model)
        if isinstance(admitted, Refusal):
            if admitted.close is not None:
                self._refuse(admitted.code, admitted.message, admitted.close)
            else:
                self.protocol.reject(admitted.code, admitted.message, ref="hello")
            return
        state, tracks, rule_name = admitted.stream, admitted.tracks, admitted.rule
        self._rule = rule_name
        self.stream, self.role, self._tracks = hello.stream, hello.role, tracks
        self._resumption = Resumption(
            self.outbox, server.finals, hello.stream, tracks, capacity=self.limits.history_finals
        )
        self._hold_timer = asyncio.get_running_loop().call_later(RESUME_GRACE_S, self._release_hold)
        ready = Ready(
            session=self.session_id, stream=hello.stream, role=hello.role, tracks=tuple(sorted(tracks)),
            epoch=state.epoch,
        )  # fmt: skip
        self.protocol.accept(ready)
        logger.info(
            "session %s: %s on %r, tracks %s, token %r",
            self.session_id,
            hello.role,
            hello.stream,
            sorted(tracks),
            rule_name,
        )

    def _resume(self, message: Resume) -> None:
        resumption = self._resumption
        assert resumption is not None
        metrics = self.server.metrics
        outcome = resumption.resume(message, self.session_id, self.server.connections)
        if not outcome.known:
            metrics.resumes.labels("unknown").inc()
            self.protocol.reject(
                ErrorCode.RESUME_UNKNOWN,
                "no session to resume (give the session of the old ready; it may have expired): "
                "live updates follow",
                ref="resume",
            )
        else:
            if not outcome.complete:
                self.protocol.reject(
                    ErrorCode.RESUME_GAP,
                    "some finals missed since the last seq are no longer kept; the kept ones follow",
                    ref="resume",
                )
            for final in outcome.replay:
                self.protocol.send(final)
                resumption.record(self.protocol.last_seq, final)
            metrics.resumes.labels("complete" if outcome.complete else "gap").inc()
            metrics.replayed_finals.inc(len(outcome.replay))
        self._release_hold()

    def _release_hold(self) -> None:
        if self._resumption is not None and self._resumption.release():
            if self._hold_timer is not None:
                self._hold_timer.cancel()
            if self.protocol.state is not State.CLOSED:
                self._send_pending()  # what the hold gathered is on its way: it does not count as backlog
            self._wake.set()

    # -- outgoing ----------------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._holding:
                self._send_pending()
            if (
                self._bye_reason is not None
                and not len(self.outbox)
                and self.protocol.state is not State.CLOSED
            ):
                if self.protocol.state is not State.AWAITING_HELLO:
                    self.protocol.send(StatsMsg(values=self.server.stats()))
                self.protocol.finish(self._bye_reason)
            await self._flush()
            if self.protocol.state is State.CLOSED:
                code = CloseCode.GOING_AWAY if self._going_away else CloseCode.NORMAL
                await self.websocket.close(code, self._bye_reason or "bye")
                return

    def _send_pending(self) -> None:
        resumption = self._resumption
        for message in self.outbox.take():
            if resumption is not None and not resumption.due(message):
                continue  # seen on the session this one resumed
            self.protocol.send(message)
            if resumption is not None:
                resumption.record(self.protocol.last_seq, message)
        coalesced = self.outbox.drafts_coalesced - self._coalesced
        if coalesced:
            self._coalesced = self.outbox.drafts_coalesced
            self.server.metrics.drafts_coalesced.inc(coalesced)

    async def _flush(self) -> None:
        async with self._send_lock:
            for frame in self.protocol.data_to_send():
                await self.websocket.send(frame)
