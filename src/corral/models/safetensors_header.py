"""A bounded reader for safetensors headers: names, dtypes and shapes, never tensor data.

The JSON header is bounded twice before it is parsed: in bytes (as the Hugging Face hub bounds it) and
in JSON values (``[[],[],...]`` is 3 bytes a list), so a crafted header cannot grow into gigabytes of
Python objects; nesting too deep to parse is a clean error too. Every tensor's byte range must lie
inside the file, in order (start before end), match its shape and dtype, and share no byte with another.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral.errors import InvalidModelFileError

MAX_HEADER = 25_000_000  # huggingface_hub's SAFETENSORS_MAX_HEADER_LENGTH
MAX_VALUES = 2_000_000  # JSON objects, arrays and items: a header for ~150,000 tensors
MAX_DIMS = 16
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')

DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}
TORCH_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


def shown(value: object, limit: int = 100) -> str:
    """``repr(value)`` cut to ``limit`` characters: names in error messages come from the file."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    start: int = 0  # from the start of the data, after the header

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


def read_safetensors_header(path: Path) -> list[TensorEntry]:
    """Parse the JSON header; every offset must lie inside the file, no two tensors overlapping."""
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
            raise bad(f"header claims {n} bytes but the file has {size - 8} after the length"
                      if n > size - 8 else f"header claims {n} bytes, more than the {MAX_HEADER} allowed")
        text = fh.read(n)
    values = _json_values(text)
    if values > MAX_VALUES:
        raise bad(f"header holds {values} JSON values, more than the {MAX_VALUES} allowed")
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, an integer of over 4300 digits, too deep
        raise bad(f"header is not JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    entries = [_entry(name, spec, size - 8 - n, bad) for name, spec in header.items() if name != "__metadata__"]
    ordered = sorted(entries, key=lambda e: e.start)
    for before, after in itertools.pairwise(ordered):
        if after.start < before.start + before.nbytes:
            raise bad(f"tensors {shown(before.name)} and {shown(after.name)} overlap")
    return entries


def _json_values(text: bytes) -> int:
    """An upper bound on the objects, arrays and items JSON ``text`` parses into (strings blanked
    first, so the brackets and commas inside them do not count); C-speed, before any parsing."""
    bare = _STRINGS.sub(b'""', text)
    return bare.count(b"{") + bare.count(b"[") + bare.count(b",") + 1


def _entry(name: str, spec: object, data_size: int, bad: Callable[[str], InvalidModelFileError]) -> TensorEntry:
    if not isinstance(spec, dict):
        raise bad(f"tensor {shown(name)} has no description")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if (dtype not in DTYPE_BYTES or not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**64 for d in shape)
            or not (isinstance(offsets, list) and len(offsets) == 2)
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise bad(f"tensor {shown(name)} has a malformed dtype, shape or offsets")
    start, end = offsets
    if end < start:
        raise bad(f"tensor {shown(name)} has reversed data_offsets [{start}, {end}]")
    if not 0 <= start <= end <= data_size:
        raise bad(f"tensor {shown(name)} lies outside the file (bytes {start} to {end} of {data_size})")
    entry = TensorEntry(name, dtype, tuple(shape), end - start, start)
    if entry.elements * DTYPE_BYTES[dtype] != entry.nbytes:
        raise bad(f"tensor {shown(name)} shape {list(shape)} ({dtype}) does not match its byte range of {entry.nbytes}")
    return entry
