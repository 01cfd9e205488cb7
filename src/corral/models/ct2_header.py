"""A bounded reader of a CTranslate2 ``model.bin`` header: the binary version, the model spec's name
(``WhisperSpec``, ...) and revision, and every variable's name, shape and type, the data between
them skipped by seeking (no weights read). Sizes are checked against the file, so a truncated or
padded file is refused here before any engine maps it."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from corral.errors import InvalidModelFileError

# the type ids of CTranslate2's DataType enum (include/ctranslate2/types.h), with their sizes
TYPES = (("float32", 4), ("int8", 1), ("int16", 2), ("int32", 4), ("float16", 2), ("bfloat16", 2))
VERSIONS = (5, 6)  # the layouts read here: spec name + revision, then typed variables
MAX_VARIABLES = 200_000
MAX_RANK = 8
MAX_STRING = 4096


@dataclass(frozen=True)
class Variable:
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


@dataclass(frozen=True)
class CT2Header:
    version: int
    spec: str
    revision: int
    variables: tuple[Variable, ...]
    file_size: int

    @property
    def parameters(self) -> int:
        total = 0
        for v in self.variables:
            count = 1
            for dim in v.shape:
                count *= dim
            total += count
        return total

    @property
    def dtype(self) -> str | None:
        """The type holding most of the bytes (quantized weights: int8 / int16)."""
        by_type: dict[str, int] = {}
        for v in self.variables:
            by_type[v.dtype] = by_type.get(v.dtype, 0) + v.nbytes
        return max(by_type, key=lambda k: by_type[k]) if by_type else None


def _read(fh: BinaryIO, fmt: str, path: Path) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise InvalidModelFileError(f"{path.name} is truncated (its header ends early)",
                                    "the file is incomplete: download or join it again")
    return struct.unpack(fmt, data)


def _string(fh: BinaryIO, path: Path) -> str:
    (length,) = _read(fh, "<H", path)
    if not 1 <= length <= MAX_STRING:
        raise InvalidModelFileError(f"{path.name}: a name of {length} bytes; not a CTranslate2 model")
    raw = fh.read(length)
    if len(raw) != length or raw[-1:] != b"\0":
        raise InvalidModelFileError(f"{path.name} is truncated (its header ends early)")
    try:
        return raw[:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidModelFileError(f"{path.name}: a name that is not UTF-8; not a CTranslate2 model") from None


def read_ct2_header(path: Path) -> CT2Header:
    """The header of the CTranslate2 model file ``path``; InvalidModelFileError when it is not one,
    or when its variables do not fit the file exactly."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        (version,) = _read(fh, "<I", path)
        if version not in VERSIONS:
            raise InvalidModelFileError(f"{path.name}: CTranslate2 binary version {version} is not one corral reads "
                                        f"({', '.join(map(str, VERSIONS))})")
        spec = _string(fh, path)
        revision, count = _read(fh, "<II", path)
        if count > MAX_VARIABLES:
            raise InvalidModelFileError(f"{path.name} claims {count} variables; not a CTranslate2 model")
        variables = []
        for _ in range(count):
            name = _string(fh, path)
            (rank,) = _read(fh, "<B", path)
            if rank > MAX_RANK:
                raise InvalidModelFileError(f"{path.name}: variable {name} has rank {rank}")
            shape = _read(fh, f"<{rank}I", path)
            type_id, nbytes = _read(fh, "<BI", path)
            if type_id >= len(TYPES):
                raise InvalidModelFileError(f"{path.name}: variable {name} has unknown type {type_id}")
            dtype, item = TYPES[type_id]
            elements = 1
            for dim in shape:
                elements *= dim
            if nbytes != elements * item or fh.tell() + nbytes > size:
                raise InvalidModelFileError(f"{path.name} is truncated or damaged (variable {name} does not fit)",
                                            "the file is incomplete: download or join it again")
            fh.seek(nbytes, 1)
            variables.append(Variable(name, tuple(shape), dtype, nbytes))
        if fh.tell() + 4 > size:
            raise InvalidModelFileError(f"{path.name} is truncated (no alias table after the variables)")
    return CT2Header(version, spec, revision, tuple(variables), size)
