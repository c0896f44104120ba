"""Translation tracks on the audio path, three ways side by side: translate a window once its caption
is final (``--open-windows off``, what the server did before), re-translate every caption draft from a
blank canvas (``restart``: the drafter fills it and the teacher verifies it, so each draft is the
teacher's translation from scratch), and edit the window's canvas in place as its caption grows
(``edit``, the default).

**Programme and load.** As :mod:`bench.audio_latency`: the LibriVox clips (``--piper`` adds Piper
sentences; ``--script FILE`` speaks a file's lines instead), sent at real-time pace by 1 and 4 streams,
each subscribed to ``caption`` and one translation track (``--track``, default ``pt-BR``). A server per
mode and stream count, started afresh; the modes alternate at each stream count so they share the
machine's load.

**Per mode and stream count** (each run's median and p95 over its words, then the median over runs;
:mod:`bench.translation_scoring`):
``shown_s`` (a translated word on screen in the text it keeps, from when it was spoken), ``final_s``
(its final), NE (normalized erasure), draft readability (repeated words, share of real words where a
word list is installed), ``final_chrf`` (the track's finals against the teacher's translation of the
caption finals the viewer got: 100 when every final is the teacher's), the translator's busy seconds
per second of audio (``engine_busy_s`` of the server's ``stats``) and the caption's own latency and WER
(:mod:`bench.caption_scoring`), which must not get worse.

**Display rule sweep.** ``--sweep`` runs ``edit`` at one stream once more with nothing held back and
no agreement (the hub then sends every engine draft that adds a word), and replays each window's
drafts through :func:`stream.draft_display.shown` with 0..3 words held back, with and without
agreement, offline: how NE and ``shown_s`` trade. The defaults were chosen this way on the LibriVox +
Piper programme (the dev speech), never on a held-out script.

Writes ``bench/results/translation_latency.json`` and ``.png``.

    python -m bench.translation_latency --streams 1 4 --runs 2 --piper --sweep-hold-back
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.audio_latency import Programme, build_programme, peak_rss_mib, publish_paced, spread
from bench.caption_scoring import Caption, StreamRecord, score_stream
from bench.server_process import free_port, start_server
from bench.translation_scoring import (
    TrackRecord,
    normalized_erasure,
    real_word_share,
    score_track,
    word_list,
)
from clients.python.client import connect
from stream.draft_display import DraftDisplay, shown
from stream.wire.messages import Bye, DraftMsg, ErrorMsg, FinalMsg, StatsMsg
from tests.speech import normalize, wer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CAPTION = "caption"
MODES = ("off", "restart", "edit")
WORD_LISTS = {"pt": Path("/usr/share/dict/brazilian"), "en": Path("/usr/share/dict/words")}
SHOWN_TARGET_S = 2.0
NE_TARGET = 0.3


@dataclass
class Session:
    caption: StreamRecord = field(default_factory=StreamRecord)
    track: TrackRecord = field(default_factory=TrackRecord)


async def one_stream(url: str, name: str, programme: Programme, track: str, offset_s: float) -> Session:
    await asyncio.sleep(offset_s)
    session = Session()
    async with connect(url, stream=name, tracks=(CAPTION, track)) as connection:
        publisher = asyncio.create_task(publish_paced(connection, programme, 100, session.caption))
        async for item in connection.received():
            message = item.message
            if isinstance(message, DraftMsg | FinalMsg):
                seen = Caption(
                    message.window, message.text, message.t0_ms, message.t1_ms, item.at_ns, message.latency_ms
                )
                record = session.caption if message.track == CAPTION else session.track
                (record.drafts if isinstance(message, DraftMsg) else record.finals).append(seen)
                if isinstance(message, FinalMsg) and message.error:
                    session.caption.errors.append(f"{message.track} {message.window}: {message.error}")
            elif isinstance(message, StatsMsg):
                session.caption.stats = {k: float(v) for k, v in message.values.items()}
            elif isinstance(message, ErrorMsg):
                session.caption.errors.append(f"{message.code}: {message.message}")
            elif isinstance(message, Bye):
                session.caption.bye_ns = item.at_ns
        await publisher
    return session


async def run_load(url: str, streams: int, run: int, programme: Programme, track: str) -> list[Session]:
    rng = random.Random(run * 1000 + streams)
    offsets = [0.0] + [rng.uniform(0, 1.0) for _ in range(streams - 1)]
    return list(
        await asyncio.gather(
            *(
                one_stream(url, f"tr-{streams}-{run}-{s}", programme, track, offsets[s])
                for s in range(streams)
            )
        )
    )


def teacher_translations(texts: list[str], source: str, target: str) -> list[str]:
    """The teacher's greedy translations (the finals' reference)."""
    from engine.marian.teacher import load_ported, wheel_students

    direction = f"{source.split('-')[0]}-{target.split('-')[0]}"
    return load_ported(wheel_students()[direction]).translate(texts)


def measure(
    sessions: list[Session],
    programme: Programme,
    streams: int,
    busy_before: float,
    known: frozenset[str] | None,
) -> dict[str, Any]:
    captions = [score_stream(s.caption) for s in sessions]
    tracks = [score_track(s.track, s.caption.start_ns) for s in sessions]
    busy = max((s.caption.stats.get("engine_busy_s", 0.0) for s in sessions), default=0.0)
    source_words = frozenset(normalize(w) for c in captions for w in c.final_text.split())
    words = [w for t in tracks for w in t.draft_words]
    erased, final_words = sum(t.erased for t in tracks), sum(t.final_words for t in tracks)
    return {
        "streams": streams,
        "shown_s": spread([v for t in tracks for v in t.shown_s]),
        "final_s": spread([v for t in tracks for v in t.final_s]),
        "ne": round(erased / final_words, 3) if final_words else None,
        "draft_words": len(words),
        "draft_repeats": sum(t.repeats for t in tracks),
        "real_word_share": None if known is None else round(real_word_share(words, known, source_words), 4),
        "windows": sum(t.windows for t in tracks),
        "windows_drafted_before_final": sum(t.windows_drafted_before_final for t in tracks),
        "translator_busy_per_audio_s": round((busy - busy_before) / (programme.duration_s * streams), 4),
        "engine_busy_total_s": busy,
        "caption_first_draft_s": spread([v for c in captions for v in c.draft_s]),
        "caption_final_s": spread([v for c in captions for v in c.final_s]),
        "caption_wer": round(wer([programme.reference] * len(captions), [c.final_text for c in captions]), 4),
        "errors": [e for s in sessions for e in s.caption.errors],
        "pairs": [
            [c.text, t.text]
            for s in sessions
            for c in sorted(s.caption.finals, key=lambda f: f.window)
            for t in s.track.finals
            if t.window == c.window
        ],
        "window_texts": [
            [
                *(
                    d.text
                    for d in sorted(s.track.drafts, key=lambda d: d.at_ns)
                    if d.window == f.window and d.at_ns <= f.at_ns
                ),
                f.text,
            ]
            for s in sessions
            for f in s.track.finals
        ],
        "raw_shown": [s.track for s in sessions],
    }


def sweep(raw: list[TrackRecord], starts: list[int]) -> list[dict[str, Any]]:
    """Replay the drafts a hub sent with nothing held back through other display rules (module
    docstring)."""
    rows = []
    for agreement, hold_back in [(a, k) for a in (False, True) for k in range(4)]:
        display = DraftDisplay(hold_back_words=hold_back, agreement=agreement)
        shown_s: list[float] = []
        windows: list[list[str]] = []
        for record, start in zip(raw, starts, strict=True):
            replayed = TrackRecord(finals=record.finals)
            for final in record.finals:
                on_screen: str | None = None
                previous: str | None = None
                for draft in sorted(record.drafts, key=lambda d: d.at_ns):
                    if draft.window != final.window or draft.at_ns > final.at_ns:
                        continue
                    text = shown(display, on_screen, draft.text, previous)
                    previous = draft.text
                    if text is not None:
                        on_screen = text
                        replayed.drafts.append(replace(draft, text=text))
            score_ = score_track(replayed, start)
            shown_s += score_.shown_s
            windows += [
                [*(d.text for d in replayed.drafts if d.window == f.window), f.text] for f in replayed.finals
            ]
        rows.append(
            {
                "agreement": agreement,
                "hold_back_words": hold_back,
                "shown_s": spread(shown_s),
                "ne": round(normalized_erasure(windows), 3),
            }
        )
    return rows


def plot(summary: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, erasure) = plt.subplots(1, 2, figsize=(11, 4))
    for mode, rows in summary.items():
        counts = sorted(rows, key=int)
        latency.plot(
            counts, [rows[n]["shown_s"]["median"] for n in counts], marker="o", label=f"{mode} shown"
        )
        latency.plot(
            counts,
            [rows[n]["final_s"]["median"] for n in counts],
            linestyle="--",
            marker="x",
            label=f"{mode} final",
        )
        erasure.bar([f"{mode}\n{n}" for n in counts], [rows[n]["ne"] or 0 for n in counts])
    latency.axhline(SHOWN_TARGET_S, color="grey", linewidth=0.8)
    latency.set_xlabel("streams")
    latency.set_ylabel("s after the word was spoken (median)")
    latency.legend(fontsize=7)
    erasure.axhline(NE_TARGET, color="grey", linewidth=0.8)
    erasure.set_ylabel("normalized erasure")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--piper", action="store_true")
    parser.add_argument("--script", type=Path)
    parser.add_argument("--track", default="pt-BR")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--hold-back", type=int, default=DraftDisplay().hold_back_words)
    parser.add_argument(
        "--agreement", action=argparse.BooleanOptionalAction, default=DraftDisplay().agreement
    )
    parser.add_argument("--sweep", action="store_true", help="also sweep the display rule (module docstring)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="translation_latency")
    args = parser.parse_args()
    known = word_list(WORD_LISTS.get(args.track.split("-")[0].lower(), Path("/nonexistent")))
    with tempfile.TemporaryDirectory(prefix="translation-latency-") as workdir:
        programme = build_programme(args.piper, Path(workdir), args.script)
    plans = [(n, mode, args.hold_back, args.agreement) for n in args.streams for mode in args.modes]
    if args.sweep:
        plans.insert(0, (1, "sweep", 0, False))
    runs: list[dict[str, Any]] = []
    for streams, mode, hold_back, agreement in plans:
        port = free_port()
        server_mode = "edit" if mode == "sweep" else mode
        rule = [
            "--draft-hold-back",
            str(hold_back),
            "--draft-agreement" if agreement else "--no-draft-agreement",
        ]
        server = start_server(port, ["--open-windows", server_mode, *rule])
        busy_before = 0.0
        try:
            for run in range(args.runs):
                sessions = asyncio.run(
                    run_load(f"ws://127.0.0.1:{port}", streams, run, programme, args.track)
                )
                result = measure(sessions, programme, streams, busy_before, known)
                busy_before = result.pop("engine_busy_total_s")
                result.update(mode=mode, run=run, hold_back=hold_back, agreement=agreement)
                result.update(peak_rss_mib=peak_rss_mib(server.pid))
                result["starts"] = [s.caption.start_ns for s in sessions]
                runs.append(result)
        finally:
            server.terminate()
            server.wait(timeout=60)
    pairs = [p for r in runs for p in r["pairs"]]
    references = teacher_translations([c for c, _ in pairs], "en", args.track) if pairs else []
    import sacrebleu

    summary: dict[str, dict[str, Any]] = {}
    offset = 0
    for r in runs:
        mine = r.pop("pairs")
        refs = references[offset : offset + len(mine)]
        offset += len(mine)
        r["final_chrf"] = (
            round(sacrebleu.corpus_chrf([t for _, t in mine], [refs]).score, 2) if mine else None
        )
        r["finals_teachers"] = sum(t == ref for (_, t), ref in zip(mine, refs, strict=True))
        r["finals"] = len(mine)
    sweep_rows = None
    for mode in {r["mode"] for r in runs}:
        for streams in sorted({r["streams"] for r in runs if r["mode"] == mode}):
            group = [r for r in runs if r["mode"] == mode and r["streams"] == streams]
            if mode == "sweep":
                sweep_rows = sweep(
                    [t for r in group for t in r["raw_shown"]],
                    [s for r in group for s in r["starts"]],
                )
                continue
            summary.setdefault(mode, {})[str(streams)] = {
                "shown_s_median_of_runs": sorted(r["shown_s"]["median"] for r in group)[len(group) // 2],
                "shown_s": spread_of(group, "shown_s"),
                "final_s": spread_of(group, "final_s"),
                "ne": median([r["ne"] for r in group]),
                "final_chrf": median([r["final_chrf"] for r in group]),
                "finals_teachers": ratio(group, "finals_teachers", "finals"),
                "draft_repeats": sum(r["draft_repeats"] for r in group),
                "real_word_share": median([r["real_word_share"] for r in group]),
                "translator_busy_per_audio_s": median([r["translator_busy_per_audio_s"] for r in group]),
                "caption_final_s": spread_of(group, "caption_final_s"),
                "caption_first_draft_s": spread_of(group, "caption_first_draft_s"),
                "caption_wer": median([r["caption_wer"] for r in group]),
                "windows_drafted_before_final": ratio(group, "windows_drafted_before_final", "windows"),
                "errors": [e for r in group for e in r["errors"]],
            }
    for r in runs:
        r.pop("raw_shown")
    report = {
        "benchmark": "translation_latency",
        "programme": {"parts": programme.parts, "duration_s": round(programme.duration_s, 2)},
        "track": args.track,
        "hold_back_words": args.hold_back,
        "agreement": args.agreement,
        "cpu_count": os.cpu_count(),
        "word_list": known is not None,
        "summary": summary,
        "hold_back_sweep": sweep_rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps({**report, "runs": runs}, indent=2))
    plot(summary, args.out / f"{args.name}.png")
    print(json.dumps(report, indent=2))


def median(values: list[Any]) -> Any:
    present = sorted(v for v in values if v is not None)
    return present[len(present) // 2] if present else None


def ratio(group: list[dict[str, Any]], part: str, whole: str) -> str:
    return f"{sum(r[part] for r in group)}/{sum(r[whole] for r in group)}"


def spread_of(group: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Median and p95 of the runs' medians and p95s (each run's own figures, then their median)."""
    return {stat: median([r[key][stat] for r in group]) for stat in ("median", "p95")}


if __name__ == "__main__":
    main()
