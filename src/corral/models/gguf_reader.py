"""A bounded reader for GGUF headers: metadata and tensor infos, never tensor data.

Every count and length read from the file is checked against what the file can hold before
anything is allocated, so a crafted file claiming 2**62 tensors is a clean error. The strings kept
are bounded in total, and the data layout is checked as llama.cpp would use it: a power-of-two
alignment, every tensor's bytes (from its shape and ggml type) inside the file, aligned, and no two
tensors overlapping; so a file that passes here never sends llama.cpp's loader past the file.
"""

from __future__ import annotations

import itertools
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
MAX_KEPT = 64 * 1024 * 1024  # bytes of metadata strings kept in all (long arrays are skipped, not kept)
DEFAULT_ALIGNMENT = 32
MAX_ALIGNMENT = 1 << 20
INT64_MAX = 2**63 - 1
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
# ggml tensor type id -> (elements per block, bytes per block), as ggml lays them out (gguf-py's
# GGML_QUANT_SIZES); a type not here is refused, as llama.cpp refuses it.
BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}
# ggml tensor types, for a quantization guess when general.file_type is absent.
TENSOR_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
                10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 30: "BF16"}


def shown(value: object, limit: int = 100) -> str:
    """``repr(value)`` cut to ``limit`` characters: names in error messages come from the file."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int = 0  # from the start of the data section
    nbytes: int = 0

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
        self.kept = 0  # bytes of strings kept so far

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
        self.kept += n
        if self.kept > MAX_KEPT:
            raise self.fail(f"its names and metadata strings hold more than {MAX_KEPT} bytes")
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
                raise self.fail(f"array {shown(key)} has unsupported element type {etype}")
            n = self.count(f"items in array {shown(key)}", self.size, min_bytes)
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
        raise self.fail(f"metadata {shown(key)} has unknown value type {vtype}")


def read_gguf_header(path: Path) -> GGUFHeader:
    """Read a GGUF file's metadata and tensor infos with every size bounded by the file's size, and
    check where the tensors' data lies (inside the file, aligned, not overlapping)."""
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
        header.tensors = [_tensor_info(r) for _ in range(n_tensors)]
        _check_layout(r, header.tensors, _alignment(r, header.metadata), fh.tell())
    return header


def _tensor_info(r: _Reader) -> TensorInfo:
    """One tensor info, its shape and type checked and its size in bytes worked out."""
    name = r.string()
    n_dims = int(r.scalar("<I"))
    if n_dims > MAX_DIMS:
        raise r.fail(f"tensor {shown(name)} claims {n_dims} dimensions")
    shape = tuple(int(r.scalar("<Q")) for _ in range(n_dims))
    if any(d > r.size * 8 for d in shape):
        raise r.fail(f"tensor {shown(name)} claims an impossible shape {shape}")
    ggml_type = int(r.scalar("<I"))
    offset = int(r.scalar("<Q"))
    if ggml_type not in BLOCKS:
        raise r.fail(f"tensor {shown(name)} has unknown ggml type {ggml_type}")
    elements = math.prod(shape)
    if elements > INT64_MAX:
        raise r.fail(f"tensor {shown(name)} has a shape {shape} whose size overflows 64 bits")
    block, block_bytes = BLOCKS[ggml_type]
    if shape and shape[0] % block:
        raise r.fail(f"tensor {shown(name)}'s rows of {shape[0]} elements are not whole blocks of {block}")
    return TensorInfo(name, shape, ggml_type, offset, elements // block * block_bytes)


def _alignment(r: _Reader, metadata: dict[str, Any]) -> int:
    value = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1) \
            or value > MAX_ALIGNMENT:
        raise r.fail(f"general.alignment {shown(value)} is not a power of two up to {MAX_ALIGNMENT}")
    return value


def _check_layout(r: _Reader, tensors: list[TensorInfo], alignment: int, infos_end: int) -> None:
    """Every tensor's data inside the file, aligned, no two tensors sharing a byte, no name twice."""
    data_start = -(-infos_end // alignment) * alignment
    names: set[str] = set()
    for t in tensors:
        if t.name in names:
            raise r.fail(f"tensor {shown(t.name)} is listed twice")
        names.add(t.name)
        if t.offset % alignment:
            raise r.fail(f"tensor {shown(t.name)} starts at offset {t.offset}, not a multiple of the alignment "
                         f"{alignment}")
        start, end = data_start + t.offset, data_start + t.offset + t.nbytes
        if end > r.size:
            raise r.fail(f"tensor {shown(t.name)} needs bytes {start} to {end} but the file has {r.size}")
    ordered = sorted(tensors, key=lambda t: t.offset)
    for before, after in itertools.pairwise(ordered):
        if after.offset < before.offset + before.nbytes:
            raise r.fail(f"tensors {shown(before.name)} and {shown(after.name)} overlap")


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
