"""A bounded reader for safetensors headers: names, dtypes and shapes, never tensor data."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from corral.errors import InvalidModelFileError

MAX_HEADER = 100 * 1024 * 1024

DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}
TORCH_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


def read_safetensors_header(path: Path) -> list[TensorEntry]:
    """Parse the JSON header; every offset must lie inside the file."""
    size = path.stat().st_size

    def bad(what: str) -> InvalidModelFileError:
        return InvalidModelFileError(f"{path.name} is not a valid safetensors file: {what}",
                                     "the file may be truncated or corrupt; download it again")

    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise bad("shorter than its 8-byte header length")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8 or n > MAX_HEADER:
            raise bad(f"header claims {n} bytes but the file has {size - 8} after the length")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise bad(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    data_size = size - 8 - n
    entries: list[TensorEntry] = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(spec, dict):
            raise bad(f"tensor {name!r} has no description")
        dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
        if (dtype not in DTYPE_BYTES or not isinstance(shape, list)
                or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not (isinstance(offsets, list) and len(offsets) == 2)
                or not all(isinstance(o, int) for o in offsets)):
            raise bad(f"tensor {name!r} has a malformed dtype, shape or offsets")
        start, end = offsets
        if not 0 <= start <= end <= data_size:
            raise bad(f"tensor {name!r} lies outside the file")
        entry = TensorEntry(name, dtype, tuple(shape), end - start)
        if entry.elements * DTYPE_BYTES[dtype] != entry.nbytes:
            raise bad(f"tensor {name!r} shape does not match its byte range")
        entries.append(entry)
    return entries
