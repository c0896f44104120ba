"""``livecanvas deploy``: run livecanvas's translator (and recogniser) as Ray Serve applications on a
Ray cluster, for front ends started with ``--model ray:APP[@ADDRESS]`` (docs/scaling.md).

Needs the ``cluster`` extra (``pip install 'livecanvas[cluster]'``). ``--delete`` removes the
applications again.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from typing import Any

from engine.asr import ASR_DRAFT_CHOICES, SHORT_CONTEXT_PAD_S, RecogniserSettings
from stream.config import env_str

logger = logging.getLogger("livecanvas.deploy")


def add_deploy_parser(commands: Any) -> None:
    """Register ``deploy`` on the CLI's subcommands."""
    parser = commands.add_parser(
        "deploy", help="run the translator (and recogniser) on a Ray cluster for front ends to share"
    )
    parser.add_argument(
        "--address",
        default=env_str("RAY_ADDRESS", "auto"),
        help="the Ray cluster (default: auto, the one this machine's `ray start` joined)",
    )
    parser.add_argument("--app", default="livecanvas", help="application name (front ends: ray:APP)")
    parser.add_argument("--model", default="embedded", help="a local model spec, as for serve")
    parser.add_argument(
        "--replicas", type=int, default=1, help="translator replicas (the minimum with autoscaling)"
    )
    parser.add_argument(
        "--max-replicas", type=int, default=0, help="autoscale up to this many translator replicas"
    )
    parser.add_argument(
        "--target-windows",
        type=float,
        default=8.0,
        help="windows in flight per replica that autoscaling aims at (default %(default)s)",
    )
    parser.add_argument("--num-cpus", type=float, default=1.0, help="logical CPUs each replica reserves")
    parser.add_argument(
        "--num-gpus", type=float, default=0.0, help="GPUs each translator replica reserves (>0: runs on cuda)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads per replica (0: default)")
    parser.add_argument("--max-batch", type=int, default=32, help="canvases advanced by one forward at most")
    parser.add_argument("--sampler", choices=("exact", "fast"), default="fast", help="see docs/engine.md")
    parser.add_argument(
        "--int8", action=argparse.BooleanOptionalAction, default=None, help="int8 (CPU; default: the model's)"
    )
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, ...")
    asr = parser.add_argument_group("recogniser (front ends: --asr-model ray:APP-asr)")
    asr.add_argument("--asr", action="store_true", help="also deploy the speech recogniser as APP-asr")
    asr.add_argument("--asr-replicas", type=int, default=1)
    asr.add_argument("--asr-max-replicas", type=int, default=0, help="autoscale up to this many")
    asr.add_argument("--asr-draft", choices=ASR_DRAFT_CHOICES, default="none", help="as for serve")
    asr.add_argument(
        "--asr-short-context",
        dest="asr_audio_context_pad_s",
        action="store_const",
        const=SHORT_CONTEXT_PAD_S,
        default=0.0,
        help="as for serve",
    )
    asr.add_argument("--asr-threads", type=int, default=0, help="CTranslate2 threads per replica")
    asr.add_argument("--asr-max-batch", type=int, default=8, help="recognition requests per round")
    parser.add_argument("--delete", action="store_true", help="remove the applications instead")
    parser.set_defaults(handler=run_deploy)


def deployment_from_args(args: argparse.Namespace) -> Any:
    """The ``engine.cluster.deploy.Deployment`` the flags describe (``SystemExit`` on bad values)."""
    from engine.cluster.deploy import Deployment, Sizing
    from engine.cluster.replicas import TranslatorSettings

    try:
        return Deployment(
            app=args.app,
            translator=TranslatorSettings(
                model=args.model,
                dtype=args.dtype,
                sampler=args.sampler,
                int8=args.int8,
                max_batch=args.max_batch,
                threads=args.threads,
            ),
            translator_sizing=Sizing(
                replicas=args.replicas,
                max_replicas=args.max_replicas,
                target_windows=args.target_windows,
                cpus=args.num_cpus,
                gpus=args.num_gpus,
            ),
            recogniser=RecogniserSettings(
                draft=args.asr_draft,
                final_context_pad_s=args.asr_audio_context_pad_s,
                threads=args.asr_threads,
            )
            if args.asr
            else None,
            recogniser_sizing=Sizing(
                replicas=args.asr_replicas,
                max_replicas=args.asr_max_replicas,
                target_windows=args.asr_max_batch,
                cpus=args.num_cpus,
            ),
            asr_max_batch=args.asr_max_batch,
        )
    except ValueError as error:
        raise SystemExit(f"livecanvas deploy: {error}") from None


def run_deploy(args: argparse.Namespace) -> int:
    deployment = deployment_from_args(args)
    if importlib.util.find_spec("ray") is None:  # an optional extra
        raise SystemExit("livecanvas deploy needs Ray: pip install 'livecanvas[cluster]'")
    from engine.cluster.deploy import deploy, undeploy

    if args.delete:
        undeploy(deployment, args.address)
        print(f"deleted {deployment.app}", flush=True)
        return 0
    deploy(deployment, args.address)
    apps = [deployment.app] + ([deployment.recogniser_app] if deployment.recogniser is not None else [])
    print(f"deployed {', '.join(apps)}; front ends: --model ray:{deployment.app}@{args.address}", flush=True)
    return 0
