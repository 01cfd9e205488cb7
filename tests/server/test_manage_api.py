"""The admin API the web UI and scripts share, on a real `corral serve`: `GET /api/models` with each
model's state (load and unload change it), `POST /api/models/pull` streaming NDJSON progress from a
real hub-shaped server and the model appearing (paths and bare names refused), `GET
/api/models/{name}/inspect`, `DELETE /api/models/{name}`, the request log page with filters and
paging, and `POST /api/compare` streaming each panel's text and then the figures `corral compare`
prints, for a local and a remote (stand-in) model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.gateway.standin_openai import StandIn
from tests.hub_server import FakeHub
from tests.server.conftest import Server

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def hub(llama_hub: FakeHub) -> FakeHub:
    return llama_hub


@pytest.fixture(scope="module")
def up() -> Iterator[StandIn]:
    with StandIn("up", reply="remote words here") as standin:
        yield standin


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, hub: FakeHub, up: StandIn) -> Iterator[Server]:
    config = (f'[providers.up]\ntype = "openai"\nbase_url = "{up.url}"\nretries = {{ max = 0, backoff = 0 }}\n'
              '[aliases]\nfast = ["up/small", "smollm2"]\n')
    online = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    server = Server(tmp_path_factory.mktemp("manage"), "--models", "smollm2", "--threads", "2", config=config,
                    env=online)
    yield server
    server.stop()


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def by_name(c: httpx.Client) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in c.get("/api/models").json()["models"]}


def test_models_state_load_and_unload(srv: Server) -> None:
    with srv.client() as c:
        before = c.get("/api/models").json()
        rows = {row["name"]: row for row in before["models"]}
        smol = rows["smollm2"]
        assert smol["state"] == "loaded" and smol["loaded"]["memory"]["measured_bytes"] > 0  # preloaded
        assert smol["format"] == "gguf" and "chat" in smol["tasks"] and before["resident_bytes"] > 0
        assert rows["up/small"]["kind"] == "remote" and rows["fast"]["targets"] == ["up/small", "smollm2"]
        assert c.post("/api/models/smollm2/unload").json()["unloaded"] is True
        assert by_name(c)["smollm2"]["state"] == "not loaded" and by_name(c)["smollm2"]["loaded"] is None
        assert c.post("/api/models/smollm2/load").status_code == 200
        assert by_name(c)["smollm2"]["state"] == "loaded"


def test_pull_streams_progress_then_inspect_and_delete(srv: Server, hub: FakeHub) -> None:
    with srv.client() as c:
        got = lines(c.post("/api/models/pull", json={"model": "hf:org/tiny-llama"}))
        assert got[0] == {"status": "pulling", "reference": "hf:org/tiny-llama"}
        progress = [e for e in got if e["status"] == "downloading"]
        assert progress and progress[-1]["completed"] == progress[-1]["total"] > 0
        assert [e["completed"] for e in progress] == sorted(e["completed"] for e in progress)
        assert got[-1] == {"status": "success", "model": "org/tiny-llama"}
        assert "org/tiny-llama" in by_name(c)
        report = c.get("/api/models/org/tiny-llama/inspect").json()
        assert report["architecture"] == "LlamaForCausalLM" and report["parameters"] > 0
        assert report["routes"]["chat"] and report["format"] == "safetensors"
        removed = c.delete("/api/models/org/tiny-llama", params={"delete_files": "true"}).json()
        assert removed["name"] == "org/tiny-llama" and removed["deleted"]
        assert "org/tiny-llama" not in by_name(c) and not Path(removed["deleted"]).exists()
        assert c.delete("/api/models/org/tiny-llama").status_code == 404


@pytest.mark.parametrize("reference", ["/etc/passwd", "./models/x", "smollm2", "hf:../x", "pkg:not a module",
                                       "hf:org/name@../../x"])
def test_pull_refuses_paths_and_bare_names(srv: Server, reference: str) -> None:
    with srv.client() as c:
        r = c.post("/api/models/pull", json={"model": reference})
        assert r.status_code == 400 and r.json()["error"]["message"], r.text
        assert c.get("/api/models/..%2F..%2Fetc/inspect").status_code in (400, 404)


def test_missing_models_and_bad_names(srv: Server) -> None:
    with srv.client() as c:
        assert c.get("/api/models/nope/inspect").status_code == 404
        assert c.delete("/api/models/nope").status_code == 404
        assert c.delete("/api/models/a..b").status_code == 400
        assert c.post("/api/models/pull", json={"model": "hf:org/none", "extra": 1}).status_code in (400, 422)


def test_logs_filter_and_page(srv: Server, up: StandIn) -> None:
    with srv.client() as c:
        for i in range(3):
            body = {"model": "smollm2", "messages": [{"role": "user", "content": f"hi {i}"}], "max_tokens": 2}
            assert c.post("/v1/chat/completions", json=body).status_code == 200
        up.faults.append(("status", 500))
        failed = c.post("/v1/chat/completions",
                        json={"model": "up/small", "messages": [{"role": "user", "content": "x"}]})
        assert failed.status_code == 503
        first = c.get("/api/logs", params={"model": "smollm2", "status": "ok", "limit": 2}).json()
        assert len(first["rows"]) == 2 and first["next_before"] == first["rows"][-1]["id"]
        assert all(r["status"] < 400 and "smollm2" in (r["model"], r["target"]) for r in first["rows"])
        second = c.get("/api/logs", params={"model": "smollm2", "status": "ok", "limit": 2,
                                            "before": first["next_before"]}).json()
        assert second["rows"] and second["rows"][0]["id"] < first["rows"][-1]["id"]
        errors = c.get("/api/logs", params={"status": "error"}).json()["rows"]
        assert errors and all(r["status"] >= 400 for r in errors)
        assert c.get("/api/logs", params={"limit": 0}).status_code == 422
        assert c.get("/api/logs", params={"status": "bad"}).status_code == 422
        past_sqlite = c.get("/api/logs", params={"before": 2**63})  # found by schemathesis: was a 500
        assert past_sqlite.status_code == 422 and "before" in past_sqlite.json()["error"]["message"]
        assert c.get("/api/logs", params={"before": 2**63 - 1}).status_code == 200


def test_compare_streams_panels_then_figures(srv: Server) -> None:
    body = {"models": ["smollm2", "up/small"], "messages": [{"role": "user", "content": "Name a fruit."}],
            "temperature": 0, "max_tokens": 6}
    with srv.client() as c:
        got = lines(c.post("/api/compare", json=body))
        texts = {0: "", 1: ""}
        for event in got:
            if "text" in event:
                texts[event["panel"]] += event["text"]
        results = {e["panel"]: e["result"] for e in got if "result" in e}
        assert got[-1] == {"done": True} and sorted(results) == [0, 1]
        assert texts[1] == "remote words here" == results[1]["text"] and texts[0] == results[0]["text"] != ""
        for result in results.values():
            assert result["ttft_s"] is not None and result["tokens_out"] > 0 and result["cost_usd"] is not None
        assert results[0]["memory_bytes"] > 0 and results[1]["memory_bytes"] is None
        assert c.post("/api/compare", json={**body, "models": ["smollm2"]}).status_code == 422
        assert c.post("/api/compare", json={**body, "models": ["smollm2", "nope"]}).status_code == 404
        rows = c.get("/api/logs", params={"door": "admin"}).json()["rows"]
        assert {r["route"] for r in rows} == {"compare"} and len(rows) >= 2


def test_a_streamed_answer_ends_with_its_target_and_cost(srv: Server) -> None:
    from openai import OpenAI

    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    with srv.client() as c:
        events = [json.loads(line[5:]) for line in c.post("/v1/chat/completions", json=body).text.splitlines()
                  if line.startswith("data:") and "[DONE]" not in line]
    assert events[-1]["usage"]["completion_tokens"] == 3
    assert events[-1]["x_corral"] == {"target": "up/small", "cost_usd": 0.0, "price_source": "unknown"}
    client = OpenAI(base_url=f"{srv.url}/v1", api_key="none")  # the official client reads it unchanged
    stream = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}], stream=True,
                                            stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "remote words here"


def test_an_image_to_a_loaded_text_model_is_refused(srv: Server) -> None:
    """The request's checks apply to a model already loaded too (they once ran only before a load)."""
    image = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLv"
             "AAAAAElFTkSuQmCC")
    content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "what is this?"}]
    with srv.client() as c:
        assert by_name(c)["smollm2"]["state"] == "loaded"
        body = {"model": "smollm2", "messages": [{"role": "user", "content": content}]}
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 400 and "does not read images" in r.json()["error"]["message"]
