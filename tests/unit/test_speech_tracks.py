"""Speech tracks in the sans-I/O hub: which way each track is made (routes), whisper's ``en`` track of a
non-English speech stream (one final per caption window, in order, after its drafts), the tracks that
pivot through it, ``source_lang: "auto"`` announced once, and the refusals.

The recogniser's answers are scripted over real speech (voice activity detection runs for real), as
in test_speech_languages.py; tests/integration/test_speech_tracks.py runs real whisper base through a
real server.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from clients.python.audio_source import read_wav_16k
from engine.asr import IDENTIFY, TRANSCRIBE, TRANSLATE, AsrRequest, language_words
from engine.audio import SpeechDetector
from engine.language_id import AutoLanguageTranscriber
from engine.speech_translation import SpeechTranslation
from engine.transcriber import LiveTranscriber, Transcriber, TranscriberSettings
from engine.types import CAPTION_TRACK, CanvasKey, Draft, Final, WindowJob, Word
from stream.admission import Refusal, admit
from stream.draft_display import DraftDisplay
from stream.errors import ErrorCode, ProtocolError
from stream.hub import StreamHub
from stream.speech_tracks import Route, describe, from_speech, routable, route, speech_routes
from stream.wire.messages import DraftMsg, FinalMsg, Hello, LanguageMsg, Role
from tests.speech import librivox_clips
from tests.unit.hub_harness import AS_SENT, RecordingViewer
from tests.unit.test_admission import CARD, LoadedModel, make_gate

CHUNK = 3200  # 100 ms of PCM16
OPEN_SHOWN = DraftDisplay(min_source_words=1, hold_back_words=0, agreement=False)
"""Open windows translated from their first word, engine drafts shown whole."""


def words(*spec: tuple[str, int]) -> list[Word]:
    """Words at (text, midpoint ms), 200 ms long."""
    return [Word(text, mid - 100, mid + 100) for text, mid in spec]


# what the speaker says (Spanish) and what whisper's translate task answers, on the clip's clock
SPANISH = words(
    ("Buenas", 500), ("noches,", 900), ("amigos.", 1_600), ("Bienvenidos", 2_600), ("a", 2_800),
    ("casa.", 3_000), ("Gracias.", 4_400),
)  # fmt: skip
ENGLISH = words(
    ("Good", 500), ("evening,", 900), ("friends.", 1_600), ("Welcome", 2_600), ("home.", 3_000),
    ("Thank", 4_200), ("you.", 4_450),
)  # fmt: skip


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector()


@pytest.fixture(scope="module")
def speech() -> bytes:
    return read_wav_16k(librivox_clips()[0].path).tobytes()  # 7.1 s of speech


def answer(request: AsrRequest) -> list[Word]:
    """The scripted recogniser: the words of the request's task that lie in the audio it heard."""
    end = request.offset_ms + len(request.audio) // 16
    if request.task == IDENTIFY:
        return language_words([("es", 0.93), ("pt", 0.04)], request.offset_ms, end)
    script = ENGLISH if request.task == TRANSLATE else SPANISH
    assert request.task in (TRANSLATE, TRANSCRIBE)
    return [w for w in script if request.offset_ms <= w.t0_ms and w.t1_ms <= end]


class SpeechHub:
    """A hub with speech: recognition requests queue up and are answered by ``answer`` in order."""

    def __init__(
        self,
        detector: SpeechDetector,
        *,
        translations: bool = True,
        display: DraftDisplay = AS_SENT,
        serves: Callable[[str, str], bool] = CARD.serves,
    ) -> None:
        self.pending: list[tuple[AsrRequest, Callable[[list[Word] | Exception], None]]] = []
        self.requests: list[AsrRequest] = []
        self.jobs: list[WindowJob] = []
        self.now = [1_000_000_000]

        def transcriber(language: str) -> Transcriber:
            if language == "auto":
                return AutoLanguageTranscriber(detector, transcriber)
            return LiveTranscriber(detector=detector, settings=TranscriberSettings(language=language))

        def translation(language: str) -> SpeechTranslation:
            return SpeechTranslation(detector=detector, settings=TranscriberSettings(language=language))

        self.hub = StreamHub(
            self.jobs.append,
            clock_ns=lambda: self.now[0],
            submit_asr=lambda request, done: self.pending.append((request, done)),
            make_transcriber=transcriber,
            display=display,
            serves=serves,
            make_translation=translation if translations else None,
        )

    def answer_all(self) -> None:
        while self.pending:
            request, done = self.pending.pop(0)
            self.requests.append(request)
            done(answer(request))

    def speak(
        self, pcm: bytes, *, end: bool = True, between: Callable[[int], None] = lambda ms: None
    ) -> None:
        for start in range(0, len(pcm), CHUNK):
            self.now[0] += 100_000_000
            self.hub.publish_audio("s", pcm[start : start + CHUNK])
            self.answer_all()
            between(start // 32)
        if end:
            self.hub.end_input("s")
            for _ in range(50):
                self.answer_all()

    def speak_with_open_drafts(self, pcm: bytes) -> set[tuple[CanvasKey, str]]:
        """:meth:`speak`, the engine answering each provisional job of the open window at once with a
        draft ``<source>``; returns the (key, source) of the jobs answered."""
        answered: set[tuple[CanvasKey, str]] = set()

        def engine_drafts(ms: int) -> None:
            stream = self.hub.streams["s"]
            for job in self.jobs:
                if (
                    job.provisional
                    and job.key.window == stream.next_window
                    and (job.key, job.source) not in answered
                ):
                    answered.add((job.key, job.source))
                    self.hub.on_engine_events([Draft(key=job.key, rev=0, text=f"<{job.source}>", steps=4)])

        self.speak(pcm, between=engine_drafts)
        return answered

    def final(self, track: str, window: int, text: str) -> None:
        key = CanvasKey("s", track, window)
        self.hub.on_engine_events([Final(key=key, rev=0, text=text, steps=4, tokens=3)])


def assert_track_contract(viewer: RecordingViewer, track: str, windows: int) -> list[FinalMsg]:
    """Exactly one final per window, in window order; each window's drafts before it, rev 0, 1, ...,
    and the final's rev one more."""
    finals = viewer.finals(track)
    assert [m.window for m in finals] == list(range(windows))
    for final in finals:
        drafts = [m for m in viewer.drafts(track) if m.window == final.window]
        assert [d.rev for d in drafts] == list(range(len(drafts)))
        assert final.rev == len(drafts)
        position = viewer.messages.index(final)
        assert all(viewer.messages.index(d) < position for d in drafts)
    return finals


# -- routes ----------------------------------------------------------------------------------------------


def test_routes_native_first_then_whisper_en_then_the_pivot_through_it() -> None:
    serves = CARD.serves  # en -> pt-BR, pt-BR -> en
    assert route(serves, "es", "en", speech=True) is Route.WHISPER
    assert route(serves, "es", "en-GB", speech=True) is Route.WHISPER
    assert route(serves, "es", "pt", speech=True) is Route.PIVOT
    assert route(serves, "pt-BR", "en", speech=True) is Route.NATIVE  # the embedded translator, not whisper
    assert route(serves, "en", "pt", speech=False) is Route.NATIVE
    # whisper translates speech, not text; English speech has no whisper en track; nothing reaches de
    assert route(serves, "es", "en", speech=False) is None
    assert route(serves, "es", "pt", speech=False) is None
    assert route(serves, "en", "en", speech=True) is None
    assert route(serves, "es", "de", speech=True) is None
    assert route(serves, "auto", "en", speech=True) is None  # not identified yet
    assert routable(CARD, "auto", "pt", speech=True)
    assert routable(CARD, "auto", "en", speech=True)
    assert not routable(CARD, "auto", "de", speech=True)
    assert not routable(CARD, "auto", "en", speech=False)
    assert from_speech(CARD) == [("en", "whisper"), ("pt-BR", "en")]
    assert describe(CARD, speech=True) == (
        "en -> pt-BR, pt-BR -> en; from speech in any other language whisper knows: "
        "into en (whisper), and through en into pt-BR"
    )
    assert describe(CARD, speech=False) == "en -> pt-BR, pt-BR -> en"


def test_admission_names_the_speech_routes_and_refuses_auto_without_speech_recognition() -> None:
    gate = make_gate(auth=False)  # its hub has no speech recognition
    model = LoadedModel(CARD)
    refused = admit(
        gate, Hello(stream="t", role=Role.PUBLISH, tracks=("en",), source_lang="es"), RecordingViewer("en"),
        header_token="", model=model,
    )  # fmt: skip
    assert isinstance(refused, Refusal)
    assert refused.code is ErrorCode.UNSUPPORTED
    assert (
        refused.message == "this server translates en -> pt-BR, pt-BR -> en only; no track en for es sources"
    )
    auto = admit(
        gate, Hello(stream="t", role=Role.PUBLISH, tracks=("caption",), source_lang="auto"),
        RecordingViewer("caption"), header_token="", model=model,
    )  # fmt: skip
    assert isinstance(auto, Refusal)
    assert auto.code is ErrorCode.UNSUPPORTED
    assert "speech recognition is off" in auto.message
    assert "t" not in gate.hub.streams  # nothing joined


def test_admission_with_speech_takes_en_and_pivots_and_refuses_en_for_english(
    detector: SpeechDetector,
) -> None:
    gate = make_gate(auth=False)
    speech_hub = SpeechHub(detector).hub
    gate = type(gate)(gate.auth, speech_hub, gate.sessions, gate.limits, gate.metrics)
    model = LoadedModel(CARD)
    for source, tracks in (("es", ("en", "pt")), ("auto", ("en", "pt-BR")), ("fr", ("en-GB",))):
        hello = Hello(stream=f"ok-{source}", role=Role.PUBLISH, tracks=tracks, source_lang=source)
        assert not isinstance(
            admit(gate, hello, RecordingViewer(*tracks), header_token="", model=model), Refusal
        )
    english = Hello(stream="en-stream", role=Role.PUBLISH, tracks=("en",), source_lang="en")
    refused = admit(gate, english, RecordingViewer("en"), header_token="", model=model)
    assert isinstance(refused, Refusal)
    assert refused.code is ErrorCode.UNSUPPORTED
    assert refused.message == (
        "this server translates en -> pt-BR, pt-BR -> en; from speech in any other language whisper knows: "
        "into en (whisper), and through en into pt-BR only; no track en for en sources"
    )
    german = Hello(stream="de-stream", role=Role.PUBLISH, tracks=("de",), source_lang="es")
    assert isinstance(admit(gate, german, RecordingViewer("de"), header_token="", model=model), Refusal)


# -- the en track and its pivot ----------------------------------------------------------------------------


def test_spanish_speech_gets_one_en_final_per_caption_window_and_pt_through_it(
    detector: SpeechDetector, speech: bytes
) -> None:
    h = SpeechHub(detector)
    h.hub.join("s", RecordingViewer(), publisher=True, source_lang="es")
    english, portuguese, captions = (
        RecordingViewer("en"),
        RecordingViewer("pt"),
        RecordingViewer(CAPTION_TRACK),
    )
    for viewer in (english, portuguese, captions):
        h.hub.join("s", viewer, publisher=False, source_lang="es")
    h.speak(speech)
    assert [m.text for m in captions.finals(CAPTION_TRACK)] == [
        "Buenas noches, amigos.",
        "Bienvenidos a casa.",
        "Gracias.",
    ]
    finals = assert_track_contract(english, "en", 3)
    assert [m.text for m in finals] == ["Good evening, friends.", "Welcome home.", "Thank you."]
    assert [(m.t0_ms, m.t1_ms) for m in finals] == [
        (m.t0_ms, m.t1_ms) for m in captions.finals(CAPTION_TRACK)
    ]
    assert english.drafts("en")  # the English shows before it is final
    assert all(m.error is None for m in finals)
    # both passes ran on the same audio: transcription in Spanish, translation from Spanish
    assert {(r.task, r.language) for r in h.requests} == {(TRANSCRIBE, "es"), (TRANSLATE, "es")}
    # the pivot: one pt job per window once its English is final, English as its source
    final_jobs = [j for j in h.jobs if not j.provisional]
    assert [(j.key, j.source, j.source_lang, j.target_lang) for j in final_jobs] == [
        (CanvasKey("s", "pt", i), text, "en", "pt") for i, text in enumerate(m.text for m in finals)
    ]
    assert not any(j.source_lang == "es" for j in h.jobs)  # no translator was asked for Spanish
    assert h.hub.streams["s"].pending_windows == 3  # the pt finals are still to come
    for index in (2, 0, 1):  # out of order: released in window order
        h.final("pt", index, f"pt {index}")
    pt = assert_track_contract(portuguese, "pt", 3)
    assert [m.text for m in pt] == ["pt 0", "pt 1", "pt 2"]
    assert not portuguese.finals("en")
    assert not english.finals("pt")
    stream = h.hub.streams["s"]  # its viewers are still connected
    assert stream.pending_windows == 0
    # the context the next pivot job carries is English -> Portuguese
    assert [(c.source, c.target) for c in stream.tracks["pt"].context] == [
        (m.text, f"pt {i}") for i, m in enumerate(finals)
    ]


def test_pivot_jobs_follow_the_english_of_closed_windows_and_an_empty_english_final_is_final(
    detector: SpeechDetector, speech: bytes
) -> None:
    h = SpeechHub(detector, display=OPEN_SHOWN)
    h.hub.join("s", RecordingViewer(), publisher=True, source_lang="es")
    portuguese = RecordingViewer("pt")  # nobody watches en: it still runs, for the pivot
    h.hub.join("s", portuguese, publisher=False, source_lang="es")
    global ENGLISH
    saved = ENGLISH
    ENGLISH = [w for w in saved if w.text not in ("Welcome", "home.")]  # whisper heard nothing there
    try:
        h.speak(speech)
    finally:
        ENGLISH = saved
    jobs = [j for j in h.jobs if not j.provisional]
    assert [(j.key.window, j.source) for j in jobs] == [(0, "Good evening, friends."), (2, "Thank you.")]
    provisional = [j for j in h.jobs if j.provisional]
    assert all(j.source_lang == "en" and j.key.track == "pt" for j in provisional)
    h.final("pt", 0, "Boa noite, amigos.")
    h.final("pt", 2, "Obrigado.")
    assert [(m.window, m.text, m.error) for m in assert_track_contract(portuguese, "pt", 3)] == [
        (0, "Boa noite, amigos.", None),
        (1, "", None),
        (2, "Obrigado.", None),
    ]


def test_the_open_windows_english_drafts_are_translated_for_its_pivot_tracks_before_it_closes(
    detector: SpeechDetector, speech: bytes
) -> None:
    h = SpeechHub(detector, display=OPEN_SHOWN)
    h.hub.join("s", RecordingViewer(), publisher=True, source_lang="es")
    portuguese = RecordingViewer("pt")
    h.hub.join("s", portuguese, publisher=False, source_lang="es")
    answered = h.speak_with_open_drafts(speech)
    assert {key.window for key, _ in answered} == {0, 1, 2}  # every window, while it was still open
    assert all(j.source_lang == "en" for j in h.jobs)
    shown = {m.window for m in portuguese.drafts("pt")}
    assert shown == {0, 1, 2}  # the viewer saw them, as drafts of the open window
    for index, english in enumerate(("Good evening, friends.", "Welcome home.", "Thank you.")):
        h.final("pt", index, f"<{english}>")
    assert len(assert_track_contract(portuguese, "pt", 3)) == 3  # drafts first, one final each


def test_native_and_pivot_tracks_of_the_open_window_keep_their_own_texts(
    detector: SpeechDetector, speech: bytes
) -> None:
    def serves(source: str, target: str) -> bool:
        return CARD.serves(source, target) or (source, target) == ("es", "fr")  # fr natively from es

    h = SpeechHub(detector, display=OPEN_SHOWN, serves=serves)
    h.hub.join("s", RecordingViewer(), publisher=True, source_lang="es")
    viewer = RecordingViewer("fr", "pt")
    h.hub.join("s", viewer, publisher=False, source_lang="es")
    h.speak_with_open_drafts(speech)
    sources = {(j.key.track, j.source_lang) for j in h.jobs if j.provisional}
    assert sources == {("fr", "es"), ("pt", "en")}  # fr from the Spanish, pt from the English
    ends = {w.text: w.t1_ms for w in (*SPANISH, *ENGLISH)}
    drafts = [d for d in viewer.messages if isinstance(d, DraftMsg) and d.text.startswith("<")]
    assert {d.track for d in drafts} == {"fr", "pt"}
    for draft in drafts:  # each draft is timed by the text it translates, not by the other track's
        assert draft.t1_ms == ends[draft.text.strip("<>").split()[-1]], draft
    assert max(m.window for m in viewer.messages if isinstance(m, DraftMsg)) <= 2  # no window past the last


def test_a_pivot_canvas_of_english_that_never_became_final_is_withdrawn(
    detector: SpeechDetector, speech: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = SpeechHub(detector, display=OPEN_SHOWN)
    h.hub.join("s", RecordingViewer(), publisher=True, source_lang="es")
    portuguese = RecordingViewer("pt")
    h.hub.join("s", portuguese, publisher=False, source_lang="es")
    cancelled: list[CanvasKey] = []
    h.hub.cancel = cancelled.extend
    heard: list[AsrRequest] = []
    scripted = answer

    def once_then_gone(request: AsrRequest) -> list[Word]:
        """Whisper hears "Welcome" in one pass only: a draft of window 1, never confirmed."""
        found = [w for w in scripted(request) if w.text not in ("Welcome", "home.")]
        if request.task == TRANSLATE and request.offset_ms + len(request.audio) // 16 >= 2_700 and not heard:
            heard.append(request)
            found.append(Word("Welcome", 2_500, 2_700))
        return found

    monkeypatch.setattr(sys.modules[__name__], "answer", once_then_gone)
    h.speak(speech)
    assert heard
    assert [j.source for j in h.jobs if j.key.window == 1] == ["Welcome"]  # a provisional pivot job
    assert cancelled == [CanvasKey("s", "pt", 1)]  # its English final is empty: the canvas is withdrawn
    h.final("pt", 0, "Boa noite, amigos.")
    h.final("pt", 2, "Obrigado.")
    assert [m.text for m in assert_track_contract(portuguese, "pt", 3)] == [
        "Boa noite, amigos.",
        "",
        "Obrigado.",
    ]


def test_auto_is_announced_once_and_its_tracks_follow_the_language_identified(
    detector: SpeechDetector, speech: bytes
) -> None:
    h = SpeechHub(detector)
    publisher = RecordingViewer()
    h.hub.join("s", publisher, publisher=True, source_lang="auto")
    english = RecordingViewer("en", CAPTION_TRACK)
    h.hub.join("s", english, publisher=False, source_lang="auto")
    observed: list[object] = []  # what the MQTT bridge is handed
    h.hub.add_observer(observed.append)
    with pytest.raises(ProtocolError, match="identified from speech") as refused:
        h.hub.publish_text("s", "Hola.", None)  # text cannot be identified: refused, nothing taken
    assert refused.value.code == "unsupported"
    assert h.hub.streams["s"].next_window == 0
    late: list[RecordingViewer] = []

    def join_late(ms: int) -> None:
        if ms >= 5_000 and not late:
            late.append(RecordingViewer(CAPTION_TRACK))
            h.hub.join("s", late[0], publisher=False, source_lang="auto")

    h.speak(speech, between=join_late)
    announced = [m for m in english.messages if isinstance(m, LanguageMsg)]
    assert announced == [
        LanguageMsg(stream="s", language="es", probability=0.93, epoch=h.hub.streams["s"].epoch)
    ]
    first = english.messages.index(announced[0])
    assert not [
        m for m in english.messages[:first] if isinstance(m, DraftMsg | FinalMsg)
    ]  # before any caption
    assert [m for m in publisher.messages if isinstance(m, LanguageMsg)] == announced
    assert [m for m in observed if isinstance(m, LanguageMsg)] == announced
    assert isinstance(late[0].messages[0], LanguageMsg)  # a connection joining later gets it at once
    assert h.hub.streams["s"].spoken_lang == "es"
    # the en track heard the audio identification held (replayed): its first window has its English
    finals = assert_track_contract(english, "en", 3)
    assert [m.text for m in finals] == ["Good evening, friends.", "Welcome home.", "Thank you."]


def test_tracks_nothing_reaches_get_an_error_final_per_window(
    detector: SpeechDetector, speech: bytes
) -> None:
    # a Spanish stream typed, not spoken: whisper cannot translate text
    h = SpeechHub(detector)
    h.hub.join("s", RecordingViewer(), publisher=True, source_lang="es")
    viewer = RecordingViewer("en", "pt", CAPTION_TRACK)
    h.hub.join("s", viewer, publisher=False, source_lang="es")
    h.hub.publish_text("s", "Hola. Adiós.", None)
    for track in ("en", "pt"):
        finals = assert_track_contract(viewer, track, 2)
        assert [m.error for m in finals] == [
            f"unsupported: nothing on this server makes {track} from es text"
        ] * 2
    assert [m.text for m in viewer.finals(CAPTION_TRACK)] == ["Hola.", "Adiós."]
    assert h.jobs == []
    # a server without the en track: the spoken windows get the error, the captions go on
    h = SpeechHub(detector, translations=False)
    h.hub.join("s", RecordingViewer(), publisher=True, source_lang="es")
    viewer = RecordingViewer("en", CAPTION_TRACK)
    h.hub.join("s", viewer, publisher=False, source_lang="es")
    h.speak(speech)
    finals = assert_track_contract(viewer, "en", 3)
    assert {m.error for m in finals} == {"unsupported: nothing on this server makes en from es speech"}
    assert {r.task for r in h.requests} == {TRANSCRIBE}


def test_the_en_track_runs_only_while_someone_needs_it(detector: SpeechDetector, speech: bytes) -> None:
    h = SpeechHub(detector)
    h.hub.join("s", RecordingViewer(), publisher=True, source_lang="es")
    captions = RecordingViewer(CAPTION_TRACK)
    h.hub.join("s", captions, publisher=False, source_lang="es")
    english = RecordingViewer("en")

    def join_after_the_first_window(ms: int) -> None:
        if captions.finals() and english not in h.hub.streams["s"].viewers:
            h.hub.join("s", english, publisher=False, source_lang="es")

    h.speak(speech, between=join_after_the_first_window)
    translate = [r for r in h.requests if r.task == TRANSLATE]
    assert translate
    assert min(r.offset_ms for r in translate) >= 0
    # windows that closed before it started have no en final; every later one has exactly one
    caption_windows = [m.window for m in captions.finals(CAPTION_TRACK)]
    en = [m.window for m in english.finals("en")]
    assert en == [w for w in caption_windows if w >= en[0]]
    assert en[0] >= 1
    assert english.finals("en")[-1].text == "Thank you."


def test_livecanvas_models_lists_what_speech_adds(capsys: pytest.CaptureFixture[str]) -> None:
    from livecanvas.cli import main

    assert speech_routes([("en", "pt-BR"), ("es", "en"), ("en", "fr")]) == [
        ("en", "whisper"),
        ("pt-BR", "en"),
        ("fr", "en"),
    ]
    main(["models"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == [
        "pairs `serve` offers with these translators: en -> pt-BR, pt-BR -> en",
        "and from speech in any other language whisper knows (unless --no-asr): en, pt-BR (through en)",
    ]
