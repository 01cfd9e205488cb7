"""A sentence-transformers CrossEncoder exported: check_files, --selftest, and POST /v1/rerank (and
/rerank) answering with corral's ranking and scores for the same query and documents."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.export.helpers import Exported, check_files, export, selftest
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_rerankers import TANH, build_crossencoder

from corral.protocols.rerank import RerankBody, create_rerank
from corral.runtime.dispatcher import CallInfo, Door

QUERY = "which animal barks"
DOCS = ["the cat sleeps", "a dog barks at night", "stocks fell today", "puppies bark too"]


def corral_rerank(folder: Path, body: dict[str, Any]) -> dict[str, Any]:
    runtime = runtime_with({folder.name: folder})

    async def run() -> dict[str, Any]:
        async with runtime:
            return await create_rerank(runtime, RerankBody(model=folder.name, **body), CallInfo(Door.CLI, "test"))

    return asyncio.run(run())


def test_a_cross_encoder_reranks_as_corral_does(tmp_path: Path) -> None:
    folder = build_crossencoder(tmp_path / "tiny-ce", activation=TANH).path
    out = tmp_path / "export"
    result = export(str(folder), out)
    assert result["tasks"] == ["rerank"] and result["source"] == "copy"
    check_files(out)
    checked = selftest(out)
    assert checked.returncode == 0, checked.stderr
    body = {"query": QUERY, "documents": DOCS, "top_n": 3}
    theirs = corral_rerank(folder, body)
    with Exported(out) as server, server.client() as http:
        for route in ("/v1/rerank", "/rerank"):
            ours = http.post(route, json={**body, "model": "tiny-ce"}).json()
            assert [r["index"] for r in ours["results"]] == [r["index"] for r in theirs["results"]]
            for mine, other in zip(ours["results"], theirs["results"], strict=True):
                assert mine["relevance_score"] == pytest.approx(other["relevance_score"], abs=1e-5)
                assert mine["document"] == other["document"]
            assert ours["usage"] == theirs["usage"]
        bare = http.post("/v1/rerank", json={**body, "return_documents": False}).json()
        assert all("document" not in r for r in bare["results"])
        empty = http.post("/v1/rerank", json={"query": QUERY, "documents": []})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "documents"
        assert http.post("/v1/embeddings", json={"input": "x"}).status_code == 404
