"""The livecanvas server: a websockets server on the running event loop, the stream hub, and the
engine worker thread that owns the model (one thread per model when ``--translator`` adds some).

Start-up loads the model on the worker thread (the loop stays free) and only then listens. Shutdown
refuses new WebSocket sessions (HTTP 503 ``draining``) while plain HTTP, ``/healthz`` included, keeps
answering, closes every publisher's open text into windows, waits up to ``drain_timeout_s`` for
their finals, says ``bye`` to every connection, stops listening, gives the MQTT bridge (when
configured, stream/mqtt/bridge.py; its broker connection runs on a thread and event loop of its own, never on
this loop) up to its flush timeout to deliver pending finals, and stops the worker.

Plain HTTP GETs on the same port (the overlay and viewer pages, the stream list, caption downloads,
``/healthz`` and ``/metrics``) are answered in the handshake's ``process_request`` hook by
``stream.web.HttpSite``.

The server also owns what its connections share: the token table (``config.auth``; ``None`` means no
authentication), the per-token session counter, the log of every stream's finals
(``stream.final_log.FinalLog``: stamped by the hub, read by resume and by the HTTP side) and the
Prometheus metrics (``stream.metrics``). WebSocket upgrades beyond
``limits.max_sessions`` open connections are answered with HTTP 503. A shutdown that outlasts its
deadline gives the windows still open an error final, so no viewer misses one; every connection then
gets ``bye`` and a going-away close (1001).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from http import HTTPStatus
from typing import TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from engine.asr import Asr, AsrRequest
from engine.asr_worker import AsrWorker
from engine.audio import SpeechDetector
from engine.cluster.frontend import ClusterModel, RayAsrWorker, RayEngineWorker
from engine.cluster.replicas import RecogniserInfo
from engine.cluster.spec import ray_spec
from engine.language_id import AUTO, AutoLanguageTranscriber
from engine.recognisers import load_recogniser
from engine.runtime import ServingModel, load_model
from engine.segment_transcriber import SegmentSettings, SegmentTranscriber, pause_detector
from engine.speech_translation import SpeechTranslation
from engine.transcriber import LiveTranscriber, Transcriber, TranscriberSettings
from engine.translator_pool import PooledModel, TranslatorPool
from engine.types import Word
from engine.user_translator import TranslatorSpec, load_user_translator
from engine.worker import EngineEvent, EngineWorker
from stream.config import ServerConfig
from stream.draft_display import DraftDisplay
from stream.errors import ErrorCode
from stream.final_log import FinalLog
from stream.hub import StreamHub
from stream.limits import SessionCounter
from stream.metrics import ServerMetrics, Snapshot
from stream.mqtt.bridge import MqttBridge
from stream.session import Connection
from stream.speech_tracks import from_speech
from stream.stream_state import Delivery
from stream.web import HttpSite, is_upgrade, text_reply, to_response
from stream.wire.messages import DraftMsg, FinalMsg

logger = logging.getLogger("livecanvas.server")
_T = TypeVar("_T")

TICK_S = 0.1  # how often idle text is checked for windows
FRAME_SIZE_HEADROOM = 4  # websockets itself refuses frames over this multiple of our own limit


def _default_engine_threads(config: ServerConfig) -> int | None:
    """With speech recognition on, the translator gets half the cores and whisper the rest: two thread
    pools that each want every core starve the recogniser, and captions then lose their live drafts."""
    return max(1, (os.cpu_count() or 2) // 2) if config.asr else None


class LivecanvasServer:
    """See the module docstring. ``async with LivecanvasServer(config) as server`` runs it."""

    def __init__(self, config: ServerConfig, *, load: Callable[[], ServingModel] | None = None) -> None:
        self.config = config
        self._load = load or (
            lambda: load_model(
                config.model,
                device=config.device,
                dtype=config.dtype,
                seed=config.seed,
                sampler=config.sampler,
                int8=config.int8,
                edit_in_place=config.open_windows != "restart",
            )
        )
        cluster = ray_spec(config.model) if load is None else None
        self.worker: EngineWorker | RayEngineWorker | TranslatorPool = (
            RayEngineWorker(cluster, self._from_worker) if cluster is not None else self._local_worker()
        )
        asr_cluster = ray_spec(config.asr_model)
        self.asr_worker: AsrWorker | RayAsrWorker | None = None
        if config.asr:
            self.asr_worker = (
                RayAsrWorker(asr_cluster)
                if asr_cluster is not None
                else AsrWorker(self._load_asr, max_batch=config.asr_max_batch)
            )
        self._recogniser = config.recogniser  # a cluster's own, once it has answered
        self._speech_detector: SpeechDetector | None = None
        self._pause_detector: SpeechDetector | None = None  # the segment transcriber's
        limits = config.limits
        self.finals = FinalLog(
            max_finals=limits.history_finals,
            max_age_s=limits.history_s,
            max_trails=limits.max_detached_sessions,
        )
        self.hub = StreamHub(
            self.worker.submit,
            max_window_words=config.max_window_words,
            idle_ms=config.idle_ms,
            submit_asr=self._submit_asr if config.asr else None,
            make_transcriber=self._make_transcriber if config.asr else None,
            finals=self.finals,
            cancel=self.worker.cancel,
            orphan_grace_ms=config.orphan_grace_ms,
            display=DraftDisplay(
                translate_open=config.open_windows != "off",
                hold_back_words=config.draft_hold_back,
                agreement=config.draft_agreement,
            ),
            serves=self._serves,
            make_translation=self._make_translation if config.asr else None,
        )
        self.auth = config.auth
        self.sessions = SessionCounter(limits.max_sessions_per_token)
        self.metrics = ServerMetrics(self._snapshot, mqtt=config.mqtt is not None)
        self.hub.add_observer(self._observe)
        self.draining = False
        self.mqtt = (
            MqttBridge(self.hub, config.mqtt, on_publish=self.metrics.on_mqtt_publish)
            if config.mqtt is not None
            else None
        )
        self.http = HttpSite(self.hub, auth=config.auth, metrics=self.metrics, health=self._health)
        self.connections: set[Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.model: ServingModel | ClusterModel | PooledModel | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

    def _local_worker(self) -> EngineWorker | TranslatorPool:
        """The engine thread that owns the model; with ``--translator``, one thread per model behind a
        pool that routes each window by its language pair (engine/translator_pool.py)."""
        config = self.config
        threads = config.torch_threads or _default_engine_threads(config)
        if not config.translators:
            return EngineWorker(
                self._load,
                self._from_worker,
                max_batch=config.max_batch,
                torch_threads=threads,
                on_step=self._on_step,
            )
        loads = [
            partial(load_user_translator, TranslatorSpec.parse(spec), device=config.device, seed=config.seed)
            for spec in config.translators
        ]
        return TranslatorPool(
            [*loads, self._load],
            self._from_worker,
            max_batch=config.max_batch,
            torch_threads=threads,
            on_step=self._on_step,
        )

    async def __aenter__(self) -> LivecanvasServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.worker.start()
        if self.asr_worker is not None:
            self.asr_worker.start()
            recogniser = await asyncio.to_thread(self.asr_worker.wait_ready)
            if isinstance(recogniser, RecogniserInfo):
                self._recogniser = recogniser.settings
            self._speech_detector = SpeechDetector()
            self._pause_detector = pause_detector()
        model: ServingModel | ClusterModel | PooledModel = await asyncio.to_thread(self.worker.wait_ready)
        self.model = model
        card = model.card
        mqtt = self.config.mqtt
        unsupported = [
            t for t in (mqtt.tracks if mqtt else ()) if mqtt and not card.serves(mqtt.source_lang, t)
        ]
        if unsupported:
            await asyncio.to_thread(self.worker.stop, drain=False)
            if self.asr_worker is not None:
                await asyncio.to_thread(self.asr_worker.stop, 30)
            raise ValueError(
                f"model {card.name} translates {card.describe()} only; "
                f"MQTT tracks {', '.join(unsupported)} cannot be served"
            )
        logger.info(
            "model %s (%s prompt, trained=%s) from %s",
            card.name,
            card.prompt_kind,
            card.trained,
            model.resolved.path,
        )
        if self.auth is None:
            logger.warning(
                "authentication is OFF: anyone who reaches this port may publish and read; "
                "never expose it to a network you do not trust"
            )
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            max_size=self.config.max_frame_bytes * FRAME_SIZE_HEADROOM,
            max_queue=64,
        )
        if self.mqtt is not None:
            await self.mqtt.start()  # hooks into the hub before any connection is handled
        self._ticker = asyncio.create_task(self._tick_loop(), name="window-ticker")
        logger.info("listening on ws://%s:%d", self.config.host, self.port)

    async def shutdown(self) -> None:
        if self._server is None:
            return
        self.draining = True  # new sessions get 503 from here on; /healthz says "draining" until the end
        for name in list(self.hub.streams):
            self.hub.flush(name)
        drained = asyncio.Event()
        pending = list(self.hub.streams)
        remaining = len(pending)

        def one_drained() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining <= 0:
                drained.set()

        if not pending:
            drained.set()
        for name in pending:
            self.hub.when_drained(name, one_drained)
        try:
            await asyncio.wait_for(drained.wait(), timeout=self.config.drain_timeout_s)
        except TimeoutError:
            abandoned = self.hub.abandon("the server shut down before this window was finished")
            logger.warning(
                "shutdown: %d windows still open after %.0f s got an error final",
                abandoned,
                self.config.drain_timeout_s,
            )
        for connection in list(self.connections):
            connection.say_goodbye("server shutting down", going_away=True)
        self._server.close(close_connections=False)
        await self._server.wait_closed()
        if self.mqtt is not None:
            await self.mqtt.close()  # pending finals get up to mqtt.flush_timeout_s to reach the broker
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await asyncio.to_thread(self.worker.stop, drain=False, timeout=10)
        if self.asr_worker is not None:
            await asyncio.to_thread(self.asr_worker.stop, 30)
        self._server = None

    async def _handle(self, websocket: ServerConnection) -> None:
        connection = Connection(self, websocket)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = {key.lower(): value for key, value in request.headers.raw_items()}
        if is_upgrade(headers) and self.draining:
            return to_response(
                text_reply(HTTPStatus.SERVICE_UNAVAILABLE, "draining: this server is shutting down")
            )
        if is_upgrade(headers) and len(self.connections) >= self.config.limits.max_sessions:
            self.metrics.limit_hits.labels("sessions").inc()
            return to_response(
                text_reply(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"{ErrorCode.TOO_MANY_SESSIONS}: this server has {len(self.connections)} sessions open",
                )
            )
        return self.http.process_request(connection, request)

    def _observe(self, message: Delivery) -> None:
        """Every draft and final the hub sends (the finals already in ``finals``): measured."""
        if isinstance(message, DraftMsg | FinalMsg):
            self.metrics.observe(message)

    def _on_step(self, canvases: int, seconds: float) -> None:
        self.metrics.on_step(canvases, seconds)

    def _health(self) -> tuple[bool, dict[str, object]]:
        """``/healthz``: ready while listening, not draining, and (on a cluster) while the translator
        has a running replica; the language pairs served (once loaded) and the cluster's replica states
        and retries ride along."""
        ready = self._server is not None and not self.draining and self.worker.alive
        detail: dict[str, object] = {}
        if isinstance(self.worker, RayEngineWorker):
            replicas = dict(self.worker.replica_states)
            detail["cluster"] = {
                "app": self.worker.spec.app,
                "replicas": replicas,
                "retries": self.worker.stats.retries,
            }
            if ready and not replicas.get("RUNNING"):
                ready = False
                detail["status"] = "no_replica"
        if self.model is not None and self.model.card.pairs:  # what a track may ask for
            detail["pairs"] = [list(pair) for pair in self.model.card.pairs]
            if self.config.asr:  # and what speech in other languages gets: [track, via]
                detail["from_speech"] = [list(pair) for pair in from_speech(self.model.card)]
        status = "ok" if ready else ("draining" if self.draining else "starting")
        return ready, {"status": detail.pop("status", status), **detail}

    def _snapshot(self) -> Snapshot:
        roles = {"publish": 0, "subscribe": 0, "pending": 0}
        for connection in list(self.connections):
            roles[connection.role.value if connection.role is not None else "pending"] += 1
        engine = self.worker.stats
        return Snapshot(
            sessions=roles,
            streams=len(self.hub.streams),
            canvases_in_flight=sum(
                len(w.open_tracks) for s in list(self.hub.streams.values()) for w in list(s.windows.values())
            ),
            history_finals=len(self.finals),
            resumable_sessions=self.finals.trails,
            draining=self.draining,
            counters={
                "engine_forwards": engine.forwards,
                "engine_canvases_stepped": engine.canvases_stepped,
                "engine_jobs": engine.jobs,
                "engine_errors": engine.errors,
                "engine_cancelled": engine.cancelled,
            },
            mqtt=self.mqtt.snapshot() if self.mqtt is not None else None,
        )

    def stats(self) -> dict[str, int | float]:
        """Engine and server counters, as sent in ``stats`` messages."""
        engine = self.worker.stats
        asr = self.asr_worker.stats if self.asr_worker is not None else None
        asr_stats: dict[str, int | float] = (
            {"asr_rounds": asr.rounds, "asr_rows": asr.rows, "asr_busy_s": round(asr.busy_s, 4)}
            if asr is not None
            else {}
        )
        return {
            "connections": len(self.connections),
            "streams": len(self.hub.streams),
            "engine_jobs": engine.jobs,
            "engine_finals": engine.finals,
            "engine_errors": engine.errors,
            "engine_forwards": engine.forwards,
            "engine_canvases_stepped": engine.canvases_stepped,
            "engine_mean_batch": round(engine.mean_batch, 3),
            "engine_max_batch": engine.max_batch_seen,
            "engine_busy_s": round(engine.busy_s, 4),
            **asr_stats,
            **(self.mqtt.stats() if self.mqtt is not None else {}),
        }

    def _load_asr(self) -> Asr:
        return load_recogniser(self.config.recogniser)

    def _make_transcriber(self, source_lang: str) -> Transcriber:
        assert self._speech_detector is not None
        language = source_lang.split("-")[0].lower()
        if language == AUTO:  # whisper names the language from the first seconds of speech
            return AutoLanguageTranscriber(self._speech_detector, self._make_transcriber)
        window = {} if self.config.asr_window_ms is None else {"max_window_ms": self.config.asr_window_ms}
        if self._recogniser.uses_segments(language):
            assert self._pause_detector is not None
            segments = SegmentSettings(language=language, **window)
            if self.config.asr_window_ms is not None:  # one span, translated or not
                segments = replace(segments, caption_only_window_ms=None)
            return SegmentTranscriber(detector=self._pause_detector, settings=segments)
        settings = TranscriberSettings(
            language=language, use_draft_pass=self._recogniser.uses_draft_pass(language), **window
        )
        return LiveTranscriber(detector=self._speech_detector, settings=settings)

    def _make_translation(self, language: str) -> SpeechTranslation:
        """A stream's ``en`` track from its speech (whisper's translate task, stream/speech_tracks.py)."""
        assert self._speech_detector is not None
        settings = TranscriberSettings(language=language.split("-")[0].lower())
        if self.config.asr_window_ms is not None:  # the caption's windows, which it follows
            settings = replace(settings, max_window_ms=self.config.asr_window_ms)
        return SpeechTranslation(detector=self._speech_detector, settings=settings)

    def _serves(self, source_lang: str, target: str) -> bool:
        """Whether the loaded translator(s) serve a pair (before loading: any; admission waits anyway)."""
        return self.model is None or self.model.card.serves(source_lang, target)

    def _submit_asr(self, request: AsrRequest, done: Callable[[list[Word] | Exception], None]) -> None:
        assert self.asr_worker is not None
        self.asr_worker.submit(request, lambda result: self._on_loop(done, result))

    def _from_worker(self, events: list[EngineEvent]) -> None:
        """Called on the worker thread: hand the events to the loop's thread."""
        self._on_loop(self.hub.on_engine_events, events)

    def _on_loop(self, callback: Callable[[_T], None], argument: _T) -> None:
        """From a worker thread: run ``callback(argument)`` on the event loop's thread (dropped once the
        loop has closed, at shutdown)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                loop.call_soon_threadsafe(callback, argument)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.hub.tick()
            self.finals.expire()
