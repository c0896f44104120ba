"""The cluster's settings without a cluster: ``ray:`` specs, replica sizing as Serve options, and the
``livecanvas deploy`` flags. (The cluster itself: tests/integration/test_cluster.py.)"""

from __future__ import annotations

import pytest

from engine.cluster.deploy import MAX_WINDOWS_PER_REPLICA, Sizing
from engine.cluster.spec import RaySpec, ray_spec
from engine.errors import EngineError
from livecanvas.cli import build_parser
from livecanvas.cli_deploy import deployment_from_args
from livecanvas.cli_serve import server_config


def test_ray_specs_name_an_application_and_optionally_a_cluster() -> None:
    assert ray_spec("ray:captions") == RaySpec("captions", "auto")
    assert ray_spec("ray:captions@10.0.0.5:6379") == RaySpec("captions", "10.0.0.5:6379")
    assert ray_spec("ray:") == RaySpec("livecanvas", "auto")
    assert str(RaySpec("captions", "auto")) == "ray:captions@auto"
    for other in ("embedded", None, "google/diffusiongemma-26B-A4B-it", "/models/ray:x"):
        assert ray_spec(other) is None


@pytest.mark.parametrize("bad", ["ray:has space", "ray:../up", "ray:" + "x" * 65])
def test_a_malformed_ray_spec_is_refused_with_a_clear_error(bad: str) -> None:
    with pytest.raises(EngineError, match="application name"):
        ray_spec(bad)


def test_a_fixed_sizing_asks_serve_for_that_many_replicas_that_each_take_many_windows() -> None:
    options = Sizing(replicas=3, cpus=2, gpus=1).options()
    assert options["num_replicas"] == 3
    assert "autoscaling_config" not in options
    assert options["max_ongoing_requests"] == MAX_WINDOWS_PER_REPLICA  # windows join one replica's batches
    assert options["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 1}


def test_a_sizing_with_more_max_replicas_autoscales_on_windows_in_flight() -> None:
    options = Sizing(replicas=1, max_replicas=4, target_windows=6).options()
    assert "num_replicas" not in options
    scaling = options["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"], scaling["target_ongoing_requests"]) == (1, 4, 6)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--replicas", "0"], "replicas must be at least 1"),
        (["--replicas", "3", "--max-replicas", "2"], "below replicas"),
        (["--num-gpus", "-1"], ">= 0"),
    ],
)
def test_deploy_refuses_bad_sizes(flags: list[str], message: str) -> None:
    args = build_parser().parse_args(["deploy", *flags])
    with pytest.raises(SystemExit, match=message):
        deployment_from_args(args)


def test_deploy_flags_become_the_deployment() -> None:
    args = build_parser().parse_args(
        ["deploy", "--app", "talks", "--replicas", "2", "--max-replicas", "6", "--num-gpus", "1", "--asr"]
    )
    deployment = deployment_from_args(args)
    assert deployment.app == "talks"
    assert deployment.recogniser_app == "talks-asr"
    assert deployment.recogniser is not None
    assert (deployment.translator_sizing.replicas, deployment.translator_sizing.max_replicas) == (2, 6)
    assert deployment.translator_sizing.gpus == 1
    assert deployment_from_args(build_parser().parse_args(["deploy"])).recogniser is None


def test_serve_takes_the_clusters_translator_and_recogniser() -> None:
    args = build_parser().parse_args(
        ["serve", "--model", "ray:talks@head:6379", "--asr-model", "ray:talks-asr@head:6379"]
    )
    config = server_config(args)
    assert ray_spec(config.model) == RaySpec("talks", "head:6379")
    assert ray_spec(config.asr_model) == RaySpec("talks-asr", "head:6379")
    assert server_config(build_parser().parse_args(["serve"])).asr_model == "moonshine"


def test_an_asr_model_that_is_neither_local_nor_a_cluster_is_refused() -> None:
    with pytest.raises(ValueError, match="asr_model must be one of moonshine, whisper, ray:APP"):
        server_config(build_parser().parse_args(["serve", "--asr-model", "whisper-large"]))
