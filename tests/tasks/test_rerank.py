"""rerank end to end on tiny random-weight cross-encoders built from configs: detected by inspect, scored
as the model says (sigmoid of a one-label head; the last label's probability otherwise), concurrent
requests sharing one forward pass with the same scores as alone, and reached from the CLI and the
sidecar (the HTTP door: tests/server/test_rerank_http.py)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from tests.conftest import run_cli
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_models import build_bert_classifier, build_cross_encoder

from corral.models.inspect import inspect_path
from corral.runtime.dispatcher import CallInfo, Door
from corral.sidecar.client import SidecarClient, SidecarError
from corral.sidecar.protocol import INVALID_PARAMS
from corral.tasks import RerankRequest, RerankResult, Task

pytestmark = pytest.mark.timeout(300)
DOCS = ["the cat sat on the mat", "a dog ran in the park", "stocks fell sharply today", "the cat chased a mouse"]
QUERIES = ["where is the cat", "what did the dog do", "market news", "mouse", "park", "cats and dogs"]


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("cross-encoder")).path


@pytest.fixture(scope="module")
def three_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bert_classifier(tmp_path_factory.mktemp("three"), pipeline_tag="text-ranking").path


def model_scores(path: Path, query: str, documents: list[str]) -> list[float]:
    """The scores computed here with transformers directly, as the engine should."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    features = AutoTokenizer.from_pretrained(str(path))([query] * len(documents), documents, padding=True,
                                                        truncation=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**features).logits
    if logits.shape[-1] == 1:
        return [float(x) for x in torch.sigmoid(logits[:, 0])]
    return [float(x) for x in torch.softmax(logits, dim=-1)[:, -1]]


def test_inspect_finds_rerank_for_one_label_heads_and_the_ranking_tag(reranker: Path, three_labels: Path,
                                                                       tmp_path: Path) -> None:
    info = inspect_path(reranker)
    assert info.tasks[0] == "rerank" and info.engine == "transformers"
    assert inspect_path(three_labels).tasks[:2] == ["rerank", "classify_text"]  # pipeline_tag text-ranking
    plain = build_bert_classifier(tmp_path / "plain").path  # three labels, no tag: a classifier only
    assert "rerank" not in inspect_path(plain).tasks


def test_scores_match_the_model_and_concurrent_requests_share_a_forward_pass(reranker: Path) -> None:
    runtime = runtime_with({"tiny-rr": reranker})
    call = CallInfo(Door.CLI, "test")

    async def scenario() -> tuple[list[RerankResult], list[RerankResult]]:
        async with runtime:
            solo = [await runtime.call(Task.RERANK, "tiny-rr", RerankRequest.of(q, DOCS), call) for q in QUERIES]
            together = await asyncio.gather(*(runtime.call(Task.RERANK, "tiny-rr", RerankRequest.of(q, DOCS), call)
                                              for q in QUERIES))
            return solo, list(together)

    solo, together = asyncio.run(scenario())
    for query, alone, shared in zip(QUERIES, solo, together, strict=True):
        assert alone.scores == pytest.approx(model_scores(reranker, query, DOCS), abs=1e-5)
        assert shared.scores == pytest.approx(alone.scores, abs=1e-5)
        assert shared.usage == alone.usage and alone.usage.prompt_tokens == sum(alone.input_tokens) > 0
    rendered = runtime.metrics.render().decode()
    batches = re.search(r'corral_batch_inputs_count\{model="tiny-rr",task="rerank"\} (\S+)', rendered)
    assert batches is not None and float(batches.group(1)) < 2 * len(QUERIES)  # the concurrent six shared passes


def test_a_multi_label_head_scores_the_last_label(three_labels: Path) -> None:
    runtime = runtime_with({"three": three_labels})

    async def scenario() -> RerankResult:
        async with runtime:
            result: RerankResult = await runtime.call(Task.RERANK, "three", RerankRequest.of("cat", DOCS),
                                                      CallInfo(Door.CLI, "test"))
            return result

    assert asyncio.run(scenario()).scores == pytest.approx(model_scores(three_labels, "cat", DOCS), abs=1e-5)


def test_cli_run_ranks_documents_and_logs_the_call(reranker: Path) -> None:
    assert run_cli("pull", str(reranker), "--name", "tiny-rr").returncode == 0
    r = run_cli("run", "tiny-rr", "where is the cat", *[a for d in DOCS for a in ("--doc", d)], "--json",
                "--top-n", "3")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    expected = model_scores(reranker, "where is the cat", DOCS)
    best = sorted(range(len(DOCS)), key=lambda i: -expected[i])[:3]
    assert [x["index"] for x in out["results"]] == best
    assert [x["document"]["text"] for x in out["results"]] == [DOCS[i] for i in best]
    assert out["results"][0]["relevance_score"] == pytest.approx(expected[best[0]], abs=1e-5)
    table = run_cli("run", "tiny-rr", "where is the cat", input="\n".join(DOCS) + "\n")  # documents from stdin
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:4] == ["RANK", "SCORE", "INDEX", "DOCUMENT"]
    assert len(table.stdout.splitlines()) == 1 + len(DOCS)
    empty = run_cli("run", "tiny-rr", "where is the cat", input="")
    assert empty.returncode == 2 and "documents must hold at least one document" in empty.stderr
    rows = json.loads(run_cli("logs", "--json").stdout)
    assert [(r["door"], r["task"], r["status"]) for r in rows[:2]] == [("cli", "rerank", 200)] * 2


def test_sidecar_rerank(reranker: Path) -> None:
    assert run_cli("pull", str(reranker), "--name", "tiny-rr").returncode == 0
    with SidecarClient() as client:
        out = client.call("rerank", {"model": "tiny-rr", "query": "market news", "documents": DOCS,
                                     "return_documents": False, "top_n": 2})
        expected = model_scores(reranker, "market news", DOCS)
        assert [x["index"] for x in out["results"]] == sorted(range(4), key=lambda i: -expected[i])[:2]
        assert "document" not in out["results"][0] and out["usage"]["total_tokens"] > 0
        assert "rerank" in client.call("initialize")["capabilities"]["tasks"]
        with pytest.raises(SidecarError) as caught:
            client.call("rerank", {"model": "tiny-rr", "query": "x", "documents": []})
        assert caught.value.code == INVALID_PARAMS and "at least one document" in caught.value.message
