"""Scoring one caption stream as a viewer saw it: per-word latency to the first draft that showed a
word and to its final, and the stream's final and draft transcripts (for WER).

**Per-word latency.** Words are not timed individually on the wire: a caption ``final`` carries its
window's span ``t0_ms``..``t1_ms`` in stream audio time, and each draft its own span. Each word's end is
estimated by spreading the final window's words linearly over that span: word i of k ends at
``t0 + (t1 - t0) * (i + 1) / k``. Its *spoken* time on the client's monotonic clock is the stream's start
(when the first chunk was released, minus that chunk's length: ``paced_chunks`` releases a chunk once
its last sample has been spoken) plus that end. Then

* final latency = arrival of the window's final - spoken time;
* first-draft latency = arrival of the first caption draft that showed the word - spoken time. A draft
  shows word i of a final window when its normalised text (``tests.speech.normalize``) contains the
  normalised prefix of that window up to and including word i (a substring match on whole words). Only
  drafts that arrived before the final, belong to this window or an earlier one, and whose span reaches
  into this window (the same window, or ``t1_ms > t0_ms`` of the final) are considered, so a common
  word of an earlier sentence does not count. A word never drafted counts as drafted at its final;
  ``words_drafted_at_final`` says how many.

The linear spread is an estimate: a word that really ends earlier than estimated gets a latency that is
too small (it can even come out slightly negative for drafts), one that ends later one that is too large;
medians over many words are robust to this, single words are not.

**WER.** Final WER: all caption finals of a stream, concatenated, against the programme's reference
(``tests.speech.wer``, corpus WER over every stream of every run). Draft WER: for each window the last
draft shown before its final (the window's final text where the window was never drafted; counted in
``windows_never_drafted``), concatenated, against the same reference. The last draft of a window often
also shows the first words of the next window, which the viewer then sees again in that window's
drafts; so only the draft's prefix that best matches the window's final (within 4 words of its length,
``draft_reading``) stands for the window. Words the draft got wrong or missed still count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein

from tests.speech import normalize

DRAFT_SLACK_WORDS = 4


@dataclass(frozen=True)
class Caption:
    """A caption draft or final as received: its window, text, audio span and arrival (monotonic ns)."""

    window: int
    text: str
    t0_ms: int
    t1_ms: int
    at_ns: int
    latency_ms: int  # the server's own figure: from the span's last word (by its clock) to sending


@dataclass
class StreamRecord:
    """Everything one stream saw, timed on the client's monotonic clock."""

    start_ns: int = 0  # when the stream's first audio sample was spoken
    end_sent_ns: int = 0
    bye_ns: int = 0
    drafts: list[Caption] = field(default_factory=list)
    finals: list[Caption] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class StreamScore:
    draft_s: list[float]
    final_s: list[float]
    words_drafted_at_final: int
    windows_never_drafted: int
    final_text: str
    draft_text: str


def word_spoken_ns(start_ns: int, window: Caption, index: int, count: int) -> float:
    """When word ``index`` of the ``count`` words of a final ``window`` was spoken, on the client's clock:
    the window's words spread linearly over its span (module docstring)."""
    return start_ns + (window.t0_ms + (window.t1_ms - window.t0_ms) * (index + 1) / count) * 1e6


def padded(text: str) -> str:
    return f" {normalize(text)} "


def draft_reading(draft: str, final: str) -> str:
    """The part of a window's draft that stands for the window: a draft also shows the newest words,
    which may go into the next window. Of the draft's prefixes within ``DRAFT_SLACK_WORDS`` of the
    final's length, the one closest to the final (word edit distance, then length)."""
    shown, kept = draft.split(), final.split()
    keys, target = [normalize(w) for w in shown], [normalize(w) for w in kept]
    lengths = range(max(0, len(kept) - DRAFT_SLACK_WORDS), min(len(shown), len(kept) + DRAFT_SLACK_WORDS) + 1)
    best = min(lengths, key=lambda n: (Levenshtein.distance(keys[:n], target), abs(n - len(kept))), default=0)
    return " ".join(shown[:best])


def score_stream(record: StreamRecord) -> StreamScore:
    """Per-word latencies (see the module docstring) and the final and draft transcripts of one stream."""
    draft_s: list[float] = []
    final_s: list[float] = []
    at_final = 0
    never_drafted = 0
    draft_texts: list[str] = []
    drafts = sorted(record.drafts, key=lambda d: d.at_ns)
    normalised = [padded(d.text) for d in drafts]
    finals = sorted(record.finals, key=lambda f: f.window)
    for final in finals:
        words = final.text.split()
        own = [d for d in drafts if d.window == final.window and d.at_ns <= final.at_ns]
        if own:
            draft_texts.append(draft_reading(own[-1].text, final.text))
        else:
            draft_texts.append(final.text)
            never_drafted += 1
        candidates = [
            (draft, text)
            for draft, text in zip(drafts, normalised, strict=True)
            if draft.at_ns <= final.at_ns
            and draft.window <= final.window
            and (draft.window == final.window or draft.t1_ms > final.t0_ms)
        ]
        for i in range(len(words)):
            spoken_ns = word_spoken_ns(record.start_ns, final, i, len(words))
            prefix = padded(" ".join(words[: i + 1]))
            shown = next((d.at_ns for d, text in candidates if prefix.strip() == "" or prefix in text), None)
            if shown is None:
                shown = final.at_ns
                at_final += 1
            draft_s.append((shown - spoken_ns) / 1e9)
            final_s.append((final.at_ns - spoken_ns) / 1e9)
    return StreamScore(
        draft_s=draft_s,
        final_s=final_s,
        words_drafted_at_final=at_final,
        windows_never_drafted=never_drafted,
        final_text=" ".join(f.text for f in finals),
        draft_text=" ".join(draft_texts),
    )
