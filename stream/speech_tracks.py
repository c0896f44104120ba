"""Where each translation track of a stream comes from (its *route*), and the per-stream state of the
tracks made from speech: whisper's ``en`` track of a non-English speech stream and the tracks that
pivot through it. Sans I/O; :mod:`stream.hub` drives it.

For a stream speaking ``L`` (its ``source_lang``, or for ``auto`` the language whisper identified)
and a track ``T``, :func:`route` answers:

* ``NATIVE``: a loaded translator serves ``L -> T``: every window, typed or spoken, is a job for it
  (this takes precedence: Brazilian Portuguese speech gets its ``en`` track from the embedded
  translator, not from whisper);
* ``WHISPER``: ``T`` is English, ``L`` is not, and the window was spoken: whisper's ``translate``
  task makes the track (``engine.speech_translation.SpeechTranslation``), one final per caption
  window;
* ``PIVOT``: a translator serves ``en -> T``, ``L`` is not English, and the window was spoken: the
  window's ``en`` final (from whisper) is translated on into ``T``, as a window whose source is
  English;
* ``None``: nothing reaches ``T`` from ``L``: English speech asking for ``en``, or text in a language
  no translator takes (whisper translates speech, not text). Admission refuses such a track where it
  can tell at ``hello``; a window that still meets one (text typed on a stream whose viewers want a
  speech track, a language identified later) gets an error final on that track.

The ``en`` track runs only while a watched track needs it (``WHISPER`` or ``PIVOT``): it costs a
second series of recognition passes. It is started on the stream's clock (silence for the audio
before it, or for ``auto`` the audio identification held, replayed), and gets only the caption
windows that close after it started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from engine.audio import SAMPLE_RATE
from engine.language_id import AUTO, AutoLanguageTranscriber, feed_silence
from engine.models import ModelCard
from engine.speech_translation import SpeechTranslation
from engine.transcriber import Transcriber
from stream.errors import ProtocolError
from stream.wire.messages import LanguageMsg

ENGLISH = "en"
BYTES_PER_MS = SAMPLE_RATE // 1000 * 2
Serves = Callable[[str, str], bool]  # (source, target) -> whether a loaded translator serves it


class Route(StrEnum):
    NATIVE = "native"
    WHISPER = "whisper"
    PIVOT = "pivot"


def base_language(tag: str) -> str:
    return tag.split("-")[0].lower()


def route(serves: Serves, source_lang: str, track: str, *, speech: bool) -> Route | None:
    """See the module docstring. ``source_lang`` ``auto`` (not identified yet) has no route."""
    if base_language(source_lang) == AUTO:
        return None
    if serves(source_lang, track):
        return Route.NATIVE
    if not speech or base_language(source_lang) == ENGLISH:
        return None
    if base_language(track) == ENGLISH:
        return Route.WHISPER
    return Route.PIVOT if serves(ENGLISH, track) else None


def routable(card: ModelCard, source_lang: str, track: str, *, speech: bool) -> bool:
    """Whether a ``hello`` may ask for ``track`` on a ``source_lang`` stream (``speech``: the server
    recognises speech). For ``auto`` any language may be identified: a track some language reaches."""
    if base_language(source_lang) != AUTO:
        return route(card.serves, source_lang, track, speech=speech) is not None
    if not speech:
        return False
    sources = {source for source, _ in card.pairs} or {ENGLISH}
    reached = any(card.serves(source, track) for source in sources)
    return reached or base_language(track) == ENGLISH or card.serves(ENGLISH, track)


def from_speech(card: ModelCard) -> list[tuple[str, str]]:
    """The tracks speech in any language whisper knows can get beyond ``card``'s own pairs:
    (target, via): ``(en, whisper)`` and a ``(T, en)`` per target reached from English."""
    if not card.pairs:
        return []  # the model takes any source itself
    return speech_routes(card.pairs)


def speech_routes(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``from_speech`` for a list of (source, target) pairs."""
    pivots = [target for source, target in pairs if base_language(source) == ENGLISH]
    return [(ENGLISH, "whisper"), *((target, ENGLISH) for target in dict.fromkeys(pivots))]


def describe(card: ModelCard, *, speech: bool) -> str:
    """What a server translates, for refusals: the model's pairs, then what speech adds."""
    routes = from_speech(card) if speech else []
    if not routes:
        return card.describe()
    pivots = ", ".join(target for target, via in routes if via == ENGLISH)
    through = f", and through en into {pivots}" if pivots else ""
    return f"{card.describe()}; from speech in any other language whisper knows: into en (whisper){through}"


def refuse_unidentified_text(language: str) -> None:
    """Text (or a ``partial`` line) on a stream whose ``auto`` language is not identified yet is refused:
    its language is identified from speech."""
    if base_language(language) == AUTO:
        raise ProtocolError(
            "unsupported",
            "source_lang auto is identified from speech: send audio, or say hello again with the "
            "text's language; this text was not taken",
        )


def needs_english(routes: Iterable[Route | None]) -> bool:
    return any(r in (Route.WHISPER, Route.PIVOT) for r in routes)


@dataclass(eq=False)
class SpeechState:
    """A stream's speech tracks: its ``en`` track while one runs (``translation``, following the
    caption transcriber ``follows``: only that transcriber's windows are handed to it), how much
    audio the caption transcriber has had (the stream's clock), and the language announced for
    ``auto``."""

    translation: SpeechTranslation | None = None
    follows: Transcriber | None = None
    audio_bytes: int = 0  # PCM16 the caption transcriber has had
    captions_finished: bool = False
    language: LanguageMsg | None = None

    @property
    def audio_ms(self) -> int:
        return self.audio_bytes // BYTES_PER_MS

    def restart(self) -> None:
        """A new caption transcriber starts, its clock from 0 (the hub keeps pumping an older ``en``
        track until its windows are out; it is no longer this state's)."""
        self.audio_bytes = 0
        self.translation, self.follows = None, None

    def following(self, caption: Transcriber | None) -> SpeechTranslation | None:
        """The ``en`` track running for ``caption`` (still taking audio), if any."""
        translation = self.translation
        if translation is None or self.follows is not caption or caption is None or translation.ending:
            return None
        return translation

    def ensure(
        self, make: Callable[[str], SpeechTranslation], caption: Transcriber, language: str, needed: bool
    ) -> SpeechTranslation | None:
        """Start the ``en`` track for ``caption`` when ``needed`` (a watched track's route goes through
        it) and none runs; end a running one once not needed and no window waits for its English.
        Returns a track just started (to drive)."""
        if caption.ending:
            return None
        running = self.following(caption)
        if running is not None:
            if not needed and running.waiting_index is None:
                running.end()  # its last pass hands out nothing: no window waits
                self.translation = None
            return None
        if not needed or self.translation is not None or base_language(language) == AUTO:
            return None
        self.start(make, caption, language)
        return self.translation

    def identified(self, caption: Transcriber, stream: str, epoch: str) -> LanguageMsg | None:
        """The ``language`` message, once, when ``caption`` (an ``auto`` stream's) has identified it."""
        if not isinstance(caption, AutoLanguageTranscriber) or caption.detected_language is None:
            return None
        if self.language is not None:
            return None
        probability = round(min(1.0, max(0.0, caption.language_probability)), 4)
        self.language = LanguageMsg(
            stream=stream, language=caption.detected_language, probability=probability, epoch=epoch
        )
        return self.language

    def start(self, make: Callable[[str], SpeechTranslation], caption: Transcriber, language: str) -> None:
        """Start the ``en`` track for ``caption``'s stream speaking ``language``, on the stream's clock."""
        translation = make(language)
        fed = 0
        if isinstance(caption, AutoLanguageTranscriber) and caption.held_until_ms == self.audio_ms:
            fed = caption.replay(translation)  # identified just now: it hears what the captions heard
        feed_silence(translation, self.audio_ms - fed)
        self.translation, self.follows, self.captions_finished = translation, caption, False

    def taking_windows(self, caption: Transcriber | None) -> SpeechTranslation | None:
        """The ``en`` track that ``caption``'s windows are handed to (it may be ending with it)."""
        if self.translation is None or self.follows is not caption or self.captions_finished:
            return None
        return self.translation
