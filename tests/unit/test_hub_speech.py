"""The hub fed with speech: audio drafts are numbered with the window they show, and spoken windows
are as long as a translation needs only while someone watches a translation track."""

from __future__ import annotations

from collections.abc import Callable

from engine.asr import AsrRequest
from engine.audio import SpeechDetector
from engine.segment_transcriber import SegmentSettings, SegmentTranscriber, pause_detector
from engine.transcriber import LiveTranscriber
from engine.types import CAPTION_TRACK, Word
from stream.hub import StreamHub
from stream.wire.messages import FinalMsg
from tests.speech import librivox_clips, read_wav_16k
from tests.unit.hub_harness import RecordingViewer


def test_audio_drafts_carry_the_window_they_show_even_after_a_window_closes() -> None:
    """A recognition result can close a window and show the next one's first words at once: that draft
    belongs to the next window. (Numbered with the closed window, a viewer's outbox would drop it as
    stale when that window's final followed, so the next window would never be drafted.)"""
    said = ["Good", "evening", "everyone.", "Welcome", "to", "the", "show"]
    script = [Word(w, i * 300, i * 300 + 250) for i, w in enumerate(said)]
    pending: list[tuple[AsrRequest, Callable[[list[Word] | Exception], None]]] = []
    detector = SpeechDetector()
    hub = StreamHub(
        lambda job: None,
        submit_asr=lambda request, done: pending.append((request, done)),
        make_transcriber=lambda lang: LiveTranscriber(detector=detector),
    )
    viewer = RecordingViewer(CAPTION_TRACK)
    hub.join("s", viewer, publisher=True, source_lang="en")
    speech = read_wav_16k(librivox_clips()[0].path).tobytes()
    for start in range(0, len(speech), 3200):
        hub.publish_audio("s", speech[start : start + 3200])
        while pending:  # an ideal recogniser: the scripted words the request's audio covers
            request, done = pending.pop()
            end = request.offset_ms + len(request.audio) // 16
            done([w for w in script if request.offset_ms <= w.t0_ms and w.t1_ms <= end])
    finals_so_far = 0
    drafted_windows: set[int] = set()
    for message in viewer.messages:
        if isinstance(message, FinalMsg):
            finals_so_far += 1
        else:
            assert message.window == finals_so_far, message  # a draft shows the open window
            drafted_windows.add(message.window)
    assert finals_so_far >= 1
    assert viewer.finals()[0].text == "Good evening everyone."
    assert drafted_windows >= {0, 1}


def test_spoken_captions_close_sooner_while_no_translation_track_is_watched() -> None:
    """Windows are as long as a translation needs only while someone watches a translation track."""
    script = [Word(f"w{i}", 200 + i * 330, 200 + i * 330 + 250) for i in range(20)]  # no sentence end
    pending: list[tuple[AsrRequest, Callable[[list[Word] | Exception], None]]] = []
    made: list[SegmentTranscriber] = []
    detector = pause_detector()
    settings = SegmentSettings(max_window_ms=2_000, caption_only_window_ms=1_000)

    def transcriber(language: str) -> SegmentTranscriber:
        made.append(SegmentTranscriber(detector=detector, settings=settings))
        return made[-1]

    def answer() -> None:  # a recogniser that hears the scripted words the request's audio covers
        while pending:
            request, done = pending.pop()
            end = request.offset_ms + len(request.audio) // 16
            heard = [w for w in script if request.offset_ms <= w.t0_ms and w.t1_ms <= end]
            done(heard[len(request.prefix.split()) :])

    hub = StreamHub(
        lambda job: None, submit_asr=lambda r, done: pending.append((r, done)), make_transcriber=transcriber
    )
    publisher = RecordingViewer(CAPTION_TRACK)
    hub.join("s", publisher, publisher=True, source_lang="en")
    speech = read_wav_16k(librivox_clips()[0].path).tobytes()[: 3200 * 70]  # 7 s of reading, no pause
    finals_before = -1
    for chunk, start in enumerate(range(0, len(speech), 3200)):
        if chunk == 40:  # 4 s in, someone starts watching pt
            finals_before = len(publisher.finals())
            hub.join("s", RecordingViewer(CAPTION_TRACK, "pt"), publisher=False, source_lang="en")
        hub.publish_audio("s", speech[start : start + 3200])
        assert made[0].windows.caption_only is (finals_before < 0)
        answer()
    hub.end_input("s")
    answer()
    words = [len(f.text.split()) for f in publisher.finals()]
    assert " ".join(f.text for f in publisher.finals()).split() == [w.text for w in script]
    assert finals_before >= 2
    assert max(words[:finals_before]) <= 5  # 1 s spans: 4 words 330 ms apart, or one confirmed with them
    assert max(words[finals_before:]) >= 7  # 2 s spans once pt is watched
