"""Scaling out on Ray Serve: windows/s and latency with 1 and 2 translator replicas, and autoscaling.

Starts a real local Ray cluster (a head node and a second node, each with ``--cpus-per-node`` logical
CPUs), deploys livecanvas's translator with ``livecanvas deploy``'s code, and starts two front ends as
``livecanvas serve --model ray:...`` processes. The same load goes through both front ends for each
replica count: ``--sessions`` publishing sessions per front end, each sending ``--sentences`` complete
sentences ``--interval`` seconds apart (so each is one window), all at once. Recorded per run: windows/s
(finals over the load's wall time), each window's first-draft and final latency (sent -> received, on
the client), and errors. The 2-replica/1-replica ratio is taken within each run pair; medians over
``--runs`` pairs.

Then the autoscaling run: one replica, ``max_replicas`` 2, a target of ``--target-windows`` windows in
flight per replica; the same load, repeated, while the replica count is read every 0.5 s.

Prints JSON and writes ``bench/results/cluster.json`` and ``cluster.png``.

    python -m bench.cluster --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.latency import run_load
from bench.server_process import free_port, percentile, start_server
from engine.cluster.deploy import Deployment, Sizing, deploy
from engine.cluster.frontend import replica_states
from engine.cluster.replicas import TranslatorSettings

RESULTS = Path(__file__).resolve().parent / "results"
APP = "bench"


def start_front_ends(address: str, count: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    processes, urls = [], []
    for _ in range(count):
        port = free_port()
        processes.append(start_server(port, ["--model", f"ray:{APP}@{address}", "--no-asr"]))
        urls.append(f"ws://127.0.0.1:{port}")
    return processes, urls


async def load_both(urls: list[str], args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The same load through every front end at once; windows/s over the whole load."""
    started = time.perf_counter()
    outcomes = await asyncio.gather(
        *(
            run_load(url, args.sessions, args.sentences, args.interval, "pt", seed * 100 + index)
            for index, url in enumerate(urls)
        )
    )
    wall = time.perf_counter() - started
    drafts = [v for o in outcomes for v in o["raw"]["first_draft_ms"]]
    finals = [v for o in outcomes for v in o["raw"]["final_ms"]]
    return {
        "windows": len(finals),
        "wall_s": round(wall, 3),
        "windows_per_s": round(len(finals) / wall, 3),
        "first_draft_ms": round(statistics.median(drafts), 1) if drafts else None,
        "first_draft_p95_ms": round(percentile(drafts, 0.95), 1) if drafts else None,
        "final_ms": round(statistics.median(finals), 1),
        "final_p95_ms": round(percentile(finals, 0.95), 1),
    }


def translator(args: argparse.Namespace, sizing: Sizing) -> Deployment:
    return Deployment(
        app=APP,
        translator=TranslatorSettings(threads=args.threads, max_batch=args.max_batch),
        translator_sizing=sizing,
    )


def deploy_settled(args: argparse.Namespace, sizing: Sizing, address: str) -> None:
    """Deploy, then wait until exactly ``sizing.replicas`` replicas run and no other is stopping."""
    deploy(translator(args, sizing), address)
    while replica_states(APP) != {"RUNNING": sizing.replicas}:
        time.sleep(0.5)


async def autoscaling_run(urls: list[str], args: argparse.Namespace) -> dict[str, Any]:
    timeline: list[tuple[float, int]] = []
    started = time.perf_counter()
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            states = await asyncio.to_thread(replica_states, APP)
            timeline.append((round(time.perf_counter() - started, 2), states.get("RUNNING", 0)))
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    loads = []
    for repeat in range(args.autoscale_repeats):
        loads.append(await load_both(urls, args, seed=1000 + repeat))
        if max(running for _, running in timeline) >= 2 and repeat >= 1:
            break
    stop.set()
    await watcher
    first_two = next((t for t, running in timeline if running >= 2), None)
    return {"loads": loads, "replicas_timeline": timeline, "scaled_to_2_at_s": first_two}


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    counts = ["1", "2"]
    left.bar(counts, [summary["replicas"][c]["windows_per_s"] for c in counts], color=["#888", "#2a7"])
    left.set_xlabel("translator replicas")
    left.set_ylabel("windows/s (2 front ends, same load)")
    left.set_title(f"ratio 2:1 = {summary['ratio_windows_per_s']:.2f} (median of run pairs)")
    timeline = summary["autoscaling"]["replicas_timeline"]
    right.step([t for t, _ in timeline], [n for _, n in timeline], where="post")
    right.set_xlabel("seconds since load started")
    right.set_ylabel("running replicas")
    right.set_ylim(0, 2.5)
    right.set_title("autoscaling 1 -> 2 under load")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=8, help="publishing sessions per front end")
    parser.add_argument("--sentences", type=int, default=8, help="sentences per session")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between a session's sentences")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per replica")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--cpus-per-node", type=int, default=2)
    parser.add_argument("--target-windows", type=float, default=4.0)
    parser.add_argument("--autoscale-repeats", type=int, default=6)
    parser.add_argument("--out", type=Path, default=RESULTS / "cluster.json")
    args = parser.parse_args()

    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": args.cpus_per_node, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=args.cpus_per_node)
    front_ends: list[subprocess.Popen[bytes]] = []
    try:
        deploy(translator(args, Sizing(replicas=1)), cluster.address)
        front_ends, urls = start_front_ends(cluster.address, 2)
        asyncio.run(load_both(urls, args, seed=0))  # warm-up: connections, first requests
        runs: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
        for run in range(args.runs):
            for count in (1, 2):
                deploy_settled(args, Sizing(replicas=count), cluster.address)
                runs[str(count)].append(asyncio.run(load_both(urls, args, seed=run + 1)))
                print(json.dumps({"replicas": count, **runs[str(count)][-1]}), flush=True)
        # back to one replica (and wait for the second to stop), then let autoscaling take over
        deploy_settled(args, Sizing(replicas=1), cluster.address)
        autoscaled = Sizing(
            replicas=1, max_replicas=2, target_windows=args.target_windows, upscale_delay_s=1.0
        )
        deploy(translator(args, autoscaled), cluster.address)
        autoscaling = asyncio.run(autoscaling_run(urls, args))
    finally:
        for process in front_ends:
            process.terminate()
            process.wait(timeout=60)
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()

    def median(count: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[count]), 3)

    summary = {
        "load": {
            "front_ends": 2,
            "sessions_per_front_end": args.sessions,
            "sentences_per_session": args.sentences,
            "interval_s": args.interval,
            "threads_per_replica": args.threads,
            "cpus_per_node": args.cpus_per_node,
            "machine_cores": os.cpu_count(),
        },
        "replicas": {
            count: {
                "windows_per_s": median(count, "windows_per_s"),
                "first_draft_ms": median(count, "first_draft_ms"),
                "final_ms": median(count, "final_ms"),
                "final_p95_ms": median(count, "final_p95_ms"),
                "windows_per_run": [r["windows"] for r in runs[count]],
            }
            for count in ("1", "2")
        },
        "ratio_windows_per_s": round(
            statistics.median(
                two["windows_per_s"] / one["windows_per_s"]
                for one, two in zip(runs["1"], runs["2"], strict=True)
            ),
            3,
        ),
        "autoscaling": autoscaling,
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
