"""Prometheus metrics of one server, in a registry of its own (many servers may share a process).

``ServerMetrics`` owns the instruments the server updates as things happen (latency histograms, step
batch sizes, auth failures, limit hits, coalesced drafts, resumes; with MQTT on, the bridge's publish
round trips, observed on the bridge's thread) and a collector that reads gauges and engine counters
from a ``snapshot`` callback at scrape time (with MQTT on, the bridge's own snapshot among them).
``render()`` gives the text exposition served at ``/metrics`` (stream/web.py). docs/operations.md
lists the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.types import CAPTION_TRACK
from stream.wire.messages import DraftMsg, FinalMsg

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PUBLISH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class MqttSnapshot:
    """The MQTT bridge's state at scrape time (stream/mqtt/bridge.py keeps it current)."""

    connected: bool
    pending_finals: int  # queued: in memory or spilled, not acknowledged yet
    spilled_now: int  # of those, in the spill file
    spilled_total: int
    acked_total: int
    redelivered_total: int
    drafts_dropped: int
    reconnects: int  # successful connections after the first


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Gauges and engine counters read at scrape time."""

    sessions: Mapping[str, int]  # by role: publish, subscribe, pending (no hello accepted yet)
    streams: int
    canvases_in_flight: int  # translation canvases submitted and not yet final
    history_finals: int
    resumable_sessions: int
    draining: bool
    counters: Mapping[str, int] = field(default_factory=dict)  # engine_forwards, engine_errors, ...
    mqtt: MqttSnapshot | None = None  # None: no MQTT bridge


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        return iter(())  # nothing to check at registration: the snapshot is only read at scrape time

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        sessions = GaugeMetricFamily("livecanvas_sessions", "Open WebSocket sessions", labels=["role"])
        for role, count in sorted(snap.sessions.items()):
            sessions.add_metric([role], count)
        yield sessions
        yield GaugeMetricFamily(
            "livecanvas_streams", "Streams with a publisher or viewers", value=snap.streams
        )
        yield GaugeMetricFamily(
            "livecanvas_canvases_in_flight",
            "Translation canvases submitted to the engine and not final yet",
            value=snap.canvases_in_flight,
        )
        yield GaugeMetricFamily(
            "livecanvas_history_finals", "Finals kept for resume, all streams", value=snap.history_finals
        )
        yield GaugeMetricFamily(
            "livecanvas_resumable_sessions",
            "Disconnected sessions that may resume",
            value=snap.resumable_sessions,
        )
        yield GaugeMetricFamily("livecanvas_draining", "1 while shutting down", value=int(snap.draining))
        for name, value in sorted(snap.counters.items()):
            yield CounterMetricFamily(f"livecanvas_{name}", f"Engine counter {name}", value=value)
        if snap.mqtt is not None:
            yield from _mqtt_families(snap.mqtt)


def _mqtt_families(mqtt: MqttSnapshot) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "livecanvas_mqtt_connected",
        "1 while the bridge is connected to its broker",
        value=int(mqtt.connected),
    )
    yield GaugeMetricFamily(
        "livecanvas_mqtt_pending_finals", "Finals queued for the broker and not acknowledged yet",
        value=mqtt.pending_finals,
    )  # fmt: skip
    yield GaugeMetricFamily(
        "livecanvas_mqtt_spill_file_finals", "Pending finals in the spill file now", value=mqtt.spilled_now
    )
    counters = (
        ("mqtt_spilled_finals", "Finals ever written to the spill file", mqtt.spilled_total),
        ("mqtt_acked_finals", "Finals the broker acknowledged", mqtt.acked_total),
        ("mqtt_redelivered_finals", "Finals published again after a lost PUBACK", mqtt.redelivered_total),
        ("mqtt_dropped_drafts", "Drafts dropped (broker away, or superseded)", mqtt.drafts_dropped),
        ("mqtt_reconnects", "Connections to the broker after the first one", mqtt.reconnects),
    )
    for name, documentation, value in counters:
        yield CounterMetricFamily(f"livecanvas_{name}", documentation, value=value)


def track_kind(track: str) -> str:
    return "caption" if track == CAPTION_TRACK else "translation"


class ServerMetrics:
    """See the module docstring."""

    def __init__(self, snapshot: Callable[[], Snapshot], *, mqtt: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.mqtt_publish: Histogram | None = None
        if mqtt:
            self.mqtt_publish = Histogram(
                "livecanvas_mqtt_publish_seconds", "MQTT bridge: a final's publish until the broker's PUBACK",
                buckets=PUBLISH_BUCKETS_S, registry=r,
            )  # fmt: skip
        self.step_batch = Histogram(
            "livecanvas_step_batch_size", "Canvases advanced by one denoising forward", buckets=BATCH_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.step_seconds = Histogram(
            "livecanvas_step_seconds",
            "Duration of one denoising forward",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.draft_latency = Histogram(
            "livecanvas_draft_latency_seconds", "Draft latency from window commit", ["kind"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.final_latency = Histogram(
            "livecanvas_final_latency_seconds", "Final latency from window commit", ["kind"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.final_errors = Counter(
            "livecanvas_final_errors", "Finals the engine could not produce (sent with an error)", registry=r
        )
        self.drafts_coalesced = Counter(
            "livecanvas_drafts_coalesced", "Drafts replaced by a newer one before a slow viewer read them",
            registry=r,
        )  # fmt: skip
        self.auth_failures = Counter(
            "livecanvas_auth_failures", "Refused authentications", ["reason"], registry=r
        )
        self.limit_hits = Counter(
            "livecanvas_limit_hits", "Requests refused by a limit", ["limit"], registry=r
        )
        self.audio_throttled = Counter(
            "livecanvas_audio_throttled_seconds", "Time audio publishers were held back by the rate limit",
            registry=r,
        )  # fmt: skip
        self.resumes = Counter("livecanvas_resumes", "Resume requests", ["outcome"], registry=r)
        self.replayed_finals = Counter(
            "livecanvas_replayed_finals", "Finals sent again on resume", registry=r
        )
        r.register(_SnapshotCollector(snapshot))

    def on_step(self, canvases: int, seconds: float) -> None:
        """The engine worker's hook (called on its thread; prometheus instruments are thread-safe)."""
        self.step_batch.observe(canvases)
        self.step_seconds.observe(seconds)

    def on_mqtt_publish(self, seconds: float) -> None:
        """The MQTT bridge's hook (called on its thread): one final's publish round trip."""
        if self.mqtt_publish is not None:
            self.mqtt_publish.observe(seconds)

    def observe(self, message: DraftMsg | FinalMsg) -> None:
        """A hub observer: every draft and final, once, as it is broadcast."""
        kind = track_kind(message.track)
        if isinstance(message, DraftMsg):
            self.draft_latency.labels(kind).observe(message.latency_ms / 1000)
        else:
            self.final_latency.labels(kind).observe(message.latency_ms / 1000)
            if message.error is not None:
                self.final_errors.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
