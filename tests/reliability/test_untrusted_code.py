"""The catalogue's row 5 (issue 18): pickle-only repos and repos that ship their own code. Three
tiny GPT-2 folders are built in the test: one whose weights are only a ``pytorch_model.bin`` pickle
whose ``__reduce__`` creates a canary file, one whose config.json ``auto_map`` points at a
``modeling_evil.py``, and one whose tokenizer_config.json ``auto_map`` points at a
``tokenization_evil.py`` (each module creates a canary when imported). Through every door that loads
a model (``corral inspect``, ``run`` and ``export``, the OpenAI, Ollama, Anthropic and Responses
routes and the admin load route in-process on the real engines, the sidecar's
models/load and chat, and a pull from a stand-in hub), without the opt-in each is refused with the
flag named, no canary exists, no repo module was imported and no copy of the code was made. With
``--trust-remote-code`` the repo's code does run (the canary appears: the test can fail); with
``--allow-pickle`` the gate opens, and transformers' weights-only unpickler still refuses the payload
(a child process unpickling the same file plainly creates the canary)."""

from __future__ import annotations

import asyncio
import json
import pickle
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import run_cli
from tests.hub_server import FakeHub
from tests.server.test_fake_http import fake_runtime, run, serving

from corral.cli.main import main
from corral.errors import CorralError

pytestmark = pytest.mark.timeout(300)
FLAGS = {"pickled": "--allow-pickle", "evil-model": "--trust-remote-code", "evil-tokenizer": "--trust-remote-code"}


class Canary:
    """Unpickled, it calls ``open(path, "w")``: the file appearing is the proof the pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (self.path, "w")


def evil_module(canary: Path, body: str) -> str:
    return f"import pathlib\npathlib.Path({str(canary)!r}).touch()\n{body}"


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.tiny_models import build_causal_lm

    return build_causal_lm("gpt2", tmp_path_factory.mktemp("gpt2") / "gpt2").path


def build_repos(root: Path, gpt2: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (folder, its canary): the pickle-only repo and the two that ship code."""
    repos: dict[str, tuple[Path, Path]] = {}
    for name in FLAGS:
        folder = root / name
        shutil.copytree(gpt2, folder)
        repos[name] = (folder, root / f"{name}.canary")
    folder, canary = repos["pickled"]
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Canary(canary), protocol=2))
    folder, canary = repos["evil-model"]
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(evil_module(canary, "from transformers import GPT2LMHeadModel\n\n\n"
                                                                 "class EvilForCausalLM(GPT2LMHeadModel):\n    pass\n"))
    folder, canary = repos["evil-tokenizer"]
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    tok["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    tokenizer = "from transformers import PreTrainedTokenizerFast\n\n\nclass EvilTokenizer(PreTrainedTokenizerFast):\n"
    (folder / "tokenization_evil.py").write_text(evil_module(canary, tokenizer + "    pass\n"))
    return repos


@pytest.fixture
def repos(tmp_path: Path, gpt2: Path) -> Iterator[dict[str, tuple[Path, Path]]]:
    built = build_repos(tmp_path / "repos", gpt2)
    yield built
    assert not [name for name in ("modeling_evil", "tokenization_evil") if name in sys.modules
                or any(m.endswith(f".{name}") for m in sys.modules)], "a repo's module was imported"


def no_trace(tmp_path: Path, repos: dict[str, tuple[Path, Path]]) -> None:
    """No canary, and no copy of a repo's code where transformers keeps the modules it imports."""
    assert [name for name, (_, canary) in repos.items() if canary.exists()] == []
    copies = [p for p in tmp_path.rglob("*_evil.py") if "repos" not in p.relative_to(tmp_path).parts]
    assert copies == []


def register_all(repos: dict[str, tuple[Path, Path]]) -> None:
    for name, (folder, _) in repos.items():
        assert main(["pull", str(folder), "--name", name, "--quiet"]) == 0


def test_the_cli_refuses_without_the_flag(tmp_path: Path, repos: dict[str, tuple[Path, Path]],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    for name, (folder, _) in repos.items():
        assert main(["inspect", str(folder)]) == 0  # reads the files, runs nothing, says what the flag is for
        assert f"refused unless {FLAGS[name]}" in capsys.readouterr().out
        assert main(["run", str(folder), "hi"]) == 1
        assert FLAGS[name] in capsys.readouterr().err
    register_all(repos)
    capsys.readouterr()
    for name in repos:
        assert main(["export", name, "-o", str(tmp_path / f"export-{name}")]) == 1
        assert FLAGS[name] in capsys.readouterr().err
        assert not (tmp_path / f"export-{name}").exists()
    done = run_cli("run", str(repos["evil-model"][0]), "hi")  # the real entry point, in a process of its own
    assert done.returncode == 1 and "--trust-remote-code" in done.stderr and "Traceback" not in done.stderr
    no_trace(tmp_path, repos)


def http_requests(name: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    chat = [{"role": "user", "content": "hi"}]
    return [("POST", "/v1/chat/completions", {"model": name, "messages": chat, "max_tokens": 2}),
            ("POST", "/v1/completions", {"model": name, "prompt": "hi", "max_tokens": 2}),
            ("POST", "/api/chat", {"model": name, "messages": chat, "stream": False}),
            ("POST", "/api/generate", {"model": name, "prompt": "hi", "stream": False}),
            ("POST", "/v1/messages", {"model": name, "max_tokens": 2, "messages": chat}),
            ("POST", "/v1/responses", {"model": name, "input": "hi"}),
            ("POST", f"/api/models/{name}/load", None)]


def message_of(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else str((error or {}).get("message", body))


def test_the_server_and_the_sidecar_refuse_without_the_flag(tmp_path: Path,
                                                            repos: dict[str, tuple[Path, Path]]) -> None:
    from corral.sidecar import methods

    register_all(repos)

    async def scenario() -> list[tuple[str, str, int, str]]:
        out = []
        async with serving(fake_runtime()) as (_, http):
            for name in repos:
                for method, path, body in http_requests(name):
                    r = await http.request(method, path, json=body)
                    out.append((name, path, r.status_code, message_of(r.json())))
        return out

    async def sidecar() -> list[tuple[str, str]]:
        out = []
        async with fake_runtime() as rt:
            session = methods.Session(rt, 1, lambda method, params: None)
            for name in repos:
                for call, params in ((methods.models_load, {"model": name}),
                                     (methods.chat, {"model": name, "messages": [{"role": "user", "content": "hi"}]})):
                    try:
                        await call(session, params)
                        out.append((name, "answered"))
                    except CorralError as exc:
                        out.append((name, f"{exc.http_status} {exc.message} {exc.hint}"))
        return out

    answers = run(scenario())
    assert [(n, p, s) for n, p, s, _ in answers if s != 403] == []
    assert [(n, p, m) for n, p, _, m in answers if FLAGS[n] not in m] == []
    said = asyncio.run(sidecar())
    assert [(n, m) for n, m in said if not m.startswith("403 ") or FLAGS[n] not in m] == []
    no_trace(tmp_path, repos)


def test_a_pickle_only_repo_pulled_from_a_hub_is_refused_at_load(tmp_path: Path, gpt2: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The hub's listing has no safetensors: the pull fetches the pickle (inspecting it runs nothing),
    and the model is refused when it is run. (huggingface_hub reads HF_HUB_OFFLINE at import, so the
    online steps run in processes of their own.)"""
    repos = build_repos(tmp_path / "repos", gpt2)
    folder, canary = repos["pickled"]
    with FakeHub(folder, repo_id="org/pickled") as hub:
        online = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
        pulled = run_cli("pull", "hf:org/pickled", "--quiet", env=online)
        fetched = [r.path.rsplit("/", 1)[-1] for r in hub.file_gets()]
    assert pulled.returncode == 0, pulled.stderr
    assert "pytorch_model.bin" in fetched
    assert main(["run", "org/pickled", "hi"]) == 1  # offline now: the model is registered
    assert "--allow-pickle" in capsys.readouterr().err
    assert not canary.exists()


def test_with_the_flags_the_canaries_are_live(tmp_path: Path, repos: dict[str, tuple[Path, Path]]) -> None:
    """The control, in a process of its own: the opt-ins really reach the libraries. The repos' code
    runs with --trust-remote-code; with --allow-pickle, transformers loads the .bin file through
    torch's weights-only unpickler, which refuses the payload (a clear error, no canary), while a
    plain unpickling of the same file does create the canary."""
    script = ("import sys\nfrom corral.cli.main import main\n"
              "print([main(['run', folder, 'hi', flag, '--max-tokens', '1']) for folder, flag in "
              "zip(sys.argv[1::2], sys.argv[2::2])])\n")
    argv = [a for name in FLAGS for a in (str(repos[name][0]), FLAGS[name])]
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=240)
    assert done.stdout.strip().splitlines()[-1] == "[1, 0, 0]", done.stderr[-3000:]
    assert repos["evil-model"][1].exists() and repos["evil-tokenizer"][1].exists()
    assert "hold more than tensors" in done.stderr and "Traceback" not in done.stderr
    folder, canary = repos["pickled"]
    assert not canary.exists()
    plain = subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))",
                            str(folder / "pytorch_model.bin")], capture_output=True, timeout=60)
    assert plain.returncode == 0 and canary.exists()  # the payload is live: a plain unpickling runs it
