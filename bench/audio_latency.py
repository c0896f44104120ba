"""Audio-path latency: per-word time from being spoken to its first caption draft and to its final, for
N concurrent real-time audio streams, with WER, the recogniser's real-time factor and peak memory.

**Programme.** Every stream publishes the same audio: the 5 LibriVox clips of Debian's
``pocketsphinx-testdata`` (``tests.speech.librivox_clips``), each followed by 1 s of silence (so there
is 1 s between clips, and the last window closes on its pause as it would live), about 30 s in all;
``--piper`` appends sentences synthesised with Piper the same way; ``--script FILE`` instead speaks
that file's lines with Piper (any text: a programme the settings were never chosen on). The audio is
sent in ``--chunk-ms`` frames at real-time pace (``clients.python.audio_source.paced_chunks``);
streams start up to ``--stagger`` s apart, as independent speakers would. Only the ``caption`` track
is requested unless ``--translate TRACK`` adds a translation track (the translation model then
competes for the CPU).

**Server.** ``python -m livecanvas.cli --log-level warning serve`` on a free loopback port (speech
recognition is on by default), started afresh for every stream count N and reused for that N's runs.

**Per-word latency and WER**: see :mod:`bench.caption_scoring` (from a word's estimated spoken time to
the first caption draft that showed it, and to its final; final and draft WER over the
concatenated finals and window drafts).

As a cross-check, ``server_window_final_s`` summarises the server's own ``latency_ms`` of the caption
finals: from each window's *last* word, by a clock the server starts when the first audio frame arrives
(one chunk after the client's stream start, so it reads about ``--chunk-ms`` lower).

**Real-time factor.** The server's ``stats`` message (sent to each stream before ``bye``) carries
``asr_busy_s``, the recogniser's cumulative busy time; a run's RTF is its increase over the run divided
by (programme length x N). Below 1 the recogniser keeps up. Should a server not report ``asr_busy_s``,
RTF is estimated as (time from the end of the audio to ``bye``) / (programme length) and the report says
``rtf_source: "tail"``. ``tail_s`` (end of audio to ``bye``, the longest of the run's streams) is always
reported.

**Memory.** ``VmHWM`` (peak resident set) of the server process from ``/proc/<pid>/status`` after the
last run of each N; the server is restarted per N, so each peak is that N's own.

Medians and p95 are over all words of all runs of a stream count. Prints JSON and writes
``bench/results/audio_latency.json`` and ``audio_latency.png``. Targets: median first draft <= 1.0 s
and median final <= 3.0 s at 1 stream; with Moonshine at 4 streams, final median <= 2.0 s, p95
<= 3.5 s, first draft median <= 1.0 s, WER <= 4% (at 1 stream, final median <= 1.5 s).

**Recognisers side by side.** ``--recognisers moonshine whisper`` (the default) runs every stream count
with each (``serve --asr-model``), one after the other on the same machine, so their figures share
the machine's load; the JSON's ``summary`` and the plot have one entry per recogniser.

    python -m bench.audio_latency --streams 1 2 4 --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.caption_scoring import Caption, StreamRecord, score_stream
from bench.server_process import free_port, percentile, start_server
from clients.python.audio_source import SAMPLE_RATE, paced_chunks, read_wav_pcm16_16k
from clients.python.client import CaptionSession, connect
from stream.wire.messages import Bye, DraftMsg, ErrorMsg, FinalMsg, StatsMsg
from tests.speech import librivox_clips, silence, synthesize, wer

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
CAPTION = "caption"
GAP_S = 1.0
DRAFT_TARGET_S = 1.0
FINAL_TARGET_S = 3.0
PIPER_SENTENCES = [
    "The library opens at nine o'clock every morning.",
    "Please remember to bring your ticket to the front desk.",
    "Our next speaker has travelled all the way from Lisbon.",
    "Questions from the audience took most of the evening.",
]


@dataclass(frozen=True)
class Programme:
    """What every stream publishes: PCM16LE 16 kHz mono audio and its reference transcript."""

    pcm: bytes
    reference: str
    parts: list[str]
    lines: list[str]  # the reference, utterance by utterance

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / SAMPLE_RATE


def build_programme(piper: bool, workdir: Path, script: Path | None = None) -> Programme:
    """The LibriVox clips (then, with ``piper``, the Piper sentences), or with ``script`` only that
    file's lines (not empty, not ``#`` comments), each synthesised with Piper as one utterance; 1 s of
    silence after each."""
    gap = silence(GAP_S)
    pieces: list[bytes] = []
    texts: list[str] = []
    parts: list[str] = []
    if script is not None:
        text = script.read_text(encoding="utf-8").splitlines()
        lines = [line.strip() for line in text if line.strip() and not line.lstrip().startswith("#")]
        if not lines:
            raise SystemExit(f"{script}: no text to speak")
        for index, line in enumerate(lines):
            pieces += [read_wav_pcm16_16k(synthesize(line, workdir / f"script-{index}.wav")), gap]
            texts.append(line)
            parts.append(f"{script.name}:{index + 1}")
        return Programme(pcm=b"".join(pieces), reference=" ".join(texts), parts=parts, lines=texts)
    for clip in librivox_clips():
        pieces += [read_wav_pcm16_16k(clip.path), gap]
        texts.append(clip.text)
        parts.append(clip.name)
    if piper:
        for index, sentence in enumerate(PIPER_SENTENCES):
            pieces += [read_wav_pcm16_16k(synthesize(sentence, workdir / f"piper-{index}.wav")), gap]
            texts.append(sentence)
            parts.append(f"piper-{index}")
    return Programme(pcm=b"".join(pieces), reference=" ".join(texts), parts=parts, lines=texts)


# -- measuring ---------------------------------------------------------------------------------------


async def publish_paced(
    session: CaptionSession, programme: Programme, chunk_ms: int, record: StreamRecord
) -> None:
    """Send the programme's audio at real-time pace, then ``end``; ``record`` notes when its first
    sample was spoken and when its last was sent."""
    first = True
    async for end_ms, chunk in paced_chunks(programme.pcm, chunk_ms=chunk_ms):
        if first:
            # released once its last sample was spoken: the stream began end_ms earlier
            record.start_ns = time.monotonic_ns() - end_ms * 1_000_000
            first = False
        await session.send_audio(chunk)
    record.end_sent_ns = time.monotonic_ns()
    await session.end()


async def one_stream(
    url: str, name: str, programme: Programme, chunk_ms: int, offset_s: float, tracks: tuple[str, ...]
) -> StreamRecord:
    await asyncio.sleep(offset_s)
    record = StreamRecord()
    async with connect(url, stream=name, tracks=tracks) as session:
        publisher = asyncio.create_task(publish_paced(session, programme, chunk_ms, record))
        async for item in session.received():
            message = item.message
            if isinstance(message, DraftMsg | FinalMsg) and message.track == CAPTION:
                caption = Caption(
                    message.window, message.text, message.t0_ms, message.t1_ms, item.at_ns, message.latency_ms
                )
                (record.drafts if isinstance(message, DraftMsg) else record.finals).append(caption)
                if isinstance(message, FinalMsg) and message.error:
                    record.errors.append(f"final {message.window}: {message.error}")
            elif isinstance(message, StatsMsg):
                record.stats = {k: float(v) for k, v in message.values.items()}
            elif isinstance(message, ErrorMsg):
                record.errors.append(f"{message.code}: {message.message}")
            elif isinstance(message, Bye):
                record.bye_ns = item.at_ns
        await publisher
    return record


async def run_load(
    url: str,
    streams: int,
    run: int,
    programme: Programme,
    chunk_ms: int,
    stagger_s: float,
    tracks: tuple[str, ...],
) -> list[StreamRecord]:
    rng = random.Random(run * 1000 + streams)
    offsets = [0.0] + [rng.uniform(0, stagger_s) for _ in range(streams - 1)]
    return list(
        await asyncio.gather(
            *(
                one_stream(url, f"audio-{streams}-{run}-{s}", programme, chunk_ms, offsets[s], tracks)
                for s in range(streams)
            )
        )
    )


# -- the server --------------------------------------------------------------------------------------


def peak_rss_mib(pid: int) -> float | None:
    """``VmHWM`` of a process in MiB (None where /proc has no such field)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


# -- reporting ---------------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "p95": float("nan")}
    return {"median": round(statistics.median(values), 3), "p95": round(percentile(values, 0.95), 3)}


def measure_run(
    records: list[StreamRecord], programme: Programme, streams: int, busy_before: float | None
) -> dict[str, Any]:
    scores = [score_stream(r) for r in records]
    server_final_s = [f.latency_ms / 1000 for r in records for f in r.finals]
    busy = [r.stats["asr_busy_s"] for r in records if "asr_busy_s" in r.stats]
    busy_after = max(busy) if len(busy) == len(records) else None
    tail_s = max((r.bye_ns - r.end_sent_ns) / 1e9 for r in records)
    if busy_after is not None:
        used = busy_after - (busy_before or 0.0)
        busy_s: float | None = used
        rtf = used / (programme.duration_s * streams)
        source = "asr_busy_s"
    else:
        busy_s = None
        rtf = tail_s / programme.duration_s
        source = "tail"
    return {
        "streams": streams,
        "words": sum(len(s.final_s) for s in scores),
        "windows": sum(len(r.finals) for r in records),
        "drafts": sum(len(r.drafts) for r in records),
        "words_drafted_at_final": sum(s.words_drafted_at_final for s in scores),
        "windows_never_drafted": sum(s.windows_never_drafted for s in scores),
        "first_draft_s": spread([v for s in scores for v in s.draft_s]),
        "final_s": spread([v for s in scores for v in s.final_s]),
        "server_window_final_s": spread(server_final_s),
        "final_wer": round(wer([programme.reference] * len(scores), [s.final_text for s in scores]), 4),
        "draft_wer": round(wer([programme.reference] * len(scores), [s.draft_text for s in scores]), 4),
        "asr_busy_s": None if busy_s is None else round(busy_s, 3),
        "asr_busy_total_s": busy_after,
        "rtf": round(rtf, 3),
        "rtf_source": source,
        "tail_s": round(tail_s, 3),
        "errors": [e for r in records for e in r.errors],
        "final_texts": [s.final_text for s in scores],
        "raw": {
            "first_draft_s": [round(v, 4) for s in scores for v in s.draft_s],
            "final_s": [round(v, 4) for s in scores for v in s.final_s],
            "server_window_final_s": server_final_s,
            "draft_texts": [s.draft_text for s in scores],
        },
    }


def summarise(runs: list[dict[str, Any]], programme: Programme, peaks: dict[int, float | None]) -> Any:
    summary: dict[str, Any] = {}
    for streams in sorted({r["streams"] for r in runs}):
        mine = [r for r in runs if r["streams"] == streams]
        texts = [t for r in mine for t in r["final_texts"]]
        drafts = [t for r in mine for t in r["raw"]["draft_texts"]]
        summary[str(streams)] = {
            "runs": len(mine),
            "words": sum(r["words"] for r in mine),
            "windows": sum(r["windows"] for r in mine),
            "words_drafted_at_final": sum(r["words_drafted_at_final"] for r in mine),
            "windows_never_drafted": sum(r["windows_never_drafted"] for r in mine),
            "first_draft_s": spread([v for r in mine for v in r["raw"]["first_draft_s"]]),
            "final_s": spread([v for r in mine for v in r["raw"]["final_s"]]),
            "server_window_final_s": spread([v for r in mine for v in r["raw"]["server_window_final_s"]]),
            "final_wer": round(wer([programme.reference] * len(texts), texts), 4),
            "draft_wer": round(wer([programme.reference] * len(drafts), drafts), 4),
            "rtf": round(statistics.median(r["rtf"] for r in mine), 3),
            "rtf_per_run": [r["rtf"] for r in mine],
            "rtf_source": mine[0]["rtf_source"],
            "tail_s": round(statistics.median(r["tail_s"] for r in mine), 3),
            "peak_rss_mib": peaks.get(streams),
            "errors": sum(len(r["errors"]) for r in mine),
        }
    return summary


def plot(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per recogniser: per-word first-draft and final latency (median, p95) by stream count,
    and the recogniser's busy share (RTF x streams) on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(summaries), figsize=(6 * len(summaries), 4.2), squeeze=False)
    for axis, (recogniser, summary) in zip(axes[0], summaries.items(), strict=True):
        streams = [int(s) for s in summary]
        for key, label, colour in (
            ("first_draft_s", "first draft", "tab:blue"),
            ("final_s", "final", "tab:red"),
        ):
            medians = [summary[str(s)][key]["median"] for s in streams]
            p95s = [summary[str(s)][key]["p95"] for s in streams]
            axis.plot(streams, medians, marker="o", color=colour, label=f"{label} median")
            axis.plot(streams, p95s, marker="x", linestyle="--", color=colour, label=f"{label} p95")
        axis.axhline(
            DRAFT_TARGET_S, color="tab:blue", linestyle=":", alpha=0.7, label="draft target (median)"
        )
        axis.axhline(FINAL_TARGET_S, color="tab:red", linestyle=":", alpha=0.7, label="final target (median)")
        busy = axis.twinx()
        busy.bar(streams, [summary[str(s)]["rtf"] * s for s in streams], alpha=0.15, color="grey")
        busy.set_ylim(0, 2)
        busy.set_ylabel("recogniser busy (core-s per s)", color="grey")
        wers = ", ".join(f"{s}: {summary[str(s)]['final_wer'] * 100:.1f}%" for s in streams)
        axis.set_title(f"{recogniser} (WER {wers})", fontsize="small")
        axis.set_xticks(streams)
        axis.set_ylim(bottom=0)
        axis.set_xlabel("concurrent real-time audio streams")
        axis.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("per-word latency from spoken (s)")
    axes[0][0].legend(fontsize="x-small")
    figure.suptitle("livecanvas audio path latency, recognisers side by side")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--piper", action="store_true", help="add Piper-synthesised sentences")
    parser.add_argument("--script", type=Path, help="speak this text file's lines (Piper) instead")
    parser.add_argument("--chunk-ms", type=int, default=100, help="audio per frame (default 100)")
    parser.add_argument("--stagger", type=float, default=1.0, help="streams start up to this many s apart")
    parser.add_argument("--translate", metavar="TRACK", help="also request this translation track")
    parser.add_argument(
        "--recognisers", nargs="+", choices=("moonshine", "whisper"), default=["moonshine", "whisper"]
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]

    tracks = (CAPTION, args.translate) if args.translate else (CAPTION,)
    with tempfile.TemporaryDirectory(prefix="audio-latency-") as workdir:
        programme = build_programme(args.piper, Path(workdir), args.script)
    runs: list[dict[str, Any]] = []
    summaries: dict[str, Any] = {}
    for streams in args.streams:  # the recognisers alternate at each stream count: one run, same load
        for recogniser in args.recognisers:
            port = free_port()
            server = start_server(port, ["--asr-model", recogniser])
            busy_before: float | None = 0.0
            try:
                for run in range(args.runs):
                    records = asyncio.run(
                        run_load(
                            f"ws://127.0.0.1:{port}",
                            streams,
                            run,
                            programme,
                            args.chunk_ms,
                            args.stagger,
                            tracks,
                        )
                    )
                    result = measure_run(records, programme, streams, busy_before)
                    result.update(run=run, recogniser=recogniser, peak_rss_mib=peak_rss_mib(server.pid))
                    busy_before = result["asr_busy_total_s"]
                    runs.append(result)
            finally:
                server.terminate()
                server.wait(timeout=60)
    for recogniser in args.recognisers:
        mine = [r for r in runs if r["recogniser"] == recogniser]
        peaks = {r["streams"]: r["peak_rss_mib"] for r in mine}
        summaries[recogniser] = summarise(mine, programme, peaks)
    report = {
        "benchmark": "audio_latency",
        "programme": {"parts": programme.parts, "duration_s": round(programme.duration_s, 2)},
        "chunk_ms": args.chunk_ms,
        "stagger_s": args.stagger,
        "tracks": list(tracks),
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "targets_s": {"first_draft_median": DRAFT_TARGET_S, "final_median": FINAL_TARGET_S},
        "latency_estimate": "word ends spread linearly over each final window's t0_ms..t1_ms",
        "summary": summaries,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "audio_latency.json").write_text(json.dumps({**report, "runs": runs}, indent=2))
    plot(summaries, args.out / "audio_latency.png")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
