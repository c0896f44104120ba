"""Building and running livecanvas's Serve applications on a Ray cluster (``livecanvas deploy``).

Two applications, each one deployment: ``<app>`` (translator replicas, :class:`TranslatorReplica`)
and, when asked, ``<app>-asr`` (recogniser replicas, :class:`RecogniserReplica`). Front ends reach them
by handle only: Serve's HTTP proxy is not started (``proxy_location="Disabled"``), so deploying opens
no port beyond the Ray cluster's own, which belongs on a private network (docs/scaling.md).

Sizing: a fixed ``replicas`` count, or autoscaling between ``replicas`` and ``max_replicas`` on the
number of windows in flight per replica (``target_windows``). Each replica reserves ``cpus`` logical
CPUs and ``gpus`` GPUs (``gpus`` > 0 also moves the translator onto ``cuda``); Ray places replicas on
nodes that have them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.asr import RecogniserSettings
from engine.cluster.frontend import join_cluster
from engine.cluster.replicas import RecogniserReplica, TranslatorReplica, TranslatorSettings

MAX_WINDOWS_PER_REPLICA = 256  # concurrent requests a replica takes; its engine batches them
HEALTH_CHECK_PERIOD_S = 2.0
HEALTH_CHECK_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Sizing:
    replicas: int = 1
    max_replicas: int = 0  # > replicas: autoscale between the two
    target_windows: float = 8.0  # windows in flight per replica that autoscaling aims at
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0
    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")
        if self.max_replicas and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below replicas ({self.replicas})")
        if self.cpus < 0 or self.gpus < 0:
            raise ValueError("cpus and gpus per replica must be >= 0")

    def options(self) -> dict[str, Any]:
        """``serve.deployment`` options for this sizing."""
        options: dict[str, Any] = {
            "max_ongoing_requests": MAX_WINDOWS_PER_REPLICA,
            "health_check_period_s": HEALTH_CHECK_PERIOD_S,
            "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S,
            "graceful_shutdown_timeout_s": 30.0,
            "ray_actor_options": {"num_cpus": self.cpus, "num_gpus": self.gpus},
        }
        if self.max_replicas > self.replicas:
            options["autoscaling_config"] = {
                "min_replicas": self.replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_windows,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
                "metrics_interval_s": 1.0,
                "look_back_period_s": 5.0,
            }
        else:
            options["num_replicas"] = self.replicas
        return options


@dataclass(frozen=True, slots=True)
class Deployment:
    app: str = "livecanvas"
    translator: TranslatorSettings = field(default_factory=TranslatorSettings)
    translator_sizing: Sizing = field(default_factory=Sizing)
    recogniser: RecogniserSettings | None = None  # None: no recogniser application
    recogniser_sizing: Sizing = field(default_factory=Sizing)
    asr_max_batch: int = 8

    @property
    def recogniser_app(self) -> str:
        return f"{self.app}-asr"


def translator_application(deployment: Deployment) -> Any:
    from ray import serve

    settings = deployment.translator
    if deployment.translator_sizing.gpus > 0 and settings.device == "cpu":
        from dataclasses import replace

        settings = replace(settings, device="cuda")
    wrapped = serve.deployment(name="translator")(TranslatorReplica)
    return wrapped.options(**deployment.translator_sizing.options()).bind(settings)


def recogniser_application(deployment: Deployment) -> Any:
    from ray import serve

    assert deployment.recogniser is not None
    wrapped = serve.deployment(name="recogniser")(RecogniserReplica)
    return wrapped.options(**deployment.recogniser_sizing.options()).bind(
        deployment.recogniser, deployment.asr_max_batch
    )


def deploy(deployment: Deployment, address: str) -> None:
    """Join the cluster at ``address`` and run (or update) the applications; returns once every
    replica is up. The applications keep running in the cluster after this process exits."""
    from ray import serve

    join_cluster(address)
    serve.start(proxy_location="Disabled")
    serve.run(translator_application(deployment), name=deployment.app, route_prefix=None)
    if deployment.recogniser is not None:
        serve.run(recogniser_application(deployment), name=deployment.recogniser_app, route_prefix=None)


def undeploy(deployment: Deployment, address: str) -> None:
    """Delete the applications (their replicas stop)."""
    from ray import serve

    join_cluster(address)
    serve.delete(deployment.app)
    if deployment.recogniser is not None:
        serve.delete(deployment.recogniser_app)
