"""The sans-I/O segment transcriber (Moonshine's policy): segments cut in silence, prefix passes,
confirmation by agreement and by a pause, forced cuts, silence, the end of a stream, failures, bounds.

Audio is real speech (LibriVox clips) or real silence, so voice activity detection runs for real; the
recogniser is scripted: it hears the script's words that lie in a request's audio and, like Moonshine,
continues after the request's prefix.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from engine.asr import SEGMENT_PASS, AsrRequest
from engine.audio import SpeechDetector
from engine.caption_windows import CaptionDraft, CaptionWindows, WindowRules
from engine.commit import normalise
from engine.segment_transcriber import SegmentSettings, SegmentTranscriber, spread_words
from engine.types import Window, Word
from tests.speech import librivox_clips, read_wav_16k, silence

CHUNK = 3200  # 100 ms
Event = CaptionDraft | Window


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector()


@pytest.fixture(scope="module")
def speech() -> bytes:
    return read_wav_16k(librivox_clips()[0].path).tobytes()  # 7.1 s, speech from ~0.1 s to ~7.0 s


def words(text: str, start_ms: int = 0, step_ms: int = 300) -> list[Word]:
    return [Word(w, start_ms + i * step_ms, start_ms + i * step_ms + 250) for i, w in enumerate(text.split())]


def heard(request: AsrRequest, script: list[Word]) -> list[Word]:
    """What a recogniser that continues after the prefix would return: the script's words inside the
    request's audio, after the prefix (matched as the heard words' start, or after its last word)."""
    end = request.offset_ms + len(request.audio) // 16
    inside = [w for w in script if request.offset_ms <= w.t0_ms and w.t1_ms <= end]
    prefix = [normalise(w) for w in request.prefix.split()]
    keys = [normalise(w.text) for w in inside]
    if prefix and keys[: len(prefix)] == prefix:
        return inside[len(prefix) :]
    if prefix and prefix[-1] in keys:
        return inside[len(keys) - keys[::-1].index(prefix[-1]) :]
    return inside


def run(transcriber: SegmentTranscriber, pcm: bytes, script: list[Word], *, end: bool = True) -> list[Event]:
    """Feed audio in 100 ms chunks, answering every request at once; then end the stream."""
    events: list[Event] = []
    for start in range(0, len(pcm), CHUNK):
        transcriber.insert_audio(pcm[start : start + CHUNK])
        request, due = transcriber.step()
        events += due
        if request is not None:
            assert request.pass_name == SEGMENT_PASS
            events += transcriber.on_result(request, heard(request, script))
    if end:
        transcriber.end()
        for _ in range(10):
            request, due = transcriber.step()
            events += due
            if request is not None:
                events += transcriber.on_result(request, heard(request, script))
            if transcriber.finished:
                return events
        raise AssertionError("the transcriber did not finish")
    return events


def windows_of(events: list[Event]) -> list[str]:
    return [e.source for e in events if isinstance(e, Window)]


def test_words_become_final_in_order_once_each_with_drafts_first(
    detector: SpeechDetector, speech: bytes
) -> None:
    script = words("Good evening everyone. Welcome to the show, where tonight we talk about heat.", 700)
    transcriber = SegmentTranscriber(detector=detector, settings=SegmentSettings(max_window_ms=60_000))
    events = run(transcriber, speech + silence(1.0), script)
    assert windows_of(events) == [
        "Good evening everyone.",
        "Welcome to the show, where tonight we talk about heat.",
    ]
    first_window = next(i for i, e in enumerate(events) if isinstance(e, Window))
    assert any(isinstance(e, CaptionDraft) for e in events[:first_window])
    closed = [e for e in events if isinstance(e, Window)]
    assert all(w.t0_ms <= w.t1_ms for w in closed)
    assert closed[0].t1_ms <= closed[1].t0_ms  # estimated times never go back


def test_passes_hear_the_open_segment_with_its_final_words_as_prefix(
    detector: SpeechDetector, speech: bytes
) -> None:
    settings = SegmentSettings(interval_ms=300, agreement_gap_ms=600, max_window_ms=60_000)
    transcriber = SegmentTranscriber(detector=detector, settings=settings)
    script = words(" ".join(f"w{i}" for i in range(20)), 300, 330)
    requests: list[AsrRequest] = []
    for start in range(0, 50 * CHUNK, CHUNK):
        transcriber.insert_audio(speech[start : start + CHUNK])
        request, _ = transcriber.step()
        if request is not None:
            requests.append(request)
            transcriber.on_result(request, heard(request, script))
    assert len(requests) >= 10
    starts = {r.offset_ms for r in requests}
    assert len(starts) == 1  # no pause in 5 s of reading: every pass hears the one segment
    assert min(starts) < script[0].t0_ms  # ... from just before its speech
    prefixes = [r.prefix.split() for r in requests]
    assert prefixes[0] == []
    assert all(later[: len(earlier)] == earlier for earlier, later in itertools.pairwise(prefixes))
    assert len(prefixes[-1]) >= 8  # words were confirmed while the speaker went on, by agreement
    for earlier, later in itertools.pairwise(requests):
        assert len(later.audio) - len(earlier.audio) >= settings.interval_ms * 16


def confirmation_times(transcriber: SegmentTranscriber, pcm: bytes, script: list[Word]) -> dict[int, int]:
    """Per script word (by index), the stream time (ms of audio in) at which it was first final: when a
    request first carried it in its prefix. No pause in ``pcm``: only agreement confirms."""
    confirmed: dict[int, int] = {}
    for chunk, start in enumerate(range(0, len(pcm), CHUNK)):
        transcriber.insert_audio(pcm[start : start + CHUNK])
        request, _ = transcriber.step()
        if request is not None:
            for index in range(len(request.prefix.split())):
                confirmed.setdefault(index, (chunk + 1) * 100)
            transcriber.on_result(request, heard(request, script))
    return confirmed


def test_words_the_recogniser_is_sure_of_need_a_shorter_gap(detector: SpeechDetector, speech: bytes) -> None:
    settings = SegmentSettings(interval_ms=300, confident_probability=0.9, max_window_ms=60_000)
    pcm = speech[: 50 * CHUNK]  # 5 s of reading without a pause
    times: dict[float, dict[int, int]] = {}
    for probability in (0.99, 0.5):
        script = [
            replace(w, probability=probability) for w in words(" ".join(f"w{i}" for i in range(14)), 300, 330)
        ]
        times[probability] = confirmation_times(
            SegmentTranscriber(detector=detector, settings=settings), pcm, script
        )
    by_agreement_only = SegmentSettings(interval_ms=300, confident_probability=1.1, max_window_ms=60_000)
    unsure_default = confirmation_times(
        SegmentTranscriber(detector=detector, settings=by_agreement_only),
        pcm,
        [replace(w, probability=0.5) for w in words(" ".join(f"w{i}" for i in range(14)), 300, 330)],
    )
    assert times[0.5] == unsure_default  # below the bound: only agreement across the full gap
    both = sorted(set(times[0.99]) & set(times[0.5]))
    assert len(both) >= 6
    earlier = [times[0.5][i] - times[0.99][i] for i in both]
    assert all(gain >= 0 for gain in earlier)
    assert sorted(earlier)[len(earlier) // 2] >= 300  # the median word: at least one pass sooner


def test_a_sure_word_still_needs_two_readings_that_agree(detector: SpeechDetector, speech: bytes) -> None:
    """A guess the recogniser changes from pass to pass is never final by confidence alone."""
    settings = SegmentSettings(interval_ms=300, confident_probability=0.9, max_window_ms=60_000)
    transcriber = SegmentTranscriber(detector=detector, settings=settings)
    passes = itertools.count()
    prefixes: list[str] = []
    for start in range(0, 40 * CHUNK, CHUNK):
        transcriber.insert_audio(speech[start : start + CHUNK])
        request, _ = transcriber.step()
        if request is not None:
            prefixes.append(request.prefix)
            end = request.offset_ms + len(request.audio) // 16
            guess = f"guess{next(passes)}"  # the newest word changes every pass, sure each time
            sure = [Word("steady", end - 900, end - 700, 0.99), Word(guess, end - 500, end - 300, 0.99)]
            transcriber.on_result(request, sure[len(request.prefix.split()) :] if request.prefix else sure)
    assert not any("guess" in prefix for prefix in prefixes)


def test_one_request_in_flight_and_the_next_covers_everything(
    detector: SpeechDetector, speech: bytes
) -> None:
    transcriber = SegmentTranscriber(detector=detector, settings=SegmentSettings(interval_ms=300))
    transcriber.insert_audio(speech[: 10 * CHUNK])
    request, _ = transcriber.step()
    assert request is not None
    transcriber.insert_audio(speech[10 * CHUNK : 20 * CHUNK])
    assert transcriber.step() == (None, [])  # still waiting for the first answer
    transcriber.on_result(request, [])
    second, _ = transcriber.step()
    assert second is not None
    assert second.offset_ms + len(second.audio) // 16 == 2000  # up to the newest audio
    transcriber.on_result(second, [])
    transcriber.insert_audio(speech[20 * CHUNK : 22 * CHUNK])  # 200 ms: not enough for another pass
    assert transcriber.step()[0] is None


def test_a_pause_confirms_the_segment_and_closes_the_window(detector: SpeechDetector, speech: bytes) -> None:
    """The last words of a phrase have no later pass to agree with: the pause confirms them, in a
    last pass over exactly the segment, cut in the silence."""
    script = words("and then without any punctuation the speaker simply stops", 300, 280)
    transcriber = SegmentTranscriber(detector=detector, settings=SegmentSettings(max_window_ms=60_000))
    events = run(transcriber, speech[: 30 * CHUNK] + silence(1.5), script, end=False)
    assert windows_of(events) == ["and then without any punctuation the speaker simply stops"]
    assert not transcriber.finished  # the stream goes on; only the window closed


def test_silence_is_never_sent_to_the_recogniser(detector: SpeechDetector) -> None:
    transcriber = SegmentTranscriber(detector=detector)
    quiet = silence(3.0) + silence(3.0, noise_dbfs=-60.0)
    for start in range(0, len(quiet), CHUNK):
        transcriber.insert_audio(quiet[start : start + CHUNK])
        request, events = transcriber.step()
        assert request is None
        assert events == []
    assert transcriber.buffer.duration_ms <= transcriber.settings.lead_ms + 400  # silence is not kept
    transcriber.end()
    assert transcriber.step() == (None, [])
    assert transcriber.finished


def test_nothing_is_lost_or_repeated_across_segments_and_at_the_end(
    detector: SpeechDetector, speech: bytes
) -> None:
    """Two readings with a pause between them, then the stream ends mid-phrase: every word final once,
    in order, the last ones confirmed by the end of the stream."""
    first = words("one two three four five six seven eight nine ten", 300, 600)
    second = words("eleven twelve thirteen fourteen fifteen sixteen seventeen", 8_900, 500)
    audio = speech + silence(1.5) + speech[: 40 * CHUNK]  # ends while "seventeen" is heard
    transcriber = SegmentTranscriber(detector=detector, settings=SegmentSettings(max_window_ms=60_000))
    events = run(transcriber, audio, first + second)
    said = " ".join(windows_of(events)).split()
    assert said == [w.text for w in first + second]


def test_long_speech_without_a_pause_is_cut_and_bounded(detector: SpeechDetector, speech: bytes) -> None:
    settings = SegmentSettings(max_segment_ms=4_000, max_window_ms=60_000, max_window_words=100)
    transcriber = SegmentTranscriber(detector=detector, settings=settings)
    script = words(" ".join(f"w{i}" for i in range(22)), 200, 310)
    offsets: set[int] = set()
    events: list[Event] = []
    for start in range(0, len(speech), CHUNK):
        transcriber.insert_audio(speech[start : start + CHUNK])
        request, due = transcriber.step()
        events += due
        if request is not None:
            offsets.add(request.offset_ms)
            assert len(request.audio) // 16 <= settings.max_segment_ms + settings.interval_ms + 200
            events += transcriber.on_result(request, heard(request, script))
    assert len(offsets) >= 2  # a forced cut started a new segment
    assert transcriber.buffer.duration_ms <= settings.max_segment_ms + settings.context_ms + 500


def test_a_repeat_across_a_cut_is_kept_once() -> None:
    transcriber = SegmentTranscriber(detector=SpeechDetector())
    transcriber._confirmed = words("all the way from")
    again = words("the way from Lisbon", 2_000)
    assert [w.text for w in transcriber._without_repeat(again)] == ["Lisbon"]
    assert [w.text for w in transcriber._without_repeat(words("Lisbon at last"))] == ["Lisbon", "at", "last"]


def test_failures_are_retried_and_bounded_at_the_end(detector: SpeechDetector, speech: bytes) -> None:
    script = words("Good evening everyone. Welcome to the show", 300, 400)
    transcriber = SegmentTranscriber(detector=detector, settings=SegmentSettings(max_window_ms=60_000))
    transcriber.insert_audio(speech[: 20 * CHUNK])
    request, _ = transcriber.step()
    assert request is not None
    assert transcriber.on_error(request) == []
    retry, _ = transcriber.step()
    assert retry is not None
    assert retry.offset_ms == request.offset_ms  # the failed audio is heard again
    transcriber.on_result(retry, heard(retry, script))
    transcriber.end()
    events: list[Event] = []
    for _ in range(3):
        failing, _ = transcriber.step()
        assert failing is not None
        events += transcriber.on_error(failing)
    assert transcriber.finished
    assert windows_of(events) == ["Good evening everyone.", "Welcome"]  # heard before the failures: kept


def test_results_must_match_the_request_in_flight(detector: SpeechDetector, speech: bytes) -> None:
    transcriber = SegmentTranscriber(detector=detector)
    transcriber.insert_audio(speech[: 10 * CHUNK])
    request, _ = transcriber.step()
    assert request is not None
    with pytest.raises(ValueError, match="did not issue"):
        transcriber.on_result(AsrRequest(audio=request.audio, offset_ms=0, pass_name=SEGMENT_PASS), [])
    transcriber.end()
    with pytest.raises(ValueError, match="after the end"):
        transcriber.insert_audio(b"\x00\x00")


def test_words_are_spread_over_speech_in_proportion_to_their_length() -> None:
    placed = spread_words(["a", "longer", "b"], [(1_000, 2_000), (3_000, 3_500)])
    assert [w.text for w in placed] == ["a", "longer", "b"]
    assert placed[0].t0_ms == 1_000
    assert all(w.t0_ms <= w.t1_ms for w in placed)
    assert all(a.t1_ms <= b.t0_ms for a, b in itertools.pairwise(placed))
    assert not any(2_000 < w.t0_ms < 3_000 for w in placed)  # nothing starts in the gap
    assert placed[-1].t1_ms <= 3_500
    assert (placed[1].t1_ms - placed[1].t0_ms) > 2 * (placed[0].t1_ms - placed[0].t0_ms)


def test_caption_only_windows_use_their_own_span() -> None:
    rules = WindowRules(
        max_window_words=16, max_window_ms=2_000, clause_window_words=6, caption_only_window_ms=1_000
    )
    spoken = words("a b c d e f g h i j", 0, 330)
    for caption_only, expected in (
        (True, ["a b c d", "e f g h", "i j"]),
        (False, ["a b c d e f g", "h i j"]),
    ):
        windows = CaptionWindows(rules)
        windows.caption_only = caption_only
        closed = [w.source for word in spoken for w in windows.add([word])] + [
            w.source for w in windows.close()
        ]
        assert closed == expected
    translated = CaptionWindows(replace(rules, caption_only_window_ms=None))
    translated.caption_only = True  # no span of its own: the one span
    assert translated.max_span_ms == 2_000
