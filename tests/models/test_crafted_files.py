"""Inspection bounds every count and length a file header claims; crafted files give clean errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from corral.errors import InvalidModelFileError
from corral.models.gguf_reader import read_gguf_header
from corral.models.inspect import inspect_path


def gguf_bytes(n_tensors: int, n_kv: int, body: bytes = b"", version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + body


def gguf_string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_gguf_claiming_2_62_tensors(tmp_path: Path) -> None:
    path = write(tmp_path, "huge.gguf", gguf_bytes(2**62, 0) + b"\0" * 64)
    with pytest.raises(InvalidModelFileError, match="claims 4611686018427387904 tensors"):
        inspect_path(path)


def test_gguf_claiming_huge_kv_count(tmp_path: Path) -> None:
    path = write(tmp_path, "kv.gguf", gguf_bytes(0, 2**40) + b"\0" * 64)
    with pytest.raises(InvalidModelFileError, match="metadata entries"):
        read_gguf_header(path)


def test_gguf_string_longer_than_file(tmp_path: Path) -> None:
    body = struct.pack("<Q", 2**50) + b"key"
    path = write(tmp_path, "str.gguf", gguf_bytes(0, 1, body) + b"\0" * 16)
    with pytest.raises(InvalidModelFileError, match="more than the file can hold"):
        read_gguf_header(path)


def test_gguf_array_longer_than_file(tmp_path: Path) -> None:
    body = gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2**33)
    path = write(tmp_path, "arr.gguf", gguf_bytes(0, 1, body) + b"\0" * 16)
    with pytest.raises(InvalidModelFileError, match="items in array"):
        read_gguf_header(path)


def test_gguf_tensor_with_too_many_dims(tmp_path: Path) -> None:
    body = gguf_string("w") + struct.pack("<I", 1000) + b"\0" * 64
    path = write(tmp_path, "dims.gguf", gguf_bytes(1, 0, body))
    with pytest.raises(InvalidModelFileError, match="1000 dimensions"):
        read_gguf_header(path)


def test_gguf_truncated_and_bad_magic(tmp_path: Path, smollm2_path: Path) -> None:
    truncated = write(tmp_path, "cut.gguf", smollm2_path.read_bytes()[:5000])
    with pytest.raises(InvalidModelFileError, match=r"file ends first|more than the file can hold"):
        inspect_path(truncated)
    with pytest.raises(InvalidModelFileError, match="magic"):
        inspect_path(write(tmp_path, "bad.gguf", b"NOPE" + b"\0" * 100))
    with pytest.raises(InvalidModelFileError, match="version 99"):
        inspect_path(write(tmp_path, "v99.gguf", gguf_bytes(0, 0, version=99) + b"\0" * 8))


def safetensors_bytes(header: dict[str, object], data: bytes = b"", claimed: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", claimed if claimed is not None else len(raw)) + raw + data


def st_folder(tmp_path: Path, data: bytes) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    (folder / "model.safetensors").write_bytes(data)
    return folder


def test_safetensors_header_larger_than_file(tmp_path: Path) -> None:
    folder = st_folder(tmp_path, safetensors_bytes({}, claimed=2**40))
    with pytest.raises(InvalidModelFileError, match="header claims 1099511627776 bytes"):
        inspect_path(folder)


def test_safetensors_tensor_outside_file(tmp_path: Path) -> None:
    header = {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}
    folder = st_folder(tmp_path, safetensors_bytes(header, b"\0" * 16))
    with pytest.raises(InvalidModelFileError, match="lies outside the file"):
        inspect_path(folder)


def test_safetensors_shape_mismatch_and_garbage(tmp_path: Path) -> None:
    header = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}
    with pytest.raises(InvalidModelFileError, match="does not match its byte range"):
        inspect_path(st_folder(tmp_path, safetensors_bytes(header, b"\0" * 8)))
    other = tmp_path / "o"
    other.mkdir()
    (other / "config.json").write_text("{}")
    (other / "model.safetensors").write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{[")
    with pytest.raises(InvalidModelFileError, match="not JSON"):
        inspect_path(other)


def test_config_json_that_is_not_an_object(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(InvalidModelFileError, match="JSON object"):
        inspect_path(folder)


def test_non_model_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFileError, match="not a model"):
        inspect_path(write(tmp_path, "notes.txt", b"hello"))
