"""The ``ray_cluster`` fixture: a real local Ray cluster (a head and a second node, each its own
raylet on loopback) with livecanvas's translator and recogniser deployed on it, started once per test
session and shared by every test that asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.asr import RecogniserSettings
from engine.cluster.deploy import Deployment, Sizing, deploy
from engine.cluster.replicas import TranslatorSettings

APP = "lc-test"


@dataclass(frozen=True)
class RayCluster:
    address: str
    deployment: Deployment

    @property
    def model(self) -> str:
        return f"ray:{self.deployment.app}@{self.address}"

    @property
    def asr_model(self) -> str:
        return f"ray:{self.deployment.recogniser_app}@{self.address}"


@pytest.fixture(scope="session")
def ray_cluster(livecanvas_cache: Path) -> Iterator[RayCluster]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=2)
    deployment = Deployment(
        app=APP,
        translator=TranslatorSettings(threads=1, max_batch=32),
        translator_sizing=Sizing(replicas=2, cpus=1),
        recogniser=RecogniserSettings(threads=1),
        recogniser_sizing=Sizing(replicas=1, cpus=0.5),
    )
    try:
        deploy(deployment, cluster.address)
        yield RayCluster(cluster.address, deployment)
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
