"""A bounded reader for GGUF headers: metadata and tensor infos, never tensor data.

Every count and length read from the file is checked against what the file can hold before
anything is allocated, so a crafted file claiming 2**62 tensors is a clean error.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from corral.errors import InvalidModelFileError

MAGIC = b"GGUF"
MAX_TENSORS = 1_000_000
MAX_KV = 100_000
MAX_DIMS = 8
MAX_STRING = 64 * 1024 * 1024
KEEP_ARRAY_ITEMS = 64  # longer arrays (vocabularies, merges) are skipped, their length kept

# Fixed-size scalar types: GGUF type id -> struct format.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# llama.cpp's LLAMA_FTYPE values (general.file_type).
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}
# ggml tensor types, for a quantization guess when general.file_type is absent.
TENSOR_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
                10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 30: "BF16"}


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)  # for skipped long arrays
    tensors: list[TensorInfo] = field(default_factory=list)
    file_size: int = 0


class _Reader:
    def __init__(self, fh: BinaryIO, size: int, path: Path) -> None:
        self.fh, self.size, self.path = fh, size, path

    def fail(self, what: str) -> InvalidModelFileError:
        return InvalidModelFileError(f"{self.path.name} is not a valid GGUF file: {what}",
                                     "the file may be truncated or corrupt; download it again")

    def remaining(self) -> int:
        return self.size - self.fh.tell()

    def read(self, n: int) -> bytes:
        if n < 0 or n > self.remaining():
            raise self.fail(f"needs {n} bytes at offset {self.fh.tell()} but the file ends first")
        return self.fh.read(n)

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def count(self, what: str, limit: int, min_item_bytes: int) -> int:
        n = int(self.scalar("<Q"))
        if n > limit or n * min_item_bytes > self.remaining():
            raise self.fail(f"claims {n} {what}, more than the file can hold")
        return n

    def string(self) -> str:
        n = self.count("bytes of string", MAX_STRING, 1)
        return self.read(n).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.count("bytes of string", MAX_STRING, 1)
        self.fh.seek(n, 1)

    def value(self, vtype: int, key: str, header: GGUFHeader) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype = int(self.scalar("<I"))
            min_bytes = struct.calcsize(_SCALARS[etype]) if etype in _SCALARS else 8
            if etype not in _SCALARS and etype != _STRING:
                raise self.fail(f"array {key!r} has unsupported element type {etype}")
            n = self.count(f"items in array {key!r}", self.size, min_bytes)
            if n > KEEP_ARRAY_ITEMS:
                header.array_lengths[key] = n
                if etype == _STRING:
                    for _ in range(n):
                        self.skip_string()
                else:
                    self.read(0)
                    self.fh.seek(n * min_bytes, 1)
                return None
            return [self.value(etype, key, header) for _ in range(n)]
        raise self.fail(f"metadata {key!r} has unknown value type {vtype}")


def read_gguf_header(path: Path) -> GGUFHeader:
    """Read a GGUF file's metadata and tensor infos with every size bounded by the file's size."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        r = _Reader(fh, size, path)
        if size < 24 or r.read(4) != MAGIC:
            raise r.fail("missing the GGUF magic bytes")
        version = int(r.scalar("<I"))
        if version not in (2, 3):
            raise r.fail(f"unsupported GGUF version {version}")
        header = GGUFHeader(version=version, file_size=size)
        n_tensors = r.count("tensors", MAX_TENSORS, 8 + 4 + 8 + 4 + 8)
        n_kv = r.count("metadata entries", MAX_KV, 8 + 4)
        for _ in range(n_kv):
            key = r.string()
            vtype = int(r.scalar("<I"))
            value = r.value(vtype, key, header)
            if value is not None:
                header.metadata[key] = value
        for _ in range(n_tensors):
            name = r.string()
            n_dims = int(r.scalar("<I"))
            if n_dims > MAX_DIMS:
                raise r.fail(f"tensor {name!r} claims {n_dims} dimensions")
            shape = tuple(int(r.scalar("<Q")) for _ in range(n_dims))
            if any(d > size * 8 for d in shape):
                raise r.fail(f"tensor {name!r} claims an impossible shape {shape}")
            ggml_type = int(r.scalar("<I"))
            r.scalar("<Q")  # data offset, unused
            header.tensors.append(TensorInfo(name, shape, ggml_type))
    return header


def quantization(header: GGUFHeader) -> str | None:
    ftype = header.metadata.get("general.file_type")
    if isinstance(ftype, int) and ftype in FILE_TYPES:
        return FILE_TYPES[ftype]
    counts: dict[str, int] = {}
    for t in header.tensors:
        if len(t.shape) >= 2:
            name = TENSOR_TYPES.get(t.ggml_type, f"type{t.ggml_type}")
            counts[name] = counts.get(name, 0) + t.elements
    return max(counts, key=lambda k: counts[k]) if counts else None
