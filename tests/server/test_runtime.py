"""The server's runtime on real processes: auth, binding, loading once, eviction, keep-alive,
queue limits, client disconnects, draining on SIGTERM, batching."""

from __future__ import annotations

import json
import re
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from tests.conftest import run_cli
from tests.server.conftest import Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
CHAT = "/v1/chat/completions"


def chat_body(content: str, max_tokens: int, stream: bool = False) -> dict[str, object]:
    return {"model": "smollm2", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "stream": stream}


def metric(server: Server, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name) and (not want or f"{{{want}}}" in line or want in line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def loaded(server: Server) -> list[str]:
    return [m["name"] for m in httpx.get(f"{server.url}/api/ps", timeout=30).json()["models"]]


def wait_for(predicate: object, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_api_keys(make_server: type[Server]) -> None:
    srv = make_server("--api-key", "k-one", "--api-key", "k-two", env={"CORRAL_API_KEYS": "k-env"})
    with pytest.raises(openai.AuthenticationError) as info:
        openai.OpenAI(base_url=f"{srv.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert info.value.status_code == 401 and "API key" in info.value.message
    r = httpx.get(f"{srv.url}/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    for key in ("k-one", "k-two"):
        assert openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key, max_retries=0).models.list().data
    # flags win over the environment: the variable's key is not also accepted
    assert httpx.get(f"{srv.url}/v1/models", headers={"Authorization": "Bearer k-env"}).status_code == 401
    assert httpx.get(f"{srv.url}/health").status_code == 200  # probes need no key
    assert httpx.get(f"{srv.url}/metrics").status_code == 401


def test_non_loopback_bind_needs_key_or_explicit_flag(make_server: type[Server]) -> None:
    r = run_cli("serve", "--host", "0.0.0.0", "--port", "1")
    assert r.returncode == 2 and "refusing to serve on 0.0.0.0 without an API key" in r.stderr
    srv = make_server("--host", "0.0.0.0", "--allow-insecure")
    assert httpx.get(f"{srv.url}/ready").status_code == 200


def test_concurrent_first_requests_load_once(make_server: type[Server]) -> None:
    srv = make_server()
    assert loaded(srv) == []
    def embed(i: int) -> list[float]:
        r = httpx.post(f"{srv.url}/v1/embeddings", json={"model": "minilm", "input": f"sentence {i}"}, timeout=120)
        r.raise_for_status()
        return list(r.json()["data"][0]["embedding"])
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(embed, range(8)))
    assert len(results) == 8 and all(len(v) == 384 for v in results)
    assert metric(srv, "corral_model_loads_total", model="minilm") == 1
    assert loaded(srv) == ["minilm"]


def test_eviction_is_least_recently_used(make_server: type[Server], smollm2_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(smollm2_path, copy)  # other files: another model (a symlink would be the same model)
    srv = make_server("--max-loaded", "2", "--keep-alive", "-1", register={"smol-b": copy})
    def use(model: str) -> None:
        if model == "minilm":
            httpx.post(f"{srv.url}/v1/embeddings", json={"model": model, "input": "x"}, timeout=120).raise_for_status()
        else:
            httpx.post(f"{srv.url}{CHAT}", json={**chat_body("x", 1), "model": model}, timeout=120).raise_for_status()
    use("smollm2")
    use("minilm")
    use("smollm2")  # minilm is now the least recently used
    use("smol-b")
    assert sorted(loaded(srv)) == ["smol-b", "smollm2"]
    use("minilm")  # evicts smollm2, used less recently than smol-b
    assert sorted(loaded(srv)) == ["minilm", "smol-b"]


def test_model_too_big_for_budget_is_507(make_server: type[Server]) -> None:
    srv = make_server("--memory-budget", "50MB")
    r = httpx.post(f"{srv.url}{CHAT}", json=chat_body("x", 1), timeout=60)
    assert r.status_code == 507
    assert re.search(r"needs about \d+ MB but the memory budget is 50 MB", r.json()["error"]["message"])


def test_keep_alive_unloads_idle_models(make_server: type[Server]) -> None:
    srv = make_server("--keep-alive", "1s")
    httpx.post(f"{srv.url}/v1/embeddings", json={"model": "minilm", "input": "x"}, timeout=120).raise_for_status()
    assert wait_for(lambda: loaded(srv) == [], timeout=30)


def test_queue_full_is_429_and_disconnect_frees_the_slot(make_server: type[Server]) -> None:
    srv = make_server("--max-queue", "0", "--parallel", "1", "--models", "smollm2")
    client = httpx.Client(base_url=srv.url, timeout=120)
    with client.stream("POST", CHAT, json=chat_body("Write a long story about a ship.", 2000, stream=True)) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line)
        assert first.startswith("data: ")
        busy = httpx.post(f"{srv.url}{CHAT}", json=chat_body("Hi", 2), timeout=60)
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["type"] == "rate_limit_error"
        # the client goes away mid-stream
    client.close()
    assert wait_for(lambda: httpx.post(f"{srv.url}{CHAT}", json=chat_body("Hi", 2), timeout=60).status_code == 200)
    rows = json.loads(run_cli("logs", "--json", env={"CORRAL_HOME": str(srv.home)}).stdout)
    gone = next(row for row in rows if row["status"] == 499)
    assert gone["error"] == "client closed the connection"
    assert gone["door"] == "openai" and gone["task"] == "chat"
    assert 0 < gone["completion_tokens"] < 2000  # generation stopped early, it did not run to the end


def test_sigterm_drains_then_exits_zero(make_server: type[Server]) -> None:
    srv = make_server("--models", "smollm2", "--grace", "60s")
    collected: list[str] = []

    def stream() -> None:
        with httpx.stream("POST", f"{srv.url}{CHAT}", json=chat_body("Tell me about rivers.", 120, stream=True),
                          timeout=120) as r:
            collected.extend(line for line in r.iter_lines() if line)

    worker = threading.Thread(target=stream)
    worker.start()
    assert wait_for(lambda: metric(srv, "corral_requests_running", model="smollm2") >= 1)
    srv.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: httpx.get(f"{srv.url}/ready").status_code == 503)
    refused = httpx.post(f"{srv.url}{CHAT}", json=chat_body("Hi", 2), timeout=30)
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
    worker.join(120)
    assert collected[-1] == "data: [DONE]"  # the in-flight request finished whole
    assert srv.proc.wait(60) == 0


def test_concurrent_embeddings_are_batched_and_equal_solo(make_server: type[Server]) -> None:
    srv = make_server("--models", "minilm")
    texts = [f"sentence number {i} about topic {i % 5}" for i in range(32)]
    solo = [httpx.post(f"{srv.url}/v1/embeddings", json={"model": "minilm", "input": t}, timeout=60)
            .json()["data"][0]["embedding"] for t in texts[:4]]
    with ThreadPoolExecutor(32) as pool:
        together = list(pool.map(lambda t: httpx.post(f"{srv.url}/v1/embeddings", timeout=120,
                                                      json={"model": "minilm", "input": t}).json(), texts))
    for a, b in zip(solo, together[:4], strict=True):
        assert max(abs(x - y) for x, y in zip(a, b["data"][0]["embedding"], strict=True)) < 1e-5
    assert all(r["usage"]["prompt_tokens"] > 0 for r in together)
    batches = metric(srv, "corral_embed_batch_inputs_count", model="minilm")
    assert 0 < batches < 4 + 32  # fewer forward passes than requests: they were batched


def test_sixteen_concurrent_streams_equal_solo(server: Server) -> None:
    prompts = [f"Say something about the number {i}." for i in range(16)]

    def run(prompt: str, stream: bool) -> str:
        body = chat_body(prompt, 24, stream=stream)
        if not stream:
            answer = httpx.post(f"{server.url}{CHAT}", json=body, timeout=240).json()
            return str(answer["choices"][0]["message"]["content"])
        parts = []
        with httpx.stream("POST", f"{server.url}{CHAT}", json=body, timeout=240) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    choice = json.loads(line[6:])["choices"]
                    if choice:
                        parts.append(choice[0]["delta"].get("content") or "")
        return "".join(parts)

    solo = [run(p, stream=False) for p in prompts]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda p: run(p, stream=True), prompts))
    assert all(together)
    assert together == solo


def test_transformers_model_batches_concurrent_chats(make_server: type[Server], tmp_path: Path) -> None:
    """A transformers causal LM under `serve` decodes concurrent requests together (continuous
    batching); each answer, greedy or seeded, equals the one it gets alone, logprobs included."""
    from tests.fixtures.tiny_models import build_causal_lm

    model = build_causal_lm("llama", tmp_path / "tiny-llama")
    srv = make_server("--models", "tiny", "--parallel", "4", register={"tiny": model.path})
    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0)

    def ask(i: int) -> tuple[str | None, int, list[float]]:
        sampled = i % 2 == 1
        answer = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"count to {i}"}], max_tokens=12,
            temperature=0.8 if sampled else 0, seed=i, logprobs=True, top_logprobs=2)
        choice = answer.choices[0]
        assert answer.usage is not None and choice.logprobs is not None and choice.logprobs.content is not None
        return (choice.message.content, answer.usage.completion_tokens,
                [round(t.logprob, 4) for t in choice.logprobs.content])

    alone = [ask(i) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, range(8)))
    assert together == alone
    assert all(n > 0 and len(lps) == n for _, n, lps in alone)
    ps = httpx.get(f"{srv.url}/api/ps", timeout=30).json()["models"]
    assert [(m["name"], m["parallel"]) for m in ps] == [("tiny", 4)]  # batching started: 4 sequences at once
    # JSON-constrained output on the transformers engine, through the OpenAI SDK
    schema = {"type": "object", "additionalProperties": False, "required": ["ok", "color"],
              "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green"]}}}
    answer = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "pick"}], max_tokens=40, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}})
    content = answer.choices[0].message.content
    assert content is not None and json.loads(content)["color"] in ("red", "green")
    jsonschema.validate(json.loads(content), schema)
