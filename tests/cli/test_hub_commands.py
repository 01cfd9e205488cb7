"""`corral search`, `login`, `logout` and pulls of gated and private repos, through the real CLI entry point and
the real huggingface_hub client, against the stand-in hub (tests/hub_server.py) on 127.0.0.1: what reached the
hub, what corral marks runnable with which estimate, and what a refused pull tells the user to do next."""

from __future__ import annotations

import copy
import io
import json
import os
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from huggingface_hub import constants as hf_constants
from huggingface_hub.hf_api import ModelInfo
from tests.conftest import run_cli
from tests.hub_server import FakeHub

from corral.cli.main import main
from corral.models.hub_search import gguf_quantization, judge
from corral.models.memory import ENGINE_OVERHEAD

TOKEN = "hf_GOODtoken0123456789abcdefghij"  # alice's: may read the gated repo
OTHER = "hf_OTHERtoken0123456789abcdefgh"  # bob's: a valid token without access
BAD = "hf_BADtoken0123456789abcdefghijk"  # no account's
GGUF_PARAMS, LLAMA_PARAMS = 134_515_008, 360_000_000

GGUF = {"id": "org/tiny-gguf", "library_name": "gguf", "tags": ["gguf", "llama", "conversational"],
        "pipeline_tag": "text-generation", "downloads": 500, "likes": 7, "lastModified": "2024-05-01T10:00:00.000Z",
        "gated": False, "private": False,
        "gguf": {"total": GGUF_PARAMS, "architecture": "llama", "context_length": 8192, "chat_template": "{{ x }}"},
        "siblings": [{"rfilename": "README.md"}, {"rfilename": "tiny-Q4_K_M.gguf"}]}
LLAMA = {"id": "org/tiny-llama", "library_name": "transformers",
         "tags": ["transformers", "safetensors", "llama", "text-generation", "conversational"],
         "pipeline_tag": "text-generation", "downloads": 900, "likes": 3, "lastModified": "2024-03-01T00:00:00.000Z",
         "gated": "manual", "private": False,
         "safetensors": {"parameters": {"BF16": LLAMA_PARAMS}, "total": LLAMA_PARAMS},
         "config": {"architectures": ["LlamaForCausalLM"], "model_type": "llama"},
         "siblings": [{"rfilename": "config.json"}, {"rfilename": "model.safetensors"}]}
TIMM = {"id": "org/tiny-timm", "library_name": "timm", "tags": ["timm", "safetensors", "image-classification"],
        "pipeline_tag": "image-classification", "downloads": 50, "likes": 12,
        "lastModified": "2024-01-01T00:00:00.000Z", "gated": False, "private": False,
        "siblings": [{"rfilename": "model.safetensors"}]}
OTHER_MODEL = {"id": "org/unrelated", "library_name": "transformers", "tags": ["transformers"], "downloads": 10**6}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small transformers-shaped repo (config + a 16-float safetensors) the gated repo serves."""
    folder = tmp_path / "repo"
    folder.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
              "num_hidden_layers": 1, "num_attention_heads": 2}
    (folder / "config.json").write_text(json.dumps(config))
    header = json.dumps({"w": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]}}).encode()
    header += b" " * (-len(header) % 8)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))
    return folder


@pytest.fixture
def hub(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The stand-in hub as HF_ENDPOINT, online for this test only; huggingface_hub's import-time copies of the
    environment (offline flag, token files under HF_HOME) aligned with it."""
    home = Path(os.environ["HF_HOME"])
    with FakeHub(repo, repo_id="org/gated") as fake:
        fake.listed = copy.deepcopy([GGUF, LLAMA, TIMM, OTHER_MODEL])
        fake.tokens = {TOKEN: "alice", OTHER: "bob"}
        fake.granted = {TOKEN}
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        for var in ("TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))
        monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
        yield fake


def corral(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def listings(hub: FakeHub) -> list[dict[str, list[str]]]:
    return [parse_qs(r.query) for r in hub.requests if r.path == "/api/models"]


def test_search_sends_the_query_and_marks_what_corral_runs(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    hub.page_size = 2  # three models take two pages: the client follows the Link header
    code, out, err = corral(capsys, "search", "tiny", "--sort", "likes", "--limit", "3", "--json")
    assert code == 0, err
    first, second = listings(hub)
    assert first["search"] == ["tiny"] and first["sort"] == ["likes"] and first["limit"] == ["3"]
    assert {"safetensors", "gguf", "config", "siblings", "tags", "library_name", "gated"} <= set(first["expand"])
    assert second["cursor"] == ["2"]
    rows = {row["id"]: row for row in json.loads(out)}
    assert list(rows) == ["org/tiny-timm", "org/tiny-gguf", "org/tiny-llama"]  # by likes, the unrelated one left out
    assert set(rows["org/tiny-gguf"]) == {"id", "task", "library", "downloads", "likes", "last_modified", "gated",
                                          "private", "runnable", "engine", "tasks", "note", "parameters",
                                          "memory_bytes"}
    gguf, llama, timm = rows["org/tiny-gguf"], rows["org/tiny-llama"], rows["org/tiny-timm"]
    # a Q4_K_M file: 144 bytes a block of 256 weights, plus what llama.cpp's load adds
    assert gguf["runnable"] and gguf["engine"] == "llama_cpp" and gguf["tasks"] == ["chat", "complete", "embed"]
    assert gguf["parameters"] == GGUF_PARAMS and gguf["downloads"] == 500 and gguf["gated"] is False
    assert gguf["memory_bytes"] == GGUF_PARAMS * 144 // 256 + ENGINE_OVERHEAD["llama_cpp"]
    assert gguf["last_modified"].startswith("2024-05-01T10:00:00")
    # bf16 safetensors: two bytes a parameter, plus what the transformers load adds
    assert llama["runnable"] and llama["engine"] == "transformers" and llama["tasks"] == ["chat", "complete"]
    assert llama["memory_bytes"] == 2 * LLAMA_PARAMS + ENGINE_OVERHEAD["transformers"]
    assert llama["gated"] == "manual" and llama["task"] == "text-generation"
    assert not timm["runnable"] and timm["engine"] is None and timm["memory_bytes"] is None
    assert "timm" in timm["note"]


def test_search_filters_reach_the_hub_and_print_a_table(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = corral(capsys, "search", "--task", "text-generation", "--library", "gguf")
    assert code == 0, err
    (query,) = listings(hub)
    assert query["pipeline_tag"] == ["text-generation"] and query["filter"] == ["gguf"]
    assert query["sort"] == ["downloads"] and query["limit"] == ["20"] and "search" not in query
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["MODEL", "TASK", "DOWNLOADS"] and "RUNS" in header and "MEMORY" in header
    assert row.split()[:2] == ["org/tiny-gguf", "text-generation"]
    assert "llama_cpp" in row and "~79.9 MB" in row and "org/tiny-llama" not in out


def test_search_offline_or_unreachable_says_so(hub: FakeHub, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = corral(capsys, "search", "llama")
    assert code == 1 and out == "" and "Traceback" not in err
    assert "offline mode is on" in err and "unset HF_HUB_OFFLINE" in err
    assert hub.requests == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
    code, _, err = corral(capsys, "search", "llama")
    assert code == 1 and "cannot reach the Hugging Face Hub" in err and "check the network connection" in err
    code, _, err = corral(capsys, "search", "llama", "--limit", "0")
    assert code == 2 and "--limit 0" in err


def test_login_refuses_a_bad_token(hub: FakeHub, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(BAD + "\n"))  # piped in, as `echo $T | corral login`
    code, out, err = corral(capsys, "login")
    assert code == 77 and "refused this token" in err and "settings/tokens" in err
    assert BAD not in out + err
    assert [r.path for r in hub.requests] == ["/api/whoami-v2"]
    assert not (Path(os.environ["HF_HOME"]) / "token").exists()
    code, _, err = corral(capsys, "login", "--token", "two words")
    assert code == 2 and "not a Hugging Face token" in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = corral(capsys, "login", "--token", TOKEN)
    assert code == 1 and "offline mode is on" in err and TOKEN not in err


def test_a_gated_pull_without_access_says_what_to_do(hub: FakeHub, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    hub.gate = "manual"
    code, _, err = corral(capsys, "pull", "org/gated", "-q")
    assert code == 77 and "Traceback" not in err
    assert "org/gated is a gated repository" in err and f"accept its terms at {hub.endpoint}/org/gated" in err
    assert "corral login" in err
    monkeypatch.setenv("HF_TOKEN", OTHER)  # a valid token whose account has not been granted access
    code, _, err = corral(capsys, "pull", "org/gated", "-q")
    assert code == 77 and "your Hugging Face token has no access to the gated repository org/gated" in err
    assert OTHER not in err
    assert not [r for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]  # no file body fetched
    code, out, _ = corral(capsys, "list", "--json")
    assert [m for m in json.loads(out) if m.get("source_kind") == "hf"] == []


def test_a_private_repo_without_a_login_says_so(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    hub.private = True
    code, _, err = corral(capsys, "pull", "org/gated", "-q")
    assert code == 77 and "org/gated was not found, or it is private and needs a login" in err
    assert "corral login" in err


def test_login_then_the_gated_pull_then_logout(hub: FakeHub) -> None:
    """The real `corral` processes: HF_HOME and HF_ENDPOINT read as a user sets them, no token printed."""
    hub.gate = "manual"
    home = Path(os.environ["HF_HOME"])
    done = run_cli("login", input=TOKEN + "\n", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "as alice" in done.stdout and str(home / "token") in done.stdout
    assert TOKEN not in done.stdout + done.stderr
    assert (home / "token").read_text() == TOKEN  # in huggingface_hub's storage under HF_HOME, nowhere else

    pulled = run_cli("pull", "org/gated", "-q", timeout=60)
    assert pulled.returncode == 0, pulled.stderr
    assert "registered org/gated" in pulled.stdout and TOKEN not in pulled.stdout + pulled.stderr
    bodies = [r for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]
    assert {r.path.rsplit("/", 1)[-1] for r in bodies} == {"config.json", "model.safetensors"}
    assert all(_auth(r.headers) == f"Bearer {TOKEN}" for r in bodies)

    out = run_cli("logout", timeout=60)
    assert out.returncode == 0 and "logged out" in out.stdout, out.stderr
    assert not (home / "token").exists() and not (home / "stored_tokens").exists()
    assert "not logged in" in run_cli("logout", timeout=60).stdout


def _auth(headers: dict[str, str]) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == "authorization"), None)


def _listed(entry: dict[str, Any]) -> ModelInfo:
    return ModelInfo(**copy.deepcopy(entry))


@pytest.mark.parametrize(("entry", "runnable", "engine", "note"), [
    ({"library_name": "gguf", "tags": ["gguf"], "siblings": ["a-Q4_0.gguf", "a-Q8_0.gguf"]}, False, "llama_cpp",
     "2 GGUF files"),
    ({"library_name": "transformers", "tags": ["transformers", "pytorch", "custom_code"],
      "pipeline_tag": "text-classification", "siblings": ["config.json", "pytorch_model.bin"]}, True, "transformers",
     "pickle weights: run with --allow-pickle; its own code: run with --trust-remote-code"),
    ({"library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
      "config": {"architectures": ["BertModel"], "model_type": "bert"},
      "siblings": ["config.json", "model.safetensors"]}, True, "sentence_transformers", None),
    ({"library_name": "diffusers", "pipeline_tag": "image-to-image",
      "config": {"diffusers": {"_class_name": "StableDiffusionImg2ImgPipeline"}},
      "siblings": ["model_index.json", "unet/model.safetensors"]}, False, "diffusers",
     "no task corral knows (the hub's task: image-to-image)"),
    ({"library_name": "transformers", "pipeline_tag": "fill-mask", "siblings": ["config.json", "model.safetensors"],
      "config": {"architectures": ["BertForMaskedLM"], "model_type": "bert"}}, False, "transformers",
     "embed: not served by corral's transformers engine"),
    ({"library_name": "transformers", "pipeline_tag": "fill-mask",  # saved by sentence-transformers: it embeds
      "siblings": ["config.json", "modules.json", "model.safetensors"],
      "config": {"architectures": ["BertForMaskedLM"], "model_type": "bert"}}, True, "sentence_transformers", None),
    ({"library_name": "spacy", "pipeline_tag": "token-classification", "siblings": ["meta.json"]}, True, "spacy",
     None),
    ({"library_name": "onnx", "pipeline_tag": "text-to-speech", "siblings": ["voice.onnx"]}, False, "piper",
     "Piper voice config"),
    ({"library_name": "onnx", "pipeline_tag": "text-to-speech", "siblings": ["voice.onnx", "voice.onnx.json"]},
     True, "piper", None),
])
def test_what_corral_can_run_comes_from_its_tables(entry: dict[str, Any], runnable: bool, engine: str,
                                                   note: str | None) -> None:
    entry = {**entry, "id": "org/x", "siblings": [{"rfilename": f} for f in entry["siblings"]]}
    verdict = judge(_listed(entry), installed=lambda name: True)
    assert (verdict.runnable, verdict.engine) == (runnable, engine)
    assert (verdict.note is None) if note is None else (note in (verdict.note or ""))


def test_a_missing_engine_library_is_named_and_quantizations_read_from_names() -> None:
    verdict = judge(_listed(GGUF), installed=lambda name: name != "llama_cpp")
    assert verdict.runnable and verdict.note == "install corral[llama]"
    assert gguf_quantization("SmolLM2-135M-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert gguf_quantization("model.IQ2_XS.gguf") == "IQ2_XS" and gguf_quantization("model.gguf") is None
