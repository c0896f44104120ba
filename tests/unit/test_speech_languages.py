"""Speech in many languages: whisper's language identification (``source_lang: "auto"``), whisper's
translation into English aligned to the caption's windows, and a user's own faster-whisper model.

The rules are driven with scripted recogniser answers over real speech (so voice activity detection
runs for real); then the same objects run with real whisper base on ``pytest-audioeval``'s clips.
"""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clients.python.audio_source import read_wav_16k
from engine.asr import IDENTIFY, TRANSLATE, AsrRequest, FasterWhisperAsr, language_words
from engine.asr_models import ensure_whisper_base
from engine.audio import SpeechDetector
from engine.caption_windows import CaptionDraft
from engine.errors import ModelResolutionError
from engine.language_id import AutoLanguageTranscriber, LanguageIdSettings
from engine.speech_translation import SpeechTranslation
from engine.transcriber import LiveTranscriber, Transcriber, TranscriberSettings
from engine.types import Window, Word
from tests.speech import audioeval_clips, cer, librivox_clips, silence

CHUNK = 3200  # 100 ms


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector()


@functools.cache
def whisper() -> FasterWhisperAsr:
    return FasterWhisperAsr({"final": ensure_whisper_base()}, cpu_threads=2)


def spoken(language: str, names: tuple[str, ...] | None = None) -> tuple[bytes, str]:
    """The language's clips (all, or ``names``) with 1 s of silence after each, and their texts."""
    clips = audioeval_clips(language)
    chosen = [clips[n] for n in (names or tuple(sorted(clips)))]
    pcm = b"".join(read_wav_16k(c.path).tobytes() + silence(1.0) for c in chosen)
    return pcm, " ".join(c.text for c in chosen)


def run(
    transcriber: Transcriber,
    pcm: bytes,
    answer: Callable[[AsrRequest], list[Word]],
    *,
    until: Callable[[], bool] = lambda: False,
) -> list[CaptionDraft | Window]:
    """Feed ``pcm`` in 100 ms chunks, then end; every request is answered at once by ``answer``."""
    events: list[CaptionDraft | Window] = []

    def step() -> None:
        request, due = transcriber.step()
        events.extend(due)
        if request is not None:
            events.extend(transcriber.on_result(request, answer(request)))

    for start in range(0, len(pcm), CHUNK):
        transcriber.insert_audio(pcm[start : start + CHUNK])
        step()
        if until():
            return events
    transcriber.end()
    for _ in range(50):
        step()
        if transcriber.finished:
            return events
    raise AssertionError("the transcriber did not finish")


def real(request: AsrRequest) -> list[Word]:
    return whisper().transcribe([request])[0]


# -- language identification, scripted ---------------------------------------------------------------


def test_auto_waits_for_enough_speech_asks_again_when_unsure_then_hands_everything_over(
    detector: SpeechDetector,
) -> None:
    made: list[LiveTranscriber] = []

    def make(language: str) -> Transcriber:
        made.append(LiveTranscriber(detector=detector, settings=TranscriberSettings(language=language)))
        return made[-1]

    auto = AutoLanguageTranscriber(
        detector, make, LanguageIdSettings(min_speech_ms=2_000, retry_speech_ms=1_500)
    )
    speech = read_wav_16k(librivox_clips()[0].path).tobytes()
    pcm = silence(3.0) + speech
    asked: list[AsrRequest] = []

    def answer(request: AsrRequest) -> list[Word]:
        assert request.task == IDENTIFY
        assert request.language is None
        asked.append(request)
        end = request.offset_ms + len(request.audio) // 16
        unsure = [("en", 0.4), ("nl", 0.3)]
        return language_words(unsure if len(asked) == 1 else [("en", 0.9)], request.offset_ms, end)

    fed = 0
    for start in range(0, len(pcm), CHUNK):
        auto.insert_audio(pcm[start : start + CHUNK])
        fed += len(pcm[start : start + CHUNK])
        request, _ = auto.step()
        if request is not None:
            auto.on_result(request, answer(request))
        if auto.inner is not None:
            break
    assert len(asked) == 2  # unsure at first: asked again once more speech was heard
    first, second = asked
    assert first.offset_ms >= 2_500  # the leading silence is not speech
    assert 2_000 <= len(first.audio) // 16 < 2_600  # the first speech, as soon as there was enough
    assert len(second.audio) // 16 >= len(first.audio) // 16 + 1_500
    assert auto.detected_language == "en"
    assert auto.language_probability == pytest.approx(0.9)
    [inner] = made
    assert inner.settings.language == "en"
    # the chosen transcriber got everything, on the stream's clock (the lead-in as silence)
    assert inner.buffer.end_ms == fed // 32
    assert inner.buffer.samples(0)[: 16 * 1_000].max() == 0.0  # the first second: silence, as fed
    request, _ = auto.step()  # from now on the calls are the inner transcriber's
    assert request is not None
    assert request.task == "transcribe"
    assert request.language == "en"
    assert request is inner._in_flight


def test_auto_on_silence_alone_finishes_without_asking(detector: SpeechDetector) -> None:
    auto = AutoLanguageTranscriber(detector, lambda language: pytest.fail("no language to make"))
    run(auto, silence(6.0, noise_dbfs=-60.0), lambda request: pytest.fail("silence was sent"))
    assert auto.finished
    assert auto.detected_language is None


def test_auto_falls_back_after_repeated_failures(detector: SpeechDetector) -> None:
    made: list[str] = []

    def make(language: str) -> Transcriber:
        made.append(language)
        return LiveTranscriber(detector=detector, settings=TranscriberSettings(language=language))

    auto = AutoLanguageTranscriber(detector, make, LanguageIdSettings(fallback="pt"))
    speech = read_wav_16k(librivox_clips()[0].path).tobytes()
    for start in range(0, len(speech), CHUNK):
        auto.insert_audio(speech[start : start + CHUNK])
        request, _ = auto.step()
        if request is not None:
            assert auto.on_error(request) == []
        if auto.inner is not None:
            break
    assert made == ["pt"]
    assert auto.detected_language == "pt"
    assert auto.language_probability == 0.0


# -- language identification, real whisper ------------------------------------------------------------


@pytest.mark.parametrize("language", ["es", "fr", "it", "pt", "ja", "zh", "en"])
def test_whisper_identifies_the_spoken_language(detector: SpeechDetector, language: str) -> None:
    auto = AutoLanguageTranscriber(
        detector, lambda code: LiveTranscriber(detector=detector, settings=TranscriberSettings(language=code))
    )
    pcm, _ = spoken(language)
    run(auto, pcm, real, until=lambda: auto.inner is not None)
    assert auto.detected_language == language
    assert auto.language_probability >= 0.5


def test_auto_captions_french_in_french_once_identified(detector: SpeechDetector) -> None:
    auto = AutoLanguageTranscriber(
        detector, lambda code: LiveTranscriber(detector=detector, settings=TranscriberSettings(language=code))
    )
    pcm, text = spoken("fr", ("pangrama", "bonjour_monde"))
    pcm = silence(2.0) + pcm  # held back as silence until the language is known: the clock must hold
    events = run(auto, pcm, real)
    assert auto.detected_language == "fr"
    windows = [e for e in events if isinstance(e, Window)]
    captions = " ".join(w.source for w in windows)
    assert cer(text, captions) < 0.25, captions
    assert windows[0].t0_ms >= 1_500  # whisper places words a few tenths early; 1 s lost would show
    assert windows[-1].t1_ms <= len(pcm) // 32


# -- translation into English, scripted --------------------------------------------------------------


def english(*spec: tuple[str, int]) -> list[Word]:
    """Words at (text, midpoint ms), 200 ms long."""
    return [Word(text, mid - 100, mid + 100) for text, mid in spec]


def caption(index: int, t0: int, t1: int) -> Window:
    return Window(index=index, source=f"caption {index}", t0_ms=t0, t1_ms=t1)


def test_english_goes_out_per_caption_window_once_nothing_more_can_land_in_it(
    detector: SpeechDetector,
) -> None:
    speech = read_wav_16k(librivox_clips()[0].path).tobytes()  # 7.1 s
    script = english(
        ("Good", 500), ("evening,", 900), ("friends.", 1_600), ("Welcome", 2_600), ("home.", 3_000)
    )
    script += english(("Thank", 4_200), ("you.", 4_600))
    translation = SpeechTranslation(detector=detector, settings=TranscriberSettings(language="es"))

    def answer(request: AsrRequest) -> list[Word]:
        assert request.task == TRANSLATE
        assert request.language == "es"
        end = request.offset_ms + len(request.audio) // 16
        return [w for w in script if request.offset_ms <= w.t0_ms and w.t1_ms <= end]

    events: list[CaptionDraft | Window] = []
    for start in range(0, 32 * 2_500, CHUNK):  # 2.5 s heard: "Good evening, friends." confirmed
        translation.insert_audio(speech[start : start + CHUNK])
        request, due = translation.step()
        events += due
        if request is not None:
            events += translation.on_result(request, answer(request))
    assert not [e for e in events if isinstance(e, Window)]  # confirmed English waits for its caption
    assert any(isinstance(e, CaptionDraft) and e.text.startswith("Good evening") for e in events)
    # "friends." (midpoint 1.6 s) is confirmed, but nothing confirmed lies past 1.8 s yet and the last
    # pass (2.5 s) has not heard 800 ms past it: the window waits
    assert translation.caption_closed(caption(7, 0, 1_800)) == []
    later = run(translation, speech[32 * 2_500 :], answer)
    assert [(w.index, w.source) for w in later if isinstance(w, Window)] == [(7, "Good evening, friends.")]
    assert translation.finished
    assert not translation.complete
    with pytest.raises(ValueError, match="out of order"):
        translation.caption_closed(caption(7, 0, 1_800))
    # the English has finished, but the newest caption window may still be followed by another, which
    # its words could belong to; a caption window with no English in it gets an empty final
    assert translation.caption_closed(caption(8, 1_900, 2_000)) == []
    assert translation.caption_closed(caption(9, 2_100, 3_100)) == [Window(8, "", 1_900, 2_000)]
    assert translation.caption_closed(caption(10, 3_900, 4_300)) == [Window(9, "Welcome home.", 2_100, 3_100)]
    # once the caption finished, its last window takes every English word left
    assert translation.captions_finished() == [Window(10, "Thank you.", 3_900, 4_300)]
    assert translation.complete
    with pytest.raises(ValueError, match="after the caption finished"):
        translation.caption_closed(caption(11, 5_000, 5_500))


# -- translation into English, real whisper -----------------------------------------------------------


def test_spanish_speech_gets_an_english_track_aligned_to_its_captions(detector: SpeechDetector) -> None:
    """The caption transcriber and the translation hear the same audio; each caption window, as it
    closes, is handed to the translation, which answers with the English of that window."""
    import sacrebleu

    pcm, _ = spoken("es", ("conteo", "hola_mundo", "pangrama"))
    captions = LiveTranscriber(detector=detector, settings=TranscriberSettings(language="es"))
    translation = SpeechTranslation(detector=detector, settings=TranscriberSettings(language="es"))
    caption_windows: list[Window] = []
    english_windows: list[Window] = []
    finished: list[bool] = []

    def take_captions(events: list[CaptionDraft | Window]) -> None:
        for event in events:
            if isinstance(event, Window):
                numbered = Window(len(caption_windows), event.source, event.t0_ms, event.t1_ms)
                caption_windows.append(numbered)
                take_english(translation.caption_closed(numbered))
        if captions.finished and not finished:
            finished.append(True)
            take_english(translation.captions_finished())

    def take_english(events: list[CaptionDraft | Window]) -> None:
        english_windows.extend(e for e in events if isinstance(e, Window))

    def drive(transcriber: Transcriber, take: Callable[[list[CaptionDraft | Window]], None]) -> None:
        request, due = transcriber.step()
        take(due)
        if request is not None:
            take(transcriber.on_result(request, real(request)))

    for start in range(0, len(pcm), CHUNK):
        captions.insert_audio(pcm[start : start + CHUNK])
        translation.insert_audio(pcm[start : start + CHUNK])
        drive(captions, take_captions)
        drive(translation, take_english)
    captions.end()
    translation.end()
    for _ in range(50):
        drive(captions, take_captions)
        drive(translation, take_english)
        if captions.finished and translation.complete:
            break
    assert captions.finished
    assert translation.complete
    assert [w.index for w in english_windows] == [w.index for w in caption_windows]
    assert [(w.t0_ms, w.t1_ms) for w in english_windows] == [(w.t0_ms, w.t1_ms) for w in caption_windows]
    said = " ".join(re.sub(r"[^\w\s]", " ", " ".join(w.source for w in english_windows).lower()).split())
    # whisper base writes the numbers as digits (as the clips' texts do) and translates the pangram loosely
    assert "2 3 4 5 6 7 8 9 10" in said, said
    assert "world" in said, said
    counted_and_greeted = said[: said.index("world") + len("world")]
    reference = "1 2 3 4 5 6 7 8 9 10 hello world"
    assert sacrebleu.sentence_chrf(counted_and_greeted, [reference]).score > 45, said


# -- a user's own faster-whisper model -----------------------------------------------------------------


def own_model(tmp_path: Path, *, leave_out: str = "") -> Path:
    """A model directory of the user's: here whisper base's files, linked into a directory of its own."""
    base = ensure_whisper_base()
    target = tmp_path / "my-whisper"
    target.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        if name != leave_out:
            (target / name).symlink_to(base / name)
    return target


def test_asr_model_takes_a_faster_whisper_directory(tmp_path: Path, detector: SpeechDetector) -> None:
    from engine.recognisers import load_whisper
    from livecanvas.cli import build_parser
    from livecanvas.cli_serve import server_config

    directory = own_model(tmp_path)
    config = server_config(build_parser().parse_args(["serve", "--asr-model", str(directory)]))
    settings = config.recogniser
    assert settings.whisper_model == directory.resolve()
    asr = load_whisper(settings)
    clip = audioeval_clips("fr")["pangrama"]
    audio = read_wav_16k(clip.path).astype(np.float32) / 32768
    words = asr.transcribe([AsrRequest(audio, 0, "final", language="fr")])[0]
    assert cer(clip.text, " ".join(w.text for w in words)) < 0.2


def test_asr_model_refuses_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    from engine.recognisers import load_whisper
    from stream.config import ServerConfig

    with pytest.raises(ValueError, match="faster-whisper model directory"):
        ServerConfig(asr_model=str(tmp_path))  # empty
    no_tokenizer = own_model(tmp_path, leave_out="tokenizer.json")
    settings: Any = ServerConfig(asr_model=str(no_tokenizer)).recogniser
    with pytest.raises(ModelResolutionError, match=r"tokenizer\.json"):
        load_whisper(settings)  # the user's directory is what is read: faster-whisper would download
    shutil.rmtree(no_tokenizer)
