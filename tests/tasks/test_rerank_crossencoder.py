"""rerank on the sentence-transformers engine: tiny random-weight CrossEncoders saved by
sentence-transformers (its v6 modular layout and the v4/v5 config.json marker) are inspected as
sentence_transformers rerankers, score exactly as ``CrossEncoder.predict`` with the model's declared
activation (tanh, identity: not the sigmoid the transformers classifier takes), concurrent requests
share one call with the scores they get alone, an activation outside torch runs only with
--trust-remote-code, and the HTTP /v1/rerank route and the sidecar's rerank method reach them."""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import run_cli
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_media import build_sentence_transformer
from tests.fixtures.tiny_models import build_cross_encoder
from tests.fixtures.tiny_rerankers import DOUBLED, IDENTITY, TANH, build_crossencoder
from tests.tasks.test_rerank import DOCS, QUERIES, model_scores

from corral.engines.base import LoadOptions
from corral.models.inspect import inspect_path
from corral.models.safety import Trust
from corral.runtime.dispatcher import CallInfo, Door
from corral.sidecar.client import SidecarClient
from corral.tasks import RerankRequest, RerankResult, Task

pytestmark = pytest.mark.timeout(300)
CALL = CallInfo(Door.CLI, "test")


@pytest.fixture(scope="module")
def modular(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Saved by sentence-transformers 6 (modules.json), declaring tanh."""
    return build_crossencoder(tmp_path_factory.mktemp("ce-modular"), activation=TANH).path


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Saved the v4/v5 way (a sentence_transformers key in config.json), declaring identity (raw logits)."""
    return build_crossencoder(tmp_path_factory.mktemp("ce-config"), activation=IDENTITY, layout="config").path


def predict(path: Path, pairs: list[tuple[str, str]], *, trust: bool = False) -> list[float]:
    """sentence-transformers' own scores for ``pairs``."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(path), device="cpu", local_files_only=True, trust_remote_code=trust)
    return [float(s) for s in model.predict([list(p) for p in pairs], show_progress_bar=False)]


def ranking(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def _runtime(models: dict[str, Path], trust: Trust | None = None) -> Any:
    return runtime_with(models, load=LoadOptions(device="cpu", trust=trust or Trust()))


def test_inspect_puts_crossencoders_on_sentence_transformers(modular: Path, marked: Path, tmp_path: Path) -> None:
    for path in (modular, marked):
        info = inspect_path(path)
        assert (info.engine, info.tasks) == ("sentence_transformers", ["rerank"]), path
    assert "config_sentence_transformers.json" in inspect_path(modular).sources
    plain = inspect_path(build_cross_encoder(tmp_path / "plain").path)  # no marker: the transformers classifier
    assert (plain.engine, plain.tasks[0]) == ("transformers", "rerank")
    nli = inspect_path(build_crossencoder(tmp_path / "nli", activation=IDENTITY, labels=3).path)
    assert nli.engine == "transformers" and nli.tasks == ["classify_text"]  # three scores per pair: a classifier
    embedder = inspect_path(build_sentence_transformer(tmp_path / "st").path)
    assert (embedder.engine, embedder.tasks) == ("sentence_transformers", ["embed"])


@pytest.mark.parametrize("layout", ["modular", "marked"])
def test_scores_are_the_crossencoders_and_concurrent_requests_equal_solo(layout: str, modular: Path,
                                                                         marked: Path) -> None:
    path = modular if layout == "modular" else marked
    runtime = _runtime({"ce": path})

    async def scenario() -> tuple[list[RerankResult], list[RerankResult]]:
        async with runtime:
            solo = [await runtime.call(Task.RERANK, "ce", RerankRequest.of(q, DOCS), CALL) for q in QUERIES]
            together = await asyncio.gather(*(runtime.call(Task.RERANK, "ce", RerankRequest.of(q, DOCS), CALL)
                                              for q in QUERIES))
            assert [m.engine for m in runtime.status().models] == ["sentence_transformers"]
            return solo, list(together)

    solo, together = asyncio.run(scenario())
    for query, alone, shared in zip(QUERIES, solo, together, strict=True):
        expected = predict(path, [(query, d) for d in DOCS])
        assert list(alone.scores) == pytest.approx(expected, abs=1e-5)
        assert ranking(list(alone.scores)) == ranking(expected)
        assert list(shared.scores) == pytest.approx(list(alone.scores), abs=1e-5)
        assert shared.usage == alone.usage and alone.usage.prompt_tokens == sum(alone.input_tokens) > 0
        raw = [math.log(p / (1 - p)) for p in model_scores(path, query, DOCS)]  # the head's logits
        declared = [math.tanh(x) for x in raw] if layout == "modular" else raw  # tanh / identity, not the sigmoid
        assert list(alone.scores) == pytest.approx(declared, abs=1e-4)
    rendered = runtime.metrics.render().decode()
    batches = re.search(r'corral_batch_inputs_count\{model="ce",task="rerank"\} (\S+)', rendered)
    assert batches is not None and float(batches.group(1)) < 2 * len(QUERIES)  # the concurrent six shared calls


def test_an_activation_outside_torch_needs_trust_remote_code(tmp_path: Path) -> None:
    path = build_crossencoder(tmp_path / "doubled", activation=DOUBLED).path
    pairs = [("where is the cat", d) for d in DOCS]

    def scores(trust: Trust) -> list[float]:
        runtime = _runtime({"ce": path}, trust)

        async def scenario() -> list[float]:
            async with runtime:
                result: RerankResult = await runtime.call(Task.RERANK, "ce", RerankRequest(tuple(pairs)), CALL)
                return list(result.scores)

        return asyncio.run(scenario())

    refused = scores(Trust())
    assert refused == pytest.approx(predict(path, pairs), abs=1e-5)  # the default for one label: sigmoid
    assert refused == pytest.approx(model_scores(path, pairs[0][0], DOCS), abs=1e-5)
    trusted = scores(Trust(trust_remote_code=True))
    assert trusted == pytest.approx(predict(path, pairs, trust=True), abs=1e-5)
    logits = [math.log(p / (1 - p)) for p in refused]
    assert trusted == pytest.approx([2 * x for x in logits], abs=1e-4)  # twice the logit: the model's own activation


@pytest.mark.slow
def test_http_rerank_and_sidecar(modular: Path, tmp_path: Path) -> None:
    from tests.server.conftest import Server

    expected = predict(modular, [("where is the cat", d) for d in DOCS])
    srv = Server(tmp_path / "served", register={"ce": modular})
    try:
        with srv.client() as http:
            r = http.post("/v1/rerank", json={"model": "ce", "query": "where is the cat", "documents": DOCS})
            assert r.status_code == 200, r.text
            results = r.json()["results"]
        assert [x["index"] for x in results] == ranking(expected)
        assert [x["relevance_score"] for x in results] == pytest.approx(sorted(expected, reverse=True), abs=1e-5)
        assert all(x["document"]["text"] == DOCS[x["index"]] for x in results)
        ps = httpx.get(f"{srv.url}/api/ps").json()["models"]
        assert [(m["name"], m["engine"]) for m in ps] == [("ce", "sentence_transformers")]
        assert ps[0]["memory"]["measured_bytes"] > 0 and ps[0]["memory"]["estimate_bytes"] > 0
    finally:
        srv.stop()
    assert run_cli("pull", str(modular), "--name", "ce").returncode == 0
    with SidecarClient() as client:
        out = client.call("rerank", {"model": "ce", "query": "market news", "documents": DOCS, "top_n": 2,
                                     "return_documents": False})
    scores = predict(modular, [("market news", d) for d in DOCS])
    assert [x["index"] for x in out["results"]] == ranking(scores)[:2]
    assert [x["relevance_score"] for x in out["results"]] == pytest.approx(sorted(scores, reverse=True)[:2],
                                                                          abs=1e-5)
