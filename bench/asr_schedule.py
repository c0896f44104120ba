"""The live transcriber's schedule on a virtual clock: per-word draft and final latency and WER for a
choice of transcriber settings, with real recognition but no load noise.

A live run (``bench.audio_latency``) measures everything at once, on a machine whose load varies. To
compare commit-policy settings fairly, this replays the same programme through the live transcriber of
``--recogniser`` (``moonshine``: ``SegmentTranscriber`` and ``SegmentSettings``; ``whisper``:
``LiveTranscriber`` and ``TranscriberSettings``) with the real models, but on a virtual clock: audio
arrives in 100 ms chunks at real-time pace, a recognition pass started at virtual time *t* returns at
*t* + its duration, and meanwhile audio keeps arriving. A pass's duration is its measured wall time
(``--pass-ms measured``, the default) or a fixed figure (``--pass-ms 840``), which removes the
machine's noise entirely. Drafts and windows are numbered
as the hub numbers them, and scored exactly as ``bench.audio_latency`` scores a live stream
(``score_stream``: per-word latency from when the word was spoken, final and draft WER).

    python -m bench.asr_schedule --recogniser whisper --grid right_context_ms=1000,600 --pass-ms 840
    python -m bench.asr_schedule --recogniser moonshine --grid interval_ms=200,300,500 --piper

Every grid point runs the whole programme; prints JSON and writes ``bench/results/asr_schedule.json``
and a bar plot of the median latencies, ``asr_schedule.png``.

``--translate en-pt`` also measures what the windows cost the translation tracks, which translate one
caption window at a time: the teacher's translations of the final windows, joined, scored (chrF)
against its translations of the programme's whole utterances. Shorter windows make earlier finals and
choppier translations; this says how much choppier.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import sacrebleu

from bench.audio_latency import DRAFT_TARGET_S, FINAL_TARGET_S, RESULTS, build_programme
from bench.caption_scoring import Caption, StreamRecord, score_stream
from bench.server_process import percentile
from engine.asr import Asr, AsrRequest, FasterWhisperAsr
from engine.asr_models import ensure_moonshine_base, ensure_whisper_base, whisper_tiny_en
from engine.audio import SpeechDetector
from engine.caption_windows import CaptionDraft
from engine.moonshine import MoonshineAsr
from engine.segment_transcriber import SegmentSettings, SegmentTranscriber
from engine.transcriber import LiveTranscriber, TranscriberSettings
from engine.types import Window
from tests.speech import wer

CHUNK_MS = 100
MS = 1_000_000  # ns per ms


def simulate(
    asr: Asr,
    detector: SpeechDetector,
    pcm: bytes,
    settings: TranscriberSettings | SegmentSettings,
    pass_ms: int | None,
) -> tuple[StreamRecord, list[float], list[float]]:
    """One stream on the virtual clock; returns what a client would have recorded, and the final and
    draft passes' times (``pass_ms``, when set, is the final passes' virtual duration; draft passes
    always take their measured time)."""
    transcriber = (
        LiveTranscriber(detector=detector, settings=settings)
        if isinstance(settings, TranscriberSettings)
        else SegmentTranscriber(detector=detector, settings=settings)
    )
    record = StreamRecord(start_ns=0)
    next_window = 0
    pass_times: list[float] = []
    draft_times: list[float] = []
    in_flight: tuple[AsrRequest, list[Any], int] | None = None  # request, its words, when it returns

    def take(events: list[CaptionDraft | Window], now_ms: int) -> None:
        nonlocal next_window
        for event in events:
            if isinstance(event, Window):
                record.finals.append(
                    Caption(next_window, event.source, event.t0_ms, event.t1_ms, now_ms * MS, 0)
                )
                next_window += 1
            else:
                record.drafts.append(
                    Caption(next_window, event.text, event.t0_ms, event.t1_ms, now_ms * MS, 0)
                )

    def start(now_ms: int) -> None:
        nonlocal in_flight
        request, due = transcriber.step()
        take(due, now_ms)
        if request is not None:
            started = time.perf_counter()
            words = asr.transcribe([request])[0]
            took_ms = (time.perf_counter() - started) * 1000
            if request.pass_name == "draft":
                draft_times.append(took_ms)
                duration = took_ms
            else:
                pass_times.append(took_ms)
                duration = pass_ms if pass_ms is not None else took_ms
            in_flight = (request, words, now_ms + int(duration))

    chunk = CHUNK_MS * 32
    now_ms = 0
    for offset in range(0, len(pcm), chunk):
        now_ms += CHUNK_MS
        if in_flight is not None and in_flight[2] <= now_ms:
            request, words, ready_ms = in_flight
            in_flight = None
            take(transcriber.on_result(request, words), ready_ms)
        transcriber.insert_audio(pcm[offset : offset + chunk])
        if in_flight is None:
            start(now_ms)
    transcriber.end()
    while not transcriber.finished:
        if in_flight is not None:
            request, words, ready_ms = in_flight
            in_flight = None
            now_ms = max(now_ms, ready_ms)
            take(transcriber.on_result(request, words), now_ms)
        start(now_ms)
        if in_flight is None and not transcriber.finished:
            raise RuntimeError("the transcriber neither asked for a pass nor finished")
    return record, pass_times, draft_times


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [", ".join(f"{k}={v}" for k, v in r["settings"].items()) or "defaults" for r in results]
    positions = range(len(results))
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(results)), 4))
    width = 0.4
    for shift, key, label, colour in (
        (-width / 2, "draft", "first draft", "tab:blue"),
        (width / 2, "final", "final", "tab:red"),
    ):
        medians = [r[f"{key}_median_s"] for r in results]
        axis.bar([i + shift for i in positions], medians, width, color=colour, label=f"{label} median")
    axis.axhline(DRAFT_TARGET_S, color="tab:blue", linestyle=":", label="draft target")
    axis.axhline(FINAL_TARGET_S, color="tab:red", linestyle=":", label="final target")
    axis.set_xticks(list(positions), labels, fontsize="x-small", rotation=15)
    axis.set_ylabel("per-word latency from spoken (s)")
    axis.set_title("transcriber schedule on a virtual clock")
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def parse_grid(
    items: list[str], settings_type: type[TranscriberSettings | SegmentSettings]
) -> list[dict[str, Any]]:
    known = {f.name: f for f in fields(settings_type)}
    axes: list[list[tuple[str, Any]]] = []
    for item in items:
        name, _, values = item.partition("=")
        if name not in known:
            raise SystemExit(f"unknown setting {name!r}; known: {', '.join(known)}")
        default = getattr(settings_type(), name)
        value_type = type(default) if default is not None else str
        axes.append(
            [(name, value_type(v) if value_type is not bool else v == "true") for v in values.split(",")]
        )
    return [dict(point) for point in itertools.product(*axes)] if axes else [{}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--grid", nargs="*", default=[], help="setting=v1,v2 ... (the recogniser's settings fields)"
    )
    parser.add_argument("--recogniser", choices=("moonshine", "whisper"), default="moonshine")
    parser.add_argument("--pass-ms", default="measured", help="'measured' or a fixed pass duration in ms")
    parser.add_argument("--context-pad-s", type=float, default=None, help="short encoder context for passes")
    parser.add_argument(
        "--draft-model", choices=("base", "tiny.en"), default="base", help="the draft pass's model"
    )
    parser.add_argument(
        "--draft-pad-s", type=float, default=None, help="short encoder context for draft passes (s)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--piper", action="store_true", help="append Piper-synthesised sentences")
    parser.add_argument("--script", type=Path, help="speak this text file's lines (Piper) instead")
    parser.add_argument("--out", type=Path, default=RESULTS / "asr_schedule.json")
    parser.add_argument("--translate", metavar="DIRECTION", help="e.g. en-pt: score window translations")
    args = parser.parse_args()
    pass_ms = None if args.pass_ms == "measured" else int(args.pass_ms)
    padding = {"final": args.context_pad_s} if args.context_pad_s else {}
    if args.draft_pad_s is not None:
        padding["draft"] = args.draft_pad_s
    asr: Asr
    kind: type[TranscriberSettings | SegmentSettings]
    if args.recogniser == "whisper":
        draft_model = ensure_whisper_base() if args.draft_model == "base" else whisper_tiny_en()
        asr = FasterWhisperAsr(
            {"final": ensure_whisper_base(), "draft": draft_model},
            cpu_threads=args.threads,
            context_pad_s=padding,
        )
        kind = TranscriberSettings
    else:
        asr, kind = MoonshineAsr(ensure_moonshine_base(), threads=args.threads), SegmentSettings
    detector = SpeechDetector()
    with tempfile.TemporaryDirectory() as workdir:
        programme = build_programme(args.piper, Path(workdir), args.script)
    translate: Callable[[list[str]], list[str]] | None = None
    whole: list[str] = []
    if args.translate:
        from engine.marian.teacher import load_ported, wheel_students

        translate = load_ported(wheel_students()[args.translate]).translate
        whole = translate(programme.lines)
    results = []
    for point in parse_grid(args.grid, kind):
        settings = replace(kind(), **point)
        record, pass_times, draft_times = simulate(asr, detector, programme.pcm, settings, pass_ms)
        score = score_stream(record)
        result = {
            "settings": point,
            "draft_median_s": round(statistics.median(score.draft_s), 3),
            "draft_p95_s": round(percentile(score.draft_s, 0.95), 3),
            "final_median_s": round(statistics.median(score.final_s), 3),
            "final_p95_s": round(percentile(score.final_s, 0.95), 3),
            "final_wer": round(wer([programme.reference], [score.final_text]), 4),
            "draft_wer": round(wer([programme.reference], [score.draft_text]), 4),
            "windows": len(record.finals),
            "words_drafted_at_final": score.words_drafted_at_final,
            "pass_ms_median": round(statistics.median(pass_times)),
            "draft_pass_ms_median": round(statistics.median(draft_times)) if draft_times else None,
            "passes": len(pass_times),
            "window_words_median": statistics.median(len(f.text.split()) for f in record.finals),
        }
        if translate is not None:
            windows = [f.text for f in sorted(record.finals, key=lambda f: f.window) if f.text.strip()]
            joined = " ".join(translate(windows))
            result["window_translation_chrf"] = round(
                sacrebleu.corpus_chrf([joined], [[" ".join(whole)]]).score, 2
            )
        results.append(result)
        print(json.dumps(result), flush=True)
    report = {
        "recogniser": args.recogniser,
        "pass_ms": args.pass_ms,
        "context_pad_s": args.context_pad_s,
        "draft_model": args.draft_model,
        "draft_pad_s": args.draft_pad_s,
        "piper": args.piper,
        "script": str(args.script) if args.script else None,
        "defaults": asdict(kind()),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
