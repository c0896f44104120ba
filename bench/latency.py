"""Text-path latency: segment sent -> first draft and -> final, for N concurrent publishing sessions.

Starts ``livecanvas serve`` as a separate process on a free loopback port (the embedded model unless
``--model`` says otherwise), then runs each session count several times. Every session publishes
complete sentences at a live pace (one every ``--interval`` seconds, sessions offset from each other),
so each sentence is one window; latency is measured on the client from sending the sentence to
receiving the first draft and the final of its translation track. The server's ``stats`` message
gives the mean number of canvases one forward advanced.

Prints JSON and writes ``bench/results/latency.json`` and ``latency.png``.

    python -m bench.latency --sessions 1 2 4 8 16 32 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

from bench.server_process import free_port, percentile, start_server
from clients.python.client import connect
from stream.wire.messages import DraftMsg, FinalMsg, StatsMsg

SENTENCES = [
    "The council meets again on Monday to discuss the new budget.",
    "Residents asked for more shade at bus stops across the city.",
    "Several cooling centres will stay open all night this summer.",
    "The mayor thanked the volunteers who organised the meeting.",
    "A final vote on the proposal is expected next week.",
    "Questions from the audience took most of the evening.",
    "Local businesses said they support the plan.",
    "The next public hearing will be announced online.",
]
RESULTS = Path(__file__).resolve().parent / "results"


async def one_session(
    url: str, name: str, sentences: list[str], interval: float, offset: float, track: str
) -> dict[str, Any]:
    await asyncio.sleep(offset)
    sent_at: dict[int, int] = {}
    first_draft: dict[int, float] = {}
    final: dict[int, float] = {}
    stats: dict[str, float] = {}
    async with connect(url, stream=name, tracks=("caption", track)) as session:

        async def publish() -> None:
            for index, sentence in enumerate(sentences):
                sent_at[index] = time.monotonic_ns()
                await session.send_text(sentence)
                await asyncio.sleep(interval)
            await session.end()

        publisher = asyncio.create_task(publish())
        async for item in session.received():
            message = item.message
            if isinstance(message, DraftMsg) and message.track == track:
                first_draft.setdefault(message.window, (item.at_ns - sent_at[message.window]) / 1e6)
            elif isinstance(message, FinalMsg) and message.track == track:
                final[message.window] = (item.at_ns - sent_at[message.window]) / 1e6
            elif isinstance(message, StatsMsg):
                stats = dict(message.values)
        await publisher
    return {"first_draft_ms": list(first_draft.values()), "final_ms": list(final.values()), "stats": stats}


async def run_load(
    url: str, sessions: int, sentences: int, interval: float, track: str, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    tasks = [
        one_session(
            url,
            f"bench-{seed}-{s}",
            rng.sample(SENTENCES, k=min(sentences, len(SENTENCES))),
            interval,
            rng.uniform(0, interval),
            track,
        )
        for s in range(sessions)
    ]
    before = time.perf_counter()
    outcomes = await asyncio.gather(*tasks)
    drafts = [v for o in outcomes for v in o["first_draft_ms"]]
    finals = [v for o in outcomes for v in o["final_ms"]]
    last_stats = max((o["stats"] for o in outcomes), key=lambda s: s.get("engine_forwards", 0))
    return {
        "sessions": sessions,
        "windows": len(finals),
        "first_draft_ms": {"median": statistics.median(drafts), "p95": percentile(drafts, 0.95)}
        if drafts
        else None,
        "final_ms": {"median": statistics.median(finals), "p95": percentile(finals, 0.95)},
        "wall_s": round(time.perf_counter() - before, 2),
        "engine_stats_at_end": last_stats,
        "raw": {"first_draft_ms": drafts, "final_ms": finals},
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_sessions: dict[int, list[dict[str, Any]]] = {}
    for result in results:
        by_sessions.setdefault(result["sessions"], []).append(result)
    summary = {}
    for sessions, runs in sorted(by_sessions.items()):
        drafts = [v for r in runs for v in r["raw"]["first_draft_ms"]]
        finals = [v for r in runs for v in r["raw"]["final_ms"]]
        forwards = sum(r["forwards"] for r in runs)
        stepped = sum(r["canvases_stepped"] for r in runs)
        summary[str(sessions)] = {
            "runs": len(runs),
            "windows": len(finals),
            "first_draft_ms": {
                "median": round(statistics.median(drafts), 1),
                "p95": round(percentile(drafts, 0.95), 1),
            },
            "final_ms": {
                "median": round(statistics.median(finals), 1),
                "p95": round(percentile(finals, 0.95), 1),
            },
            "run_medians_final_ms": [round(r["final_ms"]["median"], 1) for r in runs],
            "forwards": forwards,
            "canvases_per_forward": round(stepped / max(1, forwards), 2),
        }
    return summary


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sessions = [int(s) for s in summary]
    figure, axis = plt.subplots(figsize=(6, 4))
    for field, label in (("first_draft_ms", "first draft"), ("final_ms", "final")):
        axis.plot(
            sessions,
            [summary[str(s)][field]["median"] for s in sessions],
            marker="o",
            label=f"{label} median",
        )
        axis.plot(
            sessions,
            [summary[str(s)][field]["p95"] for s in sessions],
            marker="x",
            linestyle="--",
            label=f"{label} p95",
        )
    axis.set_xlabel("concurrent text sessions")
    axis.set_ylabel("latency from segment sent (ms)")
    axis.set_title("livecanvas text path latency")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=6, help="sentences per session per run")
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between a session's sentences")
    parser.add_argument("--track", default="pt")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--sampler", choices=("exact", "fast"), default="fast")
    parser.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="int8 dynamic quantisation (default: the model's)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="latency", help="output file stem")
    args = parser.parse_args()

    load_before = [round(x, 2) for x in os.getloadavg()]
    port = free_port()
    server = start_server(
        port,
        [
            *("--model", args.model, "--sampler", args.sampler, "--no-asr"),
            *(["--threads", str(args.threads)] if args.threads else []),
            *([] if args.int8 is None else ["--int8" if args.int8 else "--no-int8"]),
        ],
    )
    results = []
    seen = {"engine_forwards": 0, "engine_canvases_stepped": 0}
    try:
        for run in range(args.runs):
            for sessions in args.sessions:
                url = f"ws://127.0.0.1:{port}"
                result = asyncio.run(
                    run_load(url, sessions, args.sentences, args.interval, args.track, seed=run)
                )
                # the server's counters are cumulative: this run's share is the difference
                now = result["engine_stats_at_end"]
                result["forwards"] = now["engine_forwards"] - seen["engine_forwards"]
                result["canvases_stepped"] = now["engine_canvases_stepped"] - seen["engine_canvases_stepped"]
                seen = {k: now[k] for k in seen}
                results.append(result)
    finally:
        server.terminate()
        server.wait(timeout=60)
    summary = summarise(results)
    report = {
        "benchmark": "text_latency",
        "model": args.model,
        "sentences_per_session": args.sentences,
        "interval_s": args.interval,
        "sampler": args.sampler,
        "int8": args.int8,
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "summary": summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps({**report, "runs": results}, indent=2))
    plot(summary, args.out / f"{args.name}.png")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
