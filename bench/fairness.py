"""Fairness between streams: a calm stream's translation latency while another stream floods the server.

Starts ``livecanvas serve --no-asr`` as its own process on a free loopback port (the embedded model),
raising the text burst allowance so the whole flood is accepted at once. A *calm* session publishes
one sentence every ``--interval`` seconds throughout; after ``--calm-before`` of them a *flood* session
sends ``--flood`` sentences as fast as it can (each one window). Latency is measured on the client,
from sending a sentence to receiving the final of its ``pt`` track: the calm stream's alone, the calm
stream's while the flood is being translated (until the flood's last final), and the flood's own.

Prints JSON and writes ``bench/results/<name>.json`` and ``<name>.png``.

    python -m bench.fairness --flood 400 --name fairness
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.latency import SENTENCES
from bench.server_process import free_port, percentile, start_server
from clients.python.client import CaptionSession, connect
from stream.wire.messages import FinalMsg

RESULTS = Path(__file__).resolve().parent / "results"
TRACK = "pt"


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "median": round(statistics.median(values)),
        "p95": round(percentile(values, 0.95)),
        "max": round(max(values)),
    }


async def finals_of(session: CaptionSession, done: dict[int, int], wanted: dict[str, int]) -> None:
    """Record when each window's final arrives, until ``wanted["count"]`` have."""
    async for item in session.received():
        message = item.message
        if isinstance(message, FinalMsg) and message.track == TRACK:
            done[message.window] = item.at_ns
            if len(done) >= wanted["count"]:
                return


async def run(url: str, flood: int, calm_before: int, interval: float) -> dict[str, Any]:
    calm_sent: dict[int, int] = {}
    calm_done: dict[int, int] = {}
    flood_sent: dict[int, int] = {}
    flood_done: dict[int, int] = {}
    async with (
        connect(url, stream="calm", tracks=("caption", TRACK)) as calm,
        connect(url, stream="flood", tracks=("caption", TRACK)) as flooder,
    ):
        flood_reader: asyncio.Task[None] | None = None
        calm_sentences = 0
        calm_wanted = {"count": 10**9}
        calm_reader = asyncio.create_task(finals_of(calm, calm_done, calm_wanted))
        started = time.monotonic_ns()
        while True:
            if calm_sentences == calm_before and flood_reader is None:
                flood_reader = asyncio.create_task(finals_of(flooder, flood_done, {"count": flood}))
                for index in range(flood):
                    flood_sent[index] = time.monotonic_ns()
                    await flooder.send_text(f"{SENTENCES[index % len(SENTENCES)][:-1]}, number {index}.")
            calm_sent[calm_sentences] = time.monotonic_ns()
            await calm.send_text(SENTENCES[calm_sentences % len(SENTENCES)])
            calm_sentences += 1
            await asyncio.sleep(interval)
            if flood_reader is not None and flood_reader.done() and calm_sentences >= calm_before + 2:
                break
        flood_end = max(flood_done.values())
        calm_wanted["count"] = calm_sentences
        if len(calm_done) < calm_sentences:
            await calm.send_text("The end.")  # one more final wakes the reader up to count again
            await asyncio.wait_for(calm_reader, 120)
        calm_reader.cancel()
    flood_start = min(flood_sent.values())
    samples = [
        {
            "sent_s": (calm_sent[w] - started) / 1e9,
            "final_ms": (calm_done[w] - calm_sent[w]) / 1e6,
            "during_flood": flood_start <= calm_sent[w] <= flood_end,
        }
        for w in sorted(calm_done)
        if w in calm_sent
    ]
    return {
        "calm_alone_final_ms": summary([s["final_ms"] for s in samples if not s["during_flood"]]),
        "calm_during_flood_final_ms": summary([s["final_ms"] for s in samples if s["during_flood"]]),
        "flood_final_ms": summary([(flood_done[w] - flood_sent[w]) / 1e6 for w in flood_done]),
        "flood_windows": len(flood_done),
        "flood_s": round((flood_end - flood_start) / 1e9, 2),
        "flood_start_s": (flood_start - started) / 1e9,
        "flood_end_s": (flood_end - started) / 1e9,
        "calm": samples,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = report["result"]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.axvspan(result["flood_start_s"], result["flood_end_s"], color="tab:red", alpha=0.15,
                 label=f"flood: {result['flood_windows']} windows of another stream")  # fmt: skip
    axis.plot([s["sent_s"] for s in result["calm"]], [s["final_ms"] / 1000 for s in result["calm"]],
              marker="o", label="calm stream: final latency")  # fmt: skip
    axis.set_xlabel("time the calm stream's sentence was sent (s)")
    axis.set_ylabel(f"{TRACK} final latency (s)")
    axis.set_title(f"one stream's flood and a calm stream ({report['name']})")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flood", type=int, default=400, help="sentences the flooding stream sends at once")
    parser.add_argument("--calm-before", type=int, default=4, help="calm sentences before the flood")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between calm sentences")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="fairness", help="output file stem")
    args = parser.parse_args()

    load_before = [round(x, 2) for x in os.getloadavg()]
    port = free_port()
    server = start_server(port, ["--no-asr", "--text-burst-chars", "1000000"])
    try:
        result = asyncio.run(run(f"ws://127.0.0.1:{port}", args.flood, args.calm_before, args.interval))
    finally:
        server.terminate()
        server.wait(timeout=60)
    report = {
        "benchmark": "fairness",
        "name": args.name,
        "flood": args.flood,
        "interval_s": args.interval,
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "result": result,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / f"{args.name}.png")
    print(json.dumps({k: v for k, v in result.items() if k != "calm"}, indent=2))


if __name__ == "__main__":
    main()
