"""`corral sidecar` as a real subprocess with the real packaged models (SmolLM2 GGUF, MiniLM), driven
by corral's own client: handshake, listing, chat and completion streamed and not (the same text
either way), 8 concurrent chats equal to their solo greedy outputs, cancelling a real generation
mid-stream, embeddings equal to sentence-transformers in-process, load / unload / status, and a
pull from the local stand-in hub with monotonically increasing progress."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.fixtures.tiny_models import build_causal_lm
from tests.hub_server import FakeHub

import corral
from corral.sidecar.client import SidecarClient, SidecarError
from corral.sidecar.protocol import REQUEST_CANCELLED

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
QUESTIONS = ("List three colours.", "What is the capital of France?", "Name four planets.",
             "What is 12 times 7?", "Why is the sky blue?", "What does a bee make?",
             "What is the opposite of cold?", "Give me a synonym for happy.")


def home_env(home: Path, **extra: str) -> dict[str, str]:
    return {"CORRAL_HOME": str(home), "CORRAL_CONFIG": str(home / "config.toml"), "HF_HOME": str(home / "hf"),
            **extra}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarClient]:
    home = tmp_path_factory.mktemp("sidecar-home")
    with (home / "stderr.txt").open("w") as err, SidecarClient(["--threads", "2"], env=home_env(home),
                                                               stderr=err) as client:
        yield client
    assert client.proc.returncode == 0
    assert client.bad_lines == []


def chat_params(question: str, max_tokens: int = 24) -> dict[str, Any]:
    return {"model": "smollm2", "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0}


def test_handshake_and_listing(sidecar: SidecarClient) -> None:
    info = sidecar.call("initialize", {"clientInfo": {"name": "pytest"}})
    assert info["serverInfo"] == {"name": "corral", "version": corral.__version__}
    assert info["protocolVersion"]
    caps = info["capabilities"]
    assert {"chat", "complete", "embed"} <= set(caps["tasks"]) and "cpu" in caps["devices"]
    assert {"models/list", "models/pull", "chat", "embed", "usage", "logs"} <= set(caps["methods"])
    assert sidecar.call("initialize") == info  # all params optional, and asking again is harmless
    listed = {m["name"]: m for m in sidecar.call("models/list")["models"]}
    assert listed["smollm2"]["kind"] in ("alias", "model") and listed["minilm"]["kind"] in ("alias", "model")


def test_chat_streamed_and_not_give_the_same_answer(sidecar: SidecarClient) -> None:
    whole = sidecar.call("chat", chat_params("Write a haiku about the sea."))
    call = sidecar.stream("chat", chat_params("Write a haiku about the sea."))
    deltas = list(call.deltas(timeout=300))
    streamed = "".join(c["delta"].get("content") or "" for d in deltas for c in d["choices"])
    final = call.final
    assert whole["object"] == final["object"] == "chat.completion"
    text = whole["choices"][0]["message"]["content"]
    assert text and streamed == text == final["choices"][0]["message"]["content"]
    assert final["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert final["usage"] == whole["usage"] and final["usage"]["completion_tokens"] <= 24
    assert all(d["object"] == "chat.completion.chunk" and d["id"] == final["id"] for d in deltas)
    assert 0 < final["timings"]["ttft_ms"] <= final["timings"]["total_ms"]
    answers = [m for m in sidecar.messages if "method" not in m and m.get("id") == call.id]
    assert len(answers) == 1  # exactly one final response
    tagged = [m["params"]["requestId"] for m in sidecar.messages if m.get("method") == "stream/delta"]
    assert tagged.count(call.id) == len(deltas)


def test_completion_streamed_and_not(sidecar: SidecarClient) -> None:
    params = {"model": "smollm2", "prompt": "The three primary colours are", "max_tokens": 12, "temperature": 0}
    whole = sidecar.call("complete", params)
    call = sidecar.stream("complete", params)
    streamed = "".join(c["text"] for d in call.deltas(timeout=300) for c in d["choices"])
    assert streamed == whole["choices"][0]["text"] == call.final["choices"][0]["text"]
    assert call.final["usage"] == whole["usage"]


def test_eight_concurrent_chats_equal_their_solo_answers(sidecar: SidecarClient) -> None:
    solo = [sidecar.call("chat", chat_params(q))["choices"][0]["message"]["content"] for q in QUESTIONS]
    calls = [sidecar.start("chat", chat_params(q)) for q in QUESTIONS]  # all in flight at once
    together = [c.result(timeout=300)["choices"][0]["message"]["content"] for c in calls]
    assert together == solo
    status = {m["name"]: m for m in sidecar.call("models/status")["models"]}
    assert status["smollm2"]["parallel"] == 8 and status["smollm2"]["in_flight"] == 0


def test_cancel_mid_stream_stops_a_real_generation(sidecar: SidecarClient) -> None:
    call = sidecar.stream("chat", {**chat_params("Tell me a very long story about a dragon.", 400), "temperature": 0.8,
                                   "seed": 3})
    deltas = call.deltas(timeout=300)
    pieces = 0
    for d in deltas:
        pieces += any(c["delta"].get("content") for c in d["choices"])
        if pieces == 3:
            break
    call.cancel()
    with pytest.raises(SidecarError) as caught:
        list(deltas)
    assert caught.value.code == REQUEST_CANCELLED
    row = next(r for r in sidecar.call("logs", {"limit": 5})["requests"] if r["status"] == 499)
    assert row["door"] == "sidecar" and row["model"] == "smollm2" and 3 <= row["completion_tokens"] < 400
    assert sidecar.call("chat", chat_params("Name four planets.", 8))["usage"]["completion_tokens"] <= 8


def test_embeddings_equal_sentence_transformers(sidecar: SidecarClient, minilm_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["hello", "the sidecar speaks JSON-RPC"]
    got = sidecar.call("embed", {"model": "minilm", "input": texts})
    assert got["object"] == "list" and [d["index"] for d in got["data"]] == [0, 1]
    vectors = np.array([d["embedding"] for d in got["data"]], dtype=np.float32)
    expected = SentenceTransformer(str(minilm_path), device="cpu").encode(texts, normalize_embeddings=True)
    assert vectors.shape == (2, 384)
    assert float(np.min(np.sum(vectors * expected, axis=1))) > 0.9999
    packed = sidecar.call("embed", {"model": "minilm", "input": "hello", "encoding_format": "base64"})
    row = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(row, vectors[0], atol=1e-6)
    assert got["usage"]["prompt_tokens"] > packed["usage"]["prompt_tokens"]


def test_load_unload_status(sidecar: SidecarClient) -> None:
    loaded = sidecar.call("models/load", {"model": "minilm"})
    assert loaded["name"] == "minilm" and loaded["memory"]["measured_bytes"] > 0
    assert sidecar.call("models/unload", {"model": "minilm"}) == {"name": "minilm", "unloaded": True}
    assert "minilm" not in {m["name"] for m in sidecar.call("models/status")["models"]}
    assert sidecar.call("models/unload", {"model": "minilm"})["unloaded"] is False


def test_pull_reports_increasing_progress_then_inspect_and_chat(tmp_path: Path) -> None:
    model = build_causal_lm("llama", tmp_path / "tiny").path
    with FakeHub(model, repo_id="org/tiny-llama") as hub:
        env = home_env(tmp_path / "home", HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0")
        with SidecarClient(env=env) as client:
            events: list[dict[str, Any]] = []
            pulled = client.call("models/pull", {"model": "org/tiny-llama"}, progress=events.append)
            assert pulled["name"] == "org/tiny-llama" and pulled["source"] == "hf:org/tiny-llama"
            done = [e["progress"] for e in events]
            assert len(done) >= 2 and done == sorted(set(done))  # strictly increasing
            assert done[-1] == events[-1]["total"] > 0 and {e["progressToken"] for e in events} == {1}
            fetched = len(hub.file_gets())
            again = client.call("models/pull", {"model": "hf:org/tiny-llama"}, progress=events.append)
            assert again["name"] == pulled["name"] and len(hub.file_gets()) == fetched  # nothing fetched again
            report = client.call("models/inspect", {"model": "org/tiny-llama"})
            assert report["name"] == "org/tiny-llama" and "chat" in report["tasks"]
            answer = client.call("chat", {"model": "org/tiny-llama", "messages": [{"role": "user", "content": "hi"}],
                                          "max_tokens": 3, "temperature": 0})
            assert answer["usage"]["completion_tokens"] <= 3
            with pytest.raises(SidecarError) as caught:
                client.call("models/inspect", {"model": "org/never-pulled"})
            assert caught.value.data["type"] == "ModelNotFoundError"
