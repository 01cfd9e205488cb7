"""The catalogue's row 3 (issue 18): crafted GGUF and safetensors files, built here byte by byte. Each
is inspected (``corral.models.inspect.inspect_path``) in a child process whose address space is
limited to 512 MiB (``RLIMIT_AS``): the answer is a clean ``InvalidModelFileError`` naming the
problem, never a ``MemoryError``, another exception or a crash, and the child's peak address space
grows by far less than any size the file claims. A sanity case shows the limit is in force (1 GiB
cannot be allocated under it) and that the JSON bomb below really is one (parsed naively, it fails).
Then the doors a user hits: ``corral inspect`` on a crafted file, and a registered GGUF replaced by a
damaged one after registration, loaded over HTTP and by ``corral run``: refused by corral's reader
before llama.cpp's loader ever opens it."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import run_cli
from tests.server.test_fake_http import fake_runtime, run, serving

pytestmark = pytest.mark.timeout(180)
MiB = 1 << 20
LIMIT = 512 * MiB
GROWTH = 128 * MiB  # the most an inspection of these files may add to the child's peak address space

CHILD = r"""
import json, resource, sys
from pathlib import Path

resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[4]), int(sys.argv[4])))


def vm_peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmPeak:"))


def outcome(work):
    try:
        return {"outcome": "ok", "value": work()}
    except MemoryError:
        return {"outcome": "MemoryError"}
    except Exception as exc:
        return {"outcome": type(exc).__name__, "message": str(exc), "status": getattr(exc, "http_status", None)}


mode, target, warm = sys.argv[1:4]
if mode == "allocate":
    result = outcome(lambda: len(bytearray(1 << 30)))
elif mode == "json":
    data = Path(target).read_bytes()
    result = outcome(lambda: type(json.loads(data[8:])).__name__)
else:
    from corral.models.inspect import inspect_path

    inspect_path(Path(warm))  # the imports and caches an inspection needs, before measuring
    before = vm_peak()
    result = outcome(lambda: inspect_path(Path(target)).format)
    result["growth"] = vm_peak() - before
print(json.dumps(result))
"""


def limited(mode: str, target: Path, warm: Path) -> dict[str, Any]:
    """CHILD's JSON line: ``mode`` run on ``target`` under the address-space limit."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(target), str(warm), str(LIMIT)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def refused_cleanly(result: dict[str, Any], pattern: str, kind: str) -> None:
    assert result["outcome"] == "InvalidModelFileError", result
    assert result["status"] == 422
    assert f"is not a valid {kind} file" in result["message"], result["message"]
    assert re.search(pattern, result["message"]), result["message"]
    assert len(result["message"]) < 1000  # names from the file are cut short in messages
    assert result["growth"] < GROWTH, result


# --- GGUF, byte by byte ---------------------------------------------------------------------------

def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv_str(key: str, value: str) -> bytes:
    return gstr(key) + struct.pack("<I", 8) + gstr(value)


def kv_u32(key: str, value: int) -> bytes:
    return gstr(key) + struct.pack("<II", 4, value)


Tensor = tuple[str | bytes, tuple[int, ...], int, int]  # name (or its raw encoding), shape, ggml type, offset
F32 = 0
ARCH = kv_str("general.architecture", "llama")


def gguf(tensors: list[Tensor] | None = None, kvs: list[bytes] | None = None, data: bytes = b"\0" * 64, *,
         n_tensors: int | None = None, n_kv: int | None = None, magic: bytes = b"GGUF") -> bytes:
    """A GGUF v3 file: header, metadata, tensor infos, padding to 32 bytes, then ``data``."""
    tensors = [("w", (16,), F32, 0)] if tensors is None else tensors
    kvs = [ARCH] if kvs is None else kvs
    head = magic + struct.pack("<IQQ", 3, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv) + b"".join(kvs)
    for name, shape, ggml_type, offset in tensors:
        raw_name = name if isinstance(name, bytes) else gstr(name)
        head += raw_name + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        head += struct.pack("<IQ", ggml_type, offset)
    return head + b"\0" * (-len(head) % 32) + data


def many_large_strings(path: Path) -> None:
    """Twelve metadata strings of 40 MiB each (480 MiB in all, a sparse file): each one fits the file,
    all of them kept would not fit the limit."""
    size = 40 * MiB
    with path.open("wb") as fh:
        fh.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 12))
        for i in range(12):
            fh.write(gstr(f"general.note{i}") + struct.pack("<IQ", 8, size))
            fh.seek(size, 1)
        fh.write(b"\0" * 64)


VALID_GGUF = gguf()
GGUF_CASES: dict[str, tuple[Callable[[Path], None] | bytes, str]] = {
    "bad magic": (gguf(magic=b"GGML"), "missing the GGUF magic bytes"),
    "truncated in the header": (VALID_GGUF[:40], "file ends first|more than the file can hold"),
    "truncated in the data": (VALID_GGUF[:-8], r"tensor 'w' needs bytes \d+ to \d+ but the file has"),
    "2^62 tensors": (gguf(n_tensors=2**62), "claims 4611686018427387904 tensors"),
    "2^40 metadata entries": (gguf(n_kv=2**40), "claims 1099511627776 metadata entries"),
    "2^40-byte key": (gguf(kvs=[struct.pack("<Q", 2**40) + b"general.name"]),
                      "claims 1099511627776 bytes of string"),
    "2^40-byte value": (gguf(kvs=[gstr("general.name") + struct.pack("<IQ", 8, 2**40) + b"x" * 32]),
                        "claims 1099511627776 bytes of string"),
    "2^40-byte tensor name": (gguf([(struct.pack("<Q", 2**40) + b"w", (16,), F32, 0)]),
                              "claims 1099511627776 bytes of string"),
    "2^40-item array": (gguf(kvs=[gstr("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2**40)]),
                        "claims 1099511627776 items in array"),
    "unknown metadata type": (gguf(kvs=[gstr("general.x") + struct.pack("<I", 99)]), "unknown value type 99"),
    "metadata strings over 64 MiB in all": (many_large_strings, "metadata strings hold more than 67108864 bytes"),
    "tensor past the end": (gguf([("w", (16,), F32, 2**40)]), "needs bytes 1099511627\\d+ to .* but the file has"),
    "tensor larger than the file": (gguf([("w", (1024, 1024), F32, 0)]), r"needs bytes \d+ to 4194\d+ but"),
    "overlapping tensors": (gguf([("a", (16,), F32, 0), ("b", (16,), F32, 32)], data=b"\0" * 128),
                            "tensors 'a' and 'b' overlap"),
    "tensor listed twice": (gguf([("a", (8,), F32, 0), ("a", (8,), F32, 32)]), "tensor 'a' is listed twice"),
    "a 1 MiB name listed twice": (gguf([("n" * MiB, (8,), F32, 0), ("n" * MiB, (8,), F32, 32)]),
                                  r"tensor 'n{99}\.\.\. is listed twice"),
    "misaligned tensor": (gguf([("w", (8,), F32, 4)]), "offset 4, not a multiple of the alignment 32"),
    "dimensions wrapping 2^64": (gguf([("w", (2**32, 2**32), F32, 0)]), "impossible shape"),
    "dimensions overflowing int64": (gguf([("w", (1024,) * 7, F32, 0)], data=b"\0" * 1024),
                                     "size overflows 64 bits"),
    "1000 dimensions": (gguf([("w", (1,) * 1000, F32, 0)]), "claims 1000 dimensions"),
    "row not whole blocks": (gguf([("w", (16,), 2, 0)]), "rows of 16 elements are not whole blocks of 32"),
    "unknown tensor type": (gguf([("w", (16,), 99, 0)]), "unknown ggml type 99"),
    "alignment 0": (gguf(kvs=[ARCH, kv_u32("general.alignment", 0)]), "general.alignment 0 is not a power of two"),
    "alignment 48": (gguf(kvs=[ARCH, kv_u32("general.alignment", 48)]), "general.alignment 48 is not"),
    "alignment 2^31": (gguf(kvs=[ARCH, kv_u32("general.alignment", 2**31)]), "general.alignment 2147483648 is not"),
    "alignment a string": (gguf(kvs=[ARCH, kv_str("general.alignment", "32")]), "general.alignment '32' is not"),
}


@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_crafted_gguf_is_a_clean_error_under_512_mib(tmp_path: Path, case: str) -> None:
    content, pattern = GGUF_CASES[case]
    target, warm = tmp_path / "model.gguf", tmp_path / "warm.gguf"
    warm.write_bytes(VALID_GGUF)
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        content(target)
    refused_cleanly(limited("inspect", target, warm), pattern, "GGUF")


# --- safetensors ----------------------------------------------------------------------------------

def st(header: Any, data: bytes = b"\0" * 64, claimed: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if claimed is None else claimed) + raw + data


def tensor(shape: list[int], start: int, end: int, dtype: str = "F32") -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


BERT = json.dumps({"architectures": ["BertModel"], "model_type": "bert"})


def st_folder(folder: Path, content: bytes | Callable[[Path], None], config: str = BERT) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(config)
    if isinstance(content, bytes):
        (folder / "model.safetensors").write_bytes(content)
    else:
        content(folder / "model.safetensors")
    return folder


def header_over_the_cap(path: Path) -> None:
    """A 30 MB header the (sparse) file does hold: more than the hub's 25 MB bound."""
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", 30_000_000))
        fh.truncate(8 + 30_000_000)


JSON_BOMB = st(b"[" + b"[]," * 8_000_000 + b"[]]", b"")  # 24 MB of empty lists: 8 million Python objects
VALID_ST = st({"a": tensor([8], 0, 32), "b": tensor([8], 32, 64), "__metadata__": {"format": "pt"}})
ST_CASES: dict[str, tuple[bytes | Callable[[Path], None], str]] = {
    "header larger than the file": (st({}, claimed=2**40), "header claims 1099511627776 bytes but the file has"),
    "header length 2^64-1": (st({}, claimed=2**64 - 1), "header claims 18446744073709551615 bytes"),
    "header over 25 MB": (header_over_the_cap, "header claims 30000000 bytes, more than the 25000000 allowed"),
    "shorter than the length": (b"\x10\0\0", "shorter than its 8-byte header length"),
    "reversed offsets": (st({"w": tensor([4], 16, 0)}), r"tensor 'w' has reversed data_offsets \[16, 0\]"),
    "overlapping offsets": (st({"a": tensor([8], 0, 32), "b": tensor([8], 16, 48)}), "tensors 'a' and 'b' overlap"),
    "offsets past the file": (st({"w": tensor([2**38], 0, 2**40)}), "tensor 'w' lies outside the file"),
    "negative offset": (st({"w": tensor([4], -16, 0)}), "tensor 'w' lies outside the file"),
    "shape not matching bytes": (st({"w": tensor([4], 0, 8)}), r"shape \[4\] \(F32\) does not match .* of 8"),
    "shape overflowing": (st({"w": tensor([2**62, 2**62], 0, 16)}), "does not match its byte range"),
    "unknown dtype": (st({"w": tensor([4], 0, 16, "F128")}), "malformed dtype, shape or offsets"),
    "rank 100000": (st({"w": tensor([1] * 100_000, 0, 4)}), "malformed dtype, shape or offsets"),
    "dimension 2^64": (st({"w": tensor([2**64], 0, 4)}), "malformed dtype, shape or offsets"),
    "a 5000-digit dimension": (st(b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}'),
                               r"header is not JSON \(ValueError: Exceeds the limit \(4300 digits\)"),
    "not JSON": (st(b"\xff\xfe{["), "header is not JSON"),
    "not an object": (st([1, 2]), "header is not a JSON object"),
    "nested 100000 deep": (st(b"[" * 100_000), r"header is not JSON \(RecursionError"),
    "a JSON bomb": (JSON_BOMB, r"header holds \d+ JSON values, more than the 2000000 allowed"),
}


@pytest.mark.parametrize("case", list(ST_CASES))
def test_crafted_safetensors_is_a_clean_error_under_512_mib(tmp_path: Path, case: str) -> None:
    content, pattern = ST_CASES[case]
    target, warm = st_folder(tmp_path / "m", content), st_folder(tmp_path / "warm", VALID_ST)
    refused_cleanly(limited("inspect", target, warm), pattern, "safetensors")


@pytest.mark.parametrize(("config", "pattern"), [
    ("[" * 100_000, r"config.json is not valid JSON: RecursionError"),
    ('{"vocab_size": ' + "9" * 5000 + "}", r"config.json is not valid JSON: ValueError: Exceeds the limit"),
    ("[1, 2]", "config.json does not hold a JSON object")], ids=["nested 100000 deep", "5000 digits", "a list"])
def test_a_crafted_config_json_beside_the_weights(tmp_path: Path, config: str, pattern: str) -> None:
    """The JSON files of a safetensors folder are bounded too (16 MB): deep nesting and integers too long
    to convert are clean errors, not a RecursionError or ValueError out of the inspection."""
    target, warm = st_folder(tmp_path / "m", VALID_ST, config), st_folder(tmp_path / "warm", VALID_ST)
    result = limited("inspect", target, warm)
    assert (result["outcome"], result["status"]) == ("InvalidModelFileError", 422), result
    assert re.search(pattern, result["message"]), result["message"]


def test_the_limit_is_in_force_and_the_bomb_is_one(tmp_path: Path) -> None:
    """Under the child's limit 1 GiB cannot be allocated, and the JSON bomb parsed as any JSON would
    be runs out of memory: the cases above would fail if corral allocated what the files ask for."""
    warm = st_folder(tmp_path / "warm", VALID_ST)
    assert limited("allocate", warm, warm)["outcome"] == "MemoryError"
    bomb = tmp_path / "bomb.safetensors"
    bomb.write_bytes(JSON_BOMB)
    assert limited("json", bomb, warm)["outcome"] == "MemoryError"
    assert limited("inspect", warm, warm)["outcome"] == "ok"  # a valid file inspects under the limit
    gguf_file = tmp_path / "ok.gguf"
    gguf_file.write_bytes(gguf([("a", (8,), F32, 0), ("b", (8,), F32, 32)],
                               [ARCH, kv_u32("general.alignment", 32)]))
    assert limited("inspect", gguf_file, gguf_file)["value"] == "gguf"


def test_the_block_sizes_are_ggml_s() -> None:
    """The bytes a tensor takes are worked out from ggml's own block sizes (gguf-py's table)."""
    from gguf.constants import GGML_QUANT_SIZES

    from corral.models.gguf_reader import BLOCKS

    assert {int(k): v for k, v in GGML_QUANT_SIZES.items()} == BLOCKS


# --- the doors --------------------------------------------------------------------------------------

def test_corral_inspect_refuses_crafted_files(tmp_path: Path) -> None:
    crafted = tmp_path / "crafted.gguf"
    crafted.write_bytes(GGUF_CASES["overlapping tensors"][0])  # type: ignore[arg-type]
    r = run_cli("inspect", str(crafted))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "crafted.gguf is not a valid GGUF file: tensors 'a' and 'b' overlap" in r.stderr
    assert "Traceback" not in r.stderr
    folder = st_folder(tmp_path / "st", ST_CASES["reversed offsets"][0])  # type: ignore[arg-type]
    r = run_cli("inspect", str(folder), "--json")
    assert r.returncode == 1 and "reversed data_offsets" in r.stderr and "Traceback" not in r.stderr


def test_a_gguf_damaged_after_registration_never_reaches_llama_cpp(tmp_path: Path, smollm2_path: Path) -> None:
    """Registered whole, then cut short (a half-written copy): loading it re-reads the header with
    corral's reader, so the error is that reader's (naming the tensor past the end), not llama.cpp's
    ("llama_cpp could not load ..."), over HTTP (422, JSON error) and through ``corral run``."""
    from corral.config import load_settings
    from corral.models.refs import parse_ref
    from corral.models.resolve import Resolver
    from corral.models.store import Store

    copy = tmp_path / "smol.gguf"
    shutil.copyfile(smollm2_path, copy)
    settings = load_settings()
    entry = Resolver(settings, Store(settings.manifest_path)).register(parse_ref(str(copy)), name="smol")
    assert entry.name == "smol" and entry.info.format == "gguf"
    os.truncate(copy, copy.stat().st_size - 4096)

    async def scenario() -> tuple[int, Any]:
        async with serving(fake_runtime()) as (_, http):
            r = await http.post("/v1/chat/completions", json={"model": "smol", "max_tokens": 1,
                                                              "messages": [{"role": "user", "content": "hi"}]})
            return r.status_code, r.json()

    status, body = run(scenario())
    assert status == 422, body
    message = body["error"]["message"]
    assert "smol.gguf is not a valid GGUF file: tensor" in message and "but the file has" in message, message
    assert "could not load" not in message
    r = run_cli("run", "smol", "hi", "--max-tokens", "1")
    assert r.returncode == 1 and "smol.gguf is not a valid GGUF file: tensor" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "could not load" not in r.stderr
