"""POST /v1/rerank (and /rerank, /v2/rerank) on a real `corral serve` with a tiny random cross-encoder:
the Cohere / Jina / vLLM shape (results by relevance with index, relevance_score, document; top_n;
return_documents; documents as strings or {text}), logged with door rerank, and bad input answered
in the error shape with the server serving on."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from tests.conftest import run_cli
from tests.fixtures.tiny_models import build_cross_encoder

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
DOCS = ["the cat sat on the mat", "a dog ran in the park", "stocks fell sharply today"]


def test_rerank_routes(make_server: type, tmp_path: Path) -> None:
    model = build_cross_encoder(tmp_path / "ce").path
    srv = make_server(register={"tiny-rr": model})
    with srv.client() as http:
        full = http.post("/v1/rerank", json={"model": "tiny-rr", "query": "where is the cat", "documents": DOCS})
        assert full.status_code == 200, full.text
        body = full.json()
        scores = [r["relevance_score"] for r in body["results"]]
        assert scores == sorted(scores, reverse=True) and sorted(r["index"] for r in body["results"]) == [0, 1, 2]
        assert all(r["document"]["text"] == DOCS[r["index"]] for r in body["results"])
        assert body["model"] == "tiny-rr" and body["usage"]["total_tokens"] > 0 and body["id"].startswith("rerank-")
        for route in ("/rerank", "/v2/rerank"):
            short = http.post(route, json={"model": "tiny-rr", "query": "where is the cat", "top_n": 1,
                                           "return_documents": False, "documents": [{"text": d} for d in DOCS]})
            assert short.status_code == 200, short.text
            assert short.json()["results"] == [{"index": body["results"][0]["index"],
                                                "relevance_score": pytest.approx(scores[0], abs=1e-6)}]
        bad = [({"model": "tiny-rr", "query": "q", "documents": []}, 422, "at least one document"),
               ({"model": "tiny-rr", "query": " ", "documents": DOCS}, 422, "query"),
               ({"model": "tiny-rr", "query": "q", "documents": ["a", ""]}, 422, "documents[1] is empty"),
               ({"model": "tiny-rr", "query": "q", "documents": DOCS, "top_n": 0}, 400, "top_n"),
               ({"model": "tiny-rr", "documents": DOCS}, 400, "query"),
               ({"model": "nope", "query": "q", "documents": DOCS}, 404, "nope")]
        for payload, status, words in bad:
            r = http.post("/v1/rerank", json=payload)
            assert r.status_code == status, (payload, r.text)
            assert words in r.json()["error"]["message"]
        chat = http.post("/v1/chat/completions", json={"model": "tiny-rr", "messages": [{"role": "user",
                                                                                           "content": "hi"}]})
        assert chat.status_code == 400 and "rerank" in chat.json()["error"]["message"]
        assert http.post("/v1/rerank", json={"model": "tiny-rr", "query": "q", "documents": DOCS}).status_code == 200
    rows = httpx.get(f"{srv.url}/api/ps").json()  # still serving
    assert [m["name"] for m in rows["models"]] == ["tiny-rr"]
    srv.stop()
    logs = run_cli("logs", "--json", "-n", "50", env={"CORRAL_HOME": str(srv.home)})
    rows_logged = json.loads(logs.stdout)
    assert {(r["door"], r["task"]) for r in rows_logged if r["status"] == 200} == {("rerank", "rerank")}
