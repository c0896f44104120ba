"""Speech in other languages through whisper base: transcription and translation quality, and what an
``en`` track (whisper's ``translate`` passes, ``engine.speech_translation``) costs a live stream.

1. **Quality, whole utterances.** Spanish speech synthesised by espeak-ng from the Reina-Valera 1909
   (Debian ``sword-text-sparv``) with the World English Bible's verses as English references
   (``sword-text-web``): whisper base's transcription WER (whisper's language-neutral normaliser) and
   its translation's chrF. The ``pytest-audioeval`` clips: language identification, and translation
   chrF where the clips carry an English reference (the greeting, the counting, the Portuguese
   pangram, which is "the quick brown fox").
2. **Cost, live.** The Spanish programme streamed in real time (100 ms chunks) to 1 and 2 streams,
   each with its caption transcriber, and with or without an ``en`` track; one recognition thread
   (``AsrWorker``) runs every pass. Recognition passes per second, the thread's busy share, and per
   window: caption final latency (from the window's last word being spoken) and ``en`` final latency
   (from the same moment).

    python -m bench.speech_languages --verses 12

Prints JSON and writes ``bench/results/speech_languages.json`` and ``speech_languages.png``.
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.audio_latency import RESULTS
from clients.python.audio_source import read_wav_16k
from engine.asr import IDENTIFY, TRANSLATE, AsrRequest, FasterWhisperAsr, language_guesses
from engine.asr_models import ensure_whisper_base
from engine.asr_worker import AsrWorker
from engine.audio import SpeechDetector
from engine.caption_windows import CaptionDraft
from engine.speech_translation import SpeechTranslation
from engine.transcriber import LiveTranscriber, TranscriberSettings
from engine.types import Window, Word
from tests.speech import audioeval_clips, silence

BOOK, CHAPTER = "Luke", 10
ENGLISH_REFERENCES = {  # the clips' English counterparts (whisper writes numbers as digits)
    "counting": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10.",
    "greeting": "Hello world.",
    "pt/pangrama": "The quick brown fox jumps over the lazy dog.",
}
GREETINGS = {"hola_mundo", "bonjour_monde", "ciao_mondo", "ola_mundo", "witaj_swiecie", "namaste_duniya"}
GREETINGS |= {"konnichiwa_sekai", "nihao_shijie"}
COUNTINGS = {"conteo", "comptage", "conteggio", "contagem", "liczenie", "ginti", "kazoeru", "jishu"}


def verse(module: str, key: str) -> str:
    out = subprocess.run(
        ["diatheke", "-b", module, "-f", "plain", "-k", key], capture_output=True, text=True, check=True
    )
    text = out.stdout.split("\n(", 1)[0].split(": ", 1)[-1]  # "Luke 10:1: ...\n(module)"
    text = re.sub(r"<G\d+>", "", text)  # Strong's numbers
    return " ".join(text.split())


def espeak(text: str, path: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", "es", "-s", "150", "-w", str(path), text], check=True)
    return read_wav_16k(path)


def basic(text: str) -> str:
    from whisper_normalizer.basic import BasicTextNormalizer

    return " ".join(BasicTextNormalizer()(text).split())


def quality(asr: FasterWhisperAsr, verses: int, workdir: Path) -> tuple[dict[str, Any], list[bytes]]:
    import jiwer
    import sacrebleu

    spanish = [verse("spaRV1909eb", f"{BOOK} {CHAPTER}:{v}") for v in range(1, verses + 1)]
    english = [verse("engWEB2015eb", f"{BOOK} {CHAPTER}:{v}") for v in range(1, verses + 1)]
    heard, translated, programme = [], [], []
    for index, text in enumerate(spanish):
        pcm = espeak(text, workdir / f"es{index}.wav")
        programme.append(pcm.tobytes() + silence(0.7))
        audio = pcm.astype(np.float32) / 32768
        [said] = asr.transcribe([AsrRequest(audio, 0, "final", language="es")])
        [into] = asr.transcribe([AsrRequest(audio, 0, "final", language="es", task=TRANSLATE)])
        heard.append(" ".join(w.text for w in said))
        translated.append(" ".join(w.text for w in into))
    clips: list[dict[str, Any]] = []
    for language in ("es", "fr", "it", "pt", "pl", "hi", "ja", "zh"):
        for name, clip in sorted(audioeval_clips(language).items()):
            audio = read_wav_16k(clip.path).astype(np.float32) / 32768
            [guess] = asr.transcribe([AsrRequest(audio, 0, "final", language=None, task=IDENTIFY)])
            [into] = asr.transcribe([AsrRequest(audio, 0, "final", language=language, task=TRANSLATE)])
            key = (
                "greeting" if name in GREETINGS else "counting" if name in COUNTINGS else f"{language}/{name}"
            )
            reference = ENGLISH_REFERENCES.get(key)
            text = " ".join(w.text for w in into)
            clips.append(
                {
                    "language": language,
                    "clip": name,
                    "identified": language_guesses(guess)[0][0],
                    "english": text,
                    "chrf": round(sacrebleu.sentence_chrf(text, [reference]).score, 1) if reference else None,
                }
            )
    scored = [c for c in clips if c["chrf"] is not None]
    result = {
        "espeak_es": {
            "verses": f"{BOOK} {CHAPTER}:1-{verses}",
            "words": sum(len(basic(s).split()) for s in spanish),
            "wer": round(float(jiwer.wer([basic(s) for s in spanish], [basic(h) for h in heard])), 3),
            "translate_chrf": round(sacrebleu.corpus_chrf(translated, [english]).score, 1),
            "samples": [
                {"es": s, "heard": h, "en": e, "translated": t}
                for s, h, e, t in zip(spanish, heard, english, translated, strict=True)
            ][:3],
        },
        "audioeval": {
            "identified": f"{sum(c['identified'] == c['language'] for c in clips)}/{len(clips)}",
            "translate_chrf": round(
                sacrebleu.corpus_chrf(
                    [c["english"] for c in scored],
                    [
                        [
                            ENGLISH_REFERENCES["greeting"]
                            if c["clip"] in GREETINGS
                            else ENGLISH_REFERENCES["counting"]
                            if c["clip"] in COUNTINGS
                            else ENGLISH_REFERENCES["pt/pangrama"]
                            for c in scored
                        ]
                    ],
                ).score,
                1,
            ),
            "clips": clips,
        },
    }
    return result, programme


def live(pcm: bytes, streams: int, with_en: bool) -> dict[str, Any]:
    """``streams`` copies of ``pcm`` in real time, each with its captions (and an ``en`` track)."""
    detector = SpeechDetector()
    worker = AsrWorker(lambda: FasterWhisperAsr({"final": ensure_whisper_base()}, cpu_threads=2))
    worker.start()
    worker.wait_ready()
    inbox: queue.SimpleQueue[tuple[Any, AsrRequest, list[Word] | Exception]] = queue.SimpleQueue()
    settings = TranscriberSettings(language="es")
    captions = [LiveTranscriber(detector=detector, settings=settings) for _ in range(streams)]
    english = (
        [SpeechTranslation(detector=detector, settings=settings) for _ in range(streams)] if with_en else []
    )
    numbered = [0] * streams
    caption_lag: list[float] = []
    english_lag: list[float] = []
    caption_end: dict[tuple[int, int], int] = {}
    started = time.perf_counter()

    def now_ms() -> float:
        return (time.perf_counter() - started) * 1000

    def take(stream: int, owner: Any, events: list[CaptionDraft | Window]) -> None:
        for event in events:
            if not isinstance(event, Window):
                continue
            if owner is captions[stream]:
                window = Window(numbered[stream], event.source, event.t0_ms, event.t1_ms)
                numbered[stream] += 1
                caption_end[(stream, window.index)] = window.t1_ms
                caption_lag.append((now_ms() - window.t1_ms) / 1000)
                if english:
                    take(stream, english[stream], english[stream].caption_closed(window))
                    if owner.finished:
                        take(stream, english[stream], english[stream].captions_finished())
            else:
                english_lag.append((now_ms() - caption_end[(stream, event.index)]) / 1000)

    def drive(stream: int, owner: Any) -> None:
        request, due = owner.step()
        take(stream, owner, due)
        if request is not None:
            worker.submit(request, lambda result, o=owner, r=request: inbox.put((o, r, result)))

    owners = [(i, t) for i, t in enumerate(captions)] + [(i, t) for i, t in enumerate(english)]
    chunk = 3200
    for offset in range(0, len(pcm) + chunk * 40, chunk):  # the programme, then 4 s to finish
        while now_ms() < offset // 32:
            try:
                owner, request, result = inbox.get(timeout=max(0.0, (offset // 32 - now_ms()) / 1000))
            except queue.Empty:
                continue
            stream = next(i for i, t in owners if t is owner)
            events = (
                owner.on_error(request) if isinstance(result, Exception) else owner.on_result(request, result)
            )
            take(stream, owner, events)
        for stream, owner in owners:
            if offset < len(pcm):
                owner.insert_audio(pcm[offset : offset + chunk])
            elif not owner.ending:
                owner.end()
            drive(stream, owner)
        if offset >= len(pcm) and all(t.finished for _, t in owners):
            break
    duration = now_ms() / 1000
    worker.stop(10)
    return {
        "streams": streams,
        "en_track": with_en,
        "audio_s": round(len(pcm) / 32000, 1),
        "passes_per_s": round(worker.stats.rows / duration, 2),
        "busy_share": round(worker.stats.busy_s / duration, 2),
        "caption_final_median_s": round(statistics.median(caption_lag), 2) if caption_lag else None,
        "caption_final_p95_s": round(float(np.percentile(caption_lag, 95)), 2) if caption_lag else None,
        "en_final_median_s": round(statistics.median(english_lag), 2) if english_lag else None,
        "en_final_p95_s": round(float(np.percentile(english_lag, 95)), 2) if english_lag else None,
        "caption_windows": len(caption_lag),
        "en_windows": len(english_lag),
    }


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        f"{r['streams']} stream{'s' if r['streams'] > 1 else ''}\n{'+ en' if r['en_track'] else 'captions'}"
        for r in runs
    ]
    x = np.arange(len(runs))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(x - 0.2, [r["caption_final_median_s"] or 0 for r in runs], 0.4, label="caption final (median)")
    left.bar(x + 0.2, [r["en_final_median_s"] or 0 for r in runs], 0.4, label="en final (median)")
    left.set_xticks(x, labels)
    left.set_ylabel("seconds after the window's last word")
    left.legend()
    right.bar(x, [r["busy_share"] for r in runs])
    right.set_xticks(x, labels)
    right.set_ylabel("recognition thread busy share")
    fig.suptitle("Spanish speech (espeak-ng), whisper base on 2 cores")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--verses", type=int, default=12, help="verses scored whole")
    parser.add_argument("--live-verses", type=int, default=4, help="verses streamed live")
    args = parser.parse_args()
    asr = FasterWhisperAsr({"final": ensure_whisper_base()}, cpu_threads=2)
    with tempfile.TemporaryDirectory() as tmp:
        result, programme = quality(asr, args.verses, Path(tmp))
    del asr
    runs = [
        live(b"".join(programme[: args.live_verses]), streams, with_en)
        for streams in (1, 2)
        for with_en in (False, True)
    ]
    result["live"] = runs
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speech_languages.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    plot(runs, RESULTS / "speech_languages.png")
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
