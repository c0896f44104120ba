"""The livecanvas server: a websockets server on the running event loop, the stream hub, and the
engine worker thread that owns the model.

Start-up loads the model on the worker thread (the loop stays free) and only then listens. Shutdown
stops listening, closes every publisher's open text into windows, waits up to ``drain_timeout_s`` for
their finals, says ``bye`` to every connection, gives the MQTT bridge (when configured, stream/mqtt.py)
up to its flush timeout to deliver pending finals, and stops the worker.

Plain HTTP GETs on the same port (the overlay and viewer pages, the stream list, caption downloads)
are answered in the handshake's ``process_request`` hook by ``stream.web.HttpSite``, from the finals
a ``stream.transcripts.TranscriptStore`` keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve

from engine.asr import Asr, AsrRequest
from engine.asr_worker import AsrWorker
from engine.audio import SpeechDetector
from engine.models import match_language
from engine.runtime import LoadedModel, load_model
from engine.transcriber import LiveTranscriber, TranscriberSettings
from engine.types import Word
from engine.worker import EngineEvent, EngineWorker
from stream.config import SHORT_CONTEXT_PAD_S, ServerConfig
from stream.hub import StreamHub
from stream.mqtt import MqttBridge
from stream.session import Connection
from stream.transcripts import TranscriptStore
from stream.web import HttpSite

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

    def __init__(self, config: ServerConfig, *, load: Callable[[], LoadedModel] | None = None) -> None:
        self.config = config
        self._load = load or (
            lambda: load_model(config.model, device=config.device, dtype=config.dtype, seed=config.seed)
        )
        self.worker = EngineWorker(
            self._load,
            self._from_worker,
            max_batch=config.max_batch,
            torch_threads=config.torch_threads or _default_engine_threads(config),
        )
        self.asr_worker = AsrWorker(self._load_asr, max_batch=config.asr_max_batch) if config.asr else None
        self._speech_detector: SpeechDetector | None = None
        self.hub = StreamHub(
            self.worker.submit,
            max_window_words=config.max_window_words,
            idle_ms=config.idle_ms,
            submit_asr=self._submit_asr if config.asr else None,
            make_transcriber=self._make_transcriber if config.asr else None,
        )
        self.mqtt = MqttBridge(self.hub, config.mqtt) if config.mqtt is not None else None
        self.transcripts = TranscriptStore(self.hub)
        self.http = HttpSite(self.transcripts)
        self.connections: set[Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.model: LoadedModel | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

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
            await asyncio.to_thread(self.asr_worker.wait_ready)
            self._speech_detector = SpeechDetector()
        self.model = await asyncio.to_thread(self.worker.wait_ready)
        card = self.model.card
        unsupported = [
            t
            for t in (self.config.mqtt.tracks if self.config.mqtt else ())
            if not match_language(t, card.target_languages)
        ]
        if unsupported:
            await asyncio.to_thread(self.worker.stop, drain=False)
            if self.asr_worker is not None:
                await asyncio.to_thread(self.asr_worker.stop, 30)
            raise ValueError(
                f"model {card.name} translates into {', '.join(card.target_languages)} only; "
                f"MQTT tracks {', '.join(unsupported)} cannot be served"
            )
        logger.info(
            "model %s (%s prompt, trained=%s) from %s",
            card.name,
            card.prompt_kind,
            card.trained,
            self.model.resolved.path,
        )
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self.http.process_request,
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
        self._server.close(close_connections=False)
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
            logger.warning(
                "shutdown: windows still open after %.0f s; closing anyway", self.config.drain_timeout_s
            )
        for connection in list(self.connections):
            connection.say_goodbye("server shutting down")
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
            **asr_stats,
            **(self.mqtt.stats() if self.mqtt is not None else {}),
        }

    def _load_asr(self) -> Asr:
        from engine.asr import FasterWhisperAsr
        from engine.asr_models import ensure_whisper_base, whisper_tiny_en

        base = ensure_whisper_base()
        models = {"final": base}
        padding: dict[str, float] = {}
        if self.config.asr_draft == "base-short":
            models["draft"] = base  # the same model, shared; drafts encode just the audio + 1 s
            padding["draft"] = SHORT_CONTEXT_PAD_S
        elif self.config.asr_draft == "tiny.en":
            models["draft"] = whisper_tiny_en()
        if self.config.asr_audio_context_pad_s > 0:
            padding["final"] = self.config.asr_audio_context_pad_s
        threads = self.config.asr_threads or min(4, os.cpu_count() or 1)
        return FasterWhisperAsr(models, cpu_threads=threads, context_pad_s=padding)

    def _make_transcriber(self, source_lang: str) -> LiveTranscriber:
        assert self._speech_detector is not None
        language = source_lang.split("-")[0].lower()
        # tiny.en knows English only; with it, other languages use the final model alone
        draft = self.config.asr_draft
        use_draft = draft == "base-short" or (draft == "tiny.en" and language == "en")
        settings = TranscriberSettings(language=language, use_draft_pass=use_draft)
        return LiveTranscriber(detector=self._speech_detector, settings=settings)

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
