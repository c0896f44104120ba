"""The sans-I/O live transcriber: pass scheduling, confirmation, windows, silence, bounds, failures.

Audio is real speech (a LibriVox clip) or real silence, so voice activity detection runs for real; the
recogniser's answers are scripted here so that each rule is driven deliberately.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.asr import AsrRequest
from engine.audio import SpeechDetector
from engine.segment_transcriber import SegmentSettings, SegmentTranscriber
from engine.transcriber import CaptionDraft, LiveTranscriber, TranscriberSettings
from engine.types import Window, Word
from engine.windows import ends_sentence
from tests.speech import librivox_clips, read_wav_16k, silence

CHUNK = 3200  # 100 ms


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector()


@pytest.fixture(scope="module")
def speech() -> bytes:
    return read_wav_16k(librivox_clips()[0].path).tobytes()  # 7.1 s of speech


def words(text: str, start_ms: int = 0, step_ms: int = 300) -> list[Word]:
    return [Word(w, start_ms + i * step_ms, start_ms + i * step_ms + 250) for i, w in enumerate(text.split())]


def heard(request: AsrRequest, script: list[Word]) -> list[Word]:
    """The scripted words the request's audio covers (what an ideal recogniser would return)."""
    end = request.offset_ms + len(request.audio) // 16
    return [w for w in script if request.offset_ms <= w.t0_ms and w.t1_ms <= end]


def feed(transcriber: LiveTranscriber, pcm: bytes, script: list[Word]) -> list[CaptionDraft | Window]:
    """Feed audio in 100 ms chunks, answering every request at once from ``script``."""
    events: list[CaptionDraft | Window] = []
    for start in range(0, len(pcm), CHUNK):
        transcriber.insert_audio(pcm[start : start + CHUNK])
        request, due = transcriber.step()
        events += due
        if request is not None:
            events += transcriber.on_result(request, heard(request, script))
    return events


def finish(transcriber: LiveTranscriber, script: list[Word]) -> list[CaptionDraft | Window]:
    transcriber.end()
    events: list[CaptionDraft | Window] = []
    for _ in range(10):
        request, due = transcriber.step()
        events += due
        if request is not None:
            events += transcriber.on_result(request, heard(request, script))
        if transcriber.finished:
            return events
    raise AssertionError("the transcriber did not finish")


def windows_of(events: list[CaptionDraft | Window]) -> list[str]:
    return [e.source for e in events if isinstance(e, Window)]


UNBOUNDED_SPAN = TranscriberSettings(max_window_ms=60_000)
"""For tests of the other closing rules: these scripted windows span longer than the default allows."""

SCRIPT = words("Good evening everyone. Welcome to the show, where tonight we talk about heat. Thank you.")


def test_words_are_confirmed_into_sentence_windows_with_drafts_first(
    detector: SpeechDetector, speech: bytes
) -> None:
    transcriber = LiveTranscriber(detector=detector, settings=UNBOUNDED_SPAN)
    events = feed(transcriber, speech, SCRIPT) + finish(transcriber, SCRIPT)
    assert windows_of(events) == [
        "Good evening everyone.",
        "Welcome to the show, where tonight we talk about heat.",
        "Thank you.",
    ]
    first_window = next(i for i, e in enumerate(events) if isinstance(e, Window))
    assert any(isinstance(e, CaptionDraft) for e in events[:first_window])
    for window in (e for e in events if isinstance(e, Window)):
        assert window.t0_ms <= window.t1_ms


def test_one_request_in_flight_and_new_audio_needed(detector: SpeechDetector, speech: bytes) -> None:
    transcriber = LiveTranscriber(detector=detector, settings=TranscriberSettings(interval_ms=500))
    transcriber.insert_audio(speech[: 10 * CHUNK])  # the clip's speech starts after ~0.5 s
    request, _ = transcriber.step()
    assert request is not None
    assert request.pass_name == "final"
    transcriber.insert_audio(speech[10 * CHUNK : 20 * CHUNK])
    assert transcriber.step() == (None, [])  # still waiting for the first answer
    transcriber.on_result(request, [])
    second, _ = transcriber.step()
    assert second is not None
    assert len(second.audio) >= len(request.audio)  # covers everything that arrived meanwhile
    transcriber.on_result(second, [])
    transcriber.insert_audio(speech[20 * CHUNK : 22 * CHUNK])  # 200 ms: not enough for another pass
    assert transcriber.step()[0] is None


def test_draft_pass_alternates_with_final_pass_when_enabled(detector: SpeechDetector, speech: bytes) -> None:
    transcriber = LiveTranscriber(detector=detector, settings=TranscriberSettings(use_draft_pass=True))
    passes = []
    for start in range(0, 40 * CHUNK, CHUNK):
        transcriber.insert_audio(speech[start : start + CHUNK])
        request, _ = transcriber.step()
        if request is not None:
            passes.append(request.pass_name)
            transcriber.on_result(request, [])
    assert passes[:4] == ["final", "draft", "final", "draft"]


def test_draft_pass_hears_only_unconfirmed_audio_and_never_delays_a_final_pass(
    detector: SpeechDetector, speech: bytes
) -> None:
    settings = TranscriberSettings(
        use_draft_pass=True, interval_ms=500, draft_interval_ms=200, draft_lead_ms=1000
    )
    transcriber = LiveTranscriber(detector=detector, settings=settings)
    script = words("one two three four five six seven eight nine ten eleven twelve", start_ms=600)
    position = 0

    def add(ms: int) -> None:
        nonlocal position
        transcriber.insert_audio(speech[position : position + ms * 32])
        position += ms * 32

    def answer(request: AsrRequest) -> None:
        transcriber.on_result(request, heard(request, script))

    def next_pass(kind: str) -> AsrRequest:
        request, _ = transcriber.step()
        assert request is not None
        assert request.pass_name == kind
        return request

    add(3000)
    first = next_pass("final")
    assert first.offset_ms == 0
    answer(first)
    add(1000)
    answer(next_pass("draft"))
    second = next_pass("final")  # 1 s new to final passes: no wait; it confirms what both heard
    answer(second)
    confirmed_until = transcriber.agreement.committed_until_ms
    assert confirmed_until > 1000
    add(300)  # 300 ms since the last pass: enough for a draft pass, not for a final one
    draft = next_pass("draft")
    assert draft.offset_ms == confirmed_until - 1000  # only the unconfirmed audio, with a lead
    assert len(draft.audio) < len(second.audio)
    answer(draft)
    add(100)
    assert transcriber.step()[0] is None  # 100 ms is too little for either pass
    add(100)  # 500 ms new to final passes, only 200 ms since the draft pass: the final pass runs
    assert next_pass("final").offset_ms == 0


def test_silence_is_never_sent_to_the_recogniser(detector: SpeechDetector) -> None:
    transcriber = LiveTranscriber(detector=detector)
    quiet = silence(3.0) + silence(3.0, noise_dbfs=-60.0)
    for start in range(0, len(quiet), CHUNK):
        transcriber.insert_audio(quiet[start : start + CHUNK])
        request, events = transcriber.step()
        assert request is None
        assert events == []
    assert transcriber.buffer.duration_ms <= transcriber.settings.pause_ms + 100  # silence is not kept
    assert finish(transcriber, []) == []


def test_a_pause_closes_the_open_window(detector: SpeechDetector, speech: bytes) -> None:
    script = words("and then without any punctuation the speaker simply stops for a while", step_ms=230)
    transcriber = LiveTranscriber(detector=detector, settings=UNBOUNDED_SPAN)
    events = feed(transcriber, speech[: 30 * CHUNK], script) + feed(transcriber, silence(2.0), script)
    assert windows_of(events) == ["and then without any punctuation the speaker simply stops for a while"]


def test_a_long_unpunctuated_run_closes_windows_by_time_span(detector: SpeechDetector, speech: bytes) -> None:
    """Every word waits for its window's end, so a window closes once its final words span
    ``max_window_ms``, with everything confirmed so far, well before the word budget."""
    text = " ".join(f"word{i}" for i in range(22))  # 6.55 s of words, no punctuation, no pause
    script = words(text, start_ms=200, step_ms=300)
    settings = TranscriberSettings(max_window_ms=2_000, max_window_words=16)
    transcriber = LiveTranscriber(detector=detector, settings=settings)
    events = feed(transcriber, speech, script) + finish(transcriber, script)
    closed = [e for e in events if isinstance(e, Window)]
    assert " ".join(w.source for w in closed) == text  # every word once, in order
    assert len(closed) >= 3
    for window in closed[:-1]:
        assert len(window.source.split()) < settings.max_window_words
        # closed at the first confirmation that reached the span, not later
        assert settings.max_window_ms <= window.t1_ms - window.t0_ms < settings.max_window_ms + 1_500


def test_words_placed_in_silence_are_never_shown_or_confirmed(
    detector: SpeechDetector, speech: bytes
) -> None:
    """Whisper may invent a fluent sentence over trailing silence; the end of a stream commits
    unconfirmed words without agreement, so they must be stopped before that."""
    said = words("and so the evening ended quietly.", start_ms=1_000, step_ms=400)
    invented = words("thank you for watching.", start_ms=8_000, step_ms=250)  # the clip ends at 7.1 s
    script = said + invented
    transcriber = LiveTranscriber(detector=detector, settings=TranscriberSettings(use_draft_pass=True))
    events = feed(transcriber, speech + silence(2.0), script) + finish(transcriber, script)
    assert windows_of(events) == ["and so the evening ended quietly."]
    assert not any("watching" in e.text for e in events if isinstance(e, CaptionDraft))


def test_abbreviations_do_not_close_windows() -> None:
    assert not ends_sentence("Mr.")
    assert not ends_sentence("U.S.")
    assert not ends_sentence("J.")
    assert ends_sentence("them.")
    assert ends_sentence('"Why?"')


def test_the_buffer_stays_bounded_and_nothing_is_lost_when_passes_disagree(
    detector: SpeechDetector, speech: bytes
) -> None:
    settings = TranscriberSettings(max_buffer_ms=6_000, trim_keep_ms=2_000)
    transcriber = LiveTranscriber(detector=detector, settings=settings)
    flip = [0]

    def unstable(request: AsrRequest) -> list[Word]:
        # every other pass hears a different last word, so agreement rarely reaches the end
        flip[0] += 1
        base = heard(request, long_script)
        return (
            [*base[:-1], Word(f"{base[-1].text}~{flip[0]}", base[-1].t0_ms, base[-1].t1_ms)] if base else base
        )

    long_script = words(" ".join(f"word{i}" for i in range(40)), step_ms=350)
    audio = speech + speech  # 14 s of speech
    events: list[CaptionDraft | Window] = []
    for start in range(0, len(audio), CHUNK):
        transcriber.insert_audio(audio[start : start + CHUNK])
        request, due = transcriber.step()
        events += due
        if request is not None:
            events += transcriber.on_result(request, unstable(request))
        assert transcriber.buffer.duration_ms <= settings.max_buffer_ms
    assert transcriber.buffer.dropped_ms == 0  # trimmed by confirming, never by overflow
    confirmed = [w.split("~")[0] for w in " ".join(windows_of(events)).split()]
    # forced confirmations keep the words in order, none skipped, none repeated
    assert confirmed == [w.text for w in long_script[: len(confirmed)]]
    assert len(confirmed) >= 20  # most of the 14 s were confirmed despite the disagreement


def test_recogniser_failures_are_retried_and_bounded_at_the_end(
    detector: SpeechDetector, speech: bytes
) -> None:
    transcriber = LiveTranscriber(detector=detector)
    transcriber.insert_audio(speech[: 20 * CHUNK])
    request, _ = transcriber.step()
    assert request is not None
    assert transcriber.on_error(request) == []
    retry, _ = transcriber.step()
    assert retry is not None
    assert retry.offset_ms == request.offset_ms  # the failed audio is covered again
    transcriber.on_result(retry, heard(retry, SCRIPT))
    transcriber.end()
    events: list[CaptionDraft | Window] = []
    for _ in range(3):
        failing, _ = transcriber.step()
        assert failing is not None
        events += transcriber.on_error(failing)
    assert transcriber.finished
    assert windows_of(events) == ["Good evening everyone.", "Welcome to the"]  # heard: closed, not lost


def test_results_must_match_the_request_in_flight(detector: SpeechDetector, speech: bytes) -> None:
    transcriber = LiveTranscriber(detector=detector)
    transcriber.insert_audio(speech[: 10 * CHUNK])
    request, _ = transcriber.step()
    assert request is not None
    with pytest.raises(ValueError, match="did not issue"):
        transcriber.on_result(AsrRequest(audio=request.audio, offset_ms=0, pass_name="final"), [])
    transcriber.end()
    with pytest.raises(ValueError, match="after the end"):
        transcriber.insert_audio(b"\x00\x00")


def test_an_echo_of_recent_captions_is_not_confirmed_again(detector: SpeechDetector, speech: bytes) -> None:
    script = words("Good evening everyone. Welcome to the show.")
    transcriber = LiveTranscriber(detector=detector)
    events = feed(transcriber, speech[: 40 * CHUNK], script)
    assert windows_of(events) == ["Good evening everyone.", "Welcome to the show."]

    # the leftover audio after the window is answered with the prompt's last sentence, 1.2 s later
    # (past the commit policy's own overlap check)
    echoed = words(
        "Welcome to the show.", start_ms=transcriber.agreement.committed_until_ms + 1200, step_ms=250
    )

    def echo(request: AsrRequest) -> list[Word]:
        return heard(request, echoed)

    for start in range(40 * CHUNK, 60 * CHUNK, CHUNK):
        transcriber.insert_audio(speech[start : start + CHUNK])
        request, due = transcriber.step()
        events += due
        if request is not None:
            events += transcriber.on_result(request, echo(request))
    events += feed(transcriber, silence(1.5), [])
    assert windows_of(events) == ["Good evening everyone.", "Welcome to the show."]


def test_a_word_is_confirmed_by_the_first_pass_that_hears_enough_after_it(
    detector: SpeechDetector, speech: bytes
) -> None:
    """Two passes must agree on a word, but only the later one needs ``right_context_ms`` of audio
    after it: a word heard at the very end of one pass is final after the next pass that confirms it."""
    settings = TranscriberSettings(right_context_ms=600, interval_ms=500)
    transcriber = LiveTranscriber(detector=detector, settings=settings)
    script = words("so here we are at last", start_ms=600, step_ms=300)  # "here" ends at 1150 ms
    transcriber.insert_audio(speech[: 12 * CHUNK])  # 1.2 s: "here" ends 50 ms before this pass's end
    first, _ = transcriber.step()
    assert first is not None
    transcriber.on_result(first, heard(first, script))
    assert transcriber.agreement.committed_count == 0  # one pass is not an agreement
    transcriber.insert_audio(speech[12 * CHUNK : 18 * CHUNK])  # 1.8 s: 650 ms after "here"
    second, _ = transcriber.step()
    assert second is not None
    events = transcriber.on_result(second, heard(second, script))
    assert [w.text for w in transcriber.agreement.committed_tail] == ["so", "here"]
    draft = events[-1]
    assert isinstance(draft, CaptionDraft)
    assert draft.text == "so here we are"  # confirmed words, then the newest pass's unconfirmed tail


def test_serve_chooses_the_recogniser_and_caption_span_by_flag_or_environment(
    monkeypatch: pytest.MonkeyPatch, detector: SpeechDetector
) -> None:
    from livecanvas.cli import build_parser
    from livecanvas.cli_serve import server_config
    from stream.server import LivecanvasServer

    def config(*flags: str) -> Any:
        return server_config(build_parser().parse_args(["serve", *flags]))

    assert config().asr_window_ms is None  # each transcriber's own default
    assert config("--asr-window-ms", "4000").asr_window_ms == 4000
    monkeypatch.setenv("LIVECANVAS_ASR_WINDOW_MS", "3500")
    assert config().asr_window_ms == 3500
    with pytest.raises(ValueError, match="asr_window_ms must be positive"):
        config("--asr-window-ms", "0")
    monkeypatch.delenv("LIVECANVAS_ASR_WINDOW_MS")
    server = LivecanvasServer(config("--asr-window-ms", "1800"))
    server._speech_detector = server._pause_detector = detector  # what start() sets
    assert server._make_transcriber("en-GB").settings.max_window_ms == 1800
    assert server._make_transcriber("es").settings.max_window_ms == 1800
    default = LivecanvasServer(config("--asr-model", "moonshine"))
    default._speech_detector = default._pause_detector = detector
    assert isinstance(default._make_transcriber("en-US"), SegmentTranscriber)
    assert default._make_transcriber("en").settings.max_window_ms == SegmentSettings().max_window_ms
    assert isinstance(default._make_transcriber("es"), LiveTranscriber)  # whisper for other languages
    whisper = LivecanvasServer(config("--asr-model", "whisper"))
    whisper._speech_detector = detector
    english = whisper._make_transcriber("en")
    assert isinstance(english, LiveTranscriber)
    assert english.settings.max_window_ms == TranscriberSettings().max_window_ms
