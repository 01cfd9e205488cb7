"""classify_text on tiny random-weight BERT classifiers built from configs: the model's own labels
(softmax; sigmoid for a multi-label head), zero-shot through an NLI head (the candidate labels'
entailment competing, or each label on its own with multi_label), computed as transformers computes
them; concurrent requests batched with the same answers as alone; the CLI and the sidecar."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import run_cli
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_models import build_bert_classifier, build_nli_classifier

from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.runtime import Runtime
from corral.sidecar.client import SidecarClient, SidecarError
from corral.sidecar.protocol import CORRAL_ERROR, INVALID_PARAMS
from corral.tasks import ClassifyTextRequest, ClassifyTextResult, Task

pytestmark = pytest.mark.timeout(300)
TEXTS = ["the cat sat on the mat", "stocks fell sharply today", "a dog ran in the park", "I like this a lot"]
LABELS = ("animals", "finance", "sports")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bert_classifier(tmp_path_factory.mktemp("cls")).path


@pytest.fixture(scope="module")
def nli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_nli_classifier(tmp_path_factory.mktemp("nli")).path


def logits(path: Path, first: list[str], second: list[str] | None = None) -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    features = AutoTokenizer.from_pretrained(str(path))(first, second, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**features).logits


def classify(runtime: Runtime, name: str, requests: list[ClassifyTextRequest]) -> tuple[list[Any], list[Any]]:
    """Each request alone, then all at once."""
    call = CallInfo(Door.CLI, "test")

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with runtime:
            alone = [await runtime.call(Task.CLASSIFY_TEXT, name, r, call) for r in requests]
            together = await asyncio.gather(*(runtime.call(Task.CLASSIFY_TEXT, name, r, call) for r in requests))
            return alone, list(together)

    return asyncio.run(scenario())


def same(a: ClassifyTextResult, b: ClassifyTextResult) -> None:
    assert [[x for x, _ in row] for row in a.labels] == [[x for x, _ in row] for row in b.labels]
    for row_a, row_b in zip(a.labels, b.labels, strict=True):
        assert [s for _, s in row_a] == pytest.approx([s for _, s in row_b], abs=1e-5)


def test_own_labels_softmax_and_batched_equal_alone(classifier: Path) -> None:
    import torch

    alone, together = classify(runtime_with({"cls": classifier}), "cls", [ClassifyTextRequest((t,)) for t in TEXTS])
    probs = torch.softmax(logits(classifier, TEXTS), dim=-1)
    names = ["negative", "neutral", "positive"]
    for i, (one, shared) in enumerate(zip(alone, together, strict=True)):
        expected = sorted(zip(names, probs[i].tolist(), strict=True), key=lambda x: -x[1])
        assert [x for x, _ in one.labels[0]] == [x for x, _ in expected]
        assert [s for _, s in one.labels[0]] == pytest.approx([s for _, s in expected], abs=1e-5)
        same(one, shared)
        assert one.usage.prompt_tokens > 0


def test_zero_shot_through_an_nli_head(nli: Path) -> None:
    import torch

    requests = [ClassifyTextRequest((t,), LABELS) for t in TEXTS] + \
               [ClassifyTextRequest((t,), LABELS, multi_label=True) for t in TEXTS]
    alone, together = classify(runtime_with({"nli": nli}), "nli", requests)
    for i, text in enumerate(TEXTS):
        raw = logits(nli, [text] * 3, [f"This example is {x}." for x in LABELS])  # contradiction, neutral, entailment
        single = dict(zip(LABELS, torch.softmax(raw[:, 2], dim=0).tolist(), strict=True))
        multi = dict(zip(LABELS, torch.softmax(raw[:, [0, 2]], dim=-1)[:, 1].tolist(), strict=True))
        assert dict(alone[i].labels[0]) == pytest.approx(single, abs=1e-5)
        assert dict(alone[len(TEXTS) + i].labels[0]) == pytest.approx(multi, abs=1e-5)
        assert sum(dict(alone[i].labels[0]).values()) == pytest.approx(1.0, abs=1e-5)
    for one, shared in zip(alone, together, strict=True):
        same(one, shared)


def test_cli_and_sidecar(classifier: Path, nli: Path) -> None:
    assert run_cli("pull", str(classifier), "--name", "cls").returncode == 0
    assert run_cli("pull", str(nli), "--name", "nli").returncode == 0
    r = run_cli("run", "cls", "the cat sat on the mat", "--json")
    assert r.returncode == 0, r.stderr
    own = json.loads(r.stdout)
    assert sorted(x["label"] for x in own) == ["negative", "neutral", "positive"]
    table = run_cli("run", "nli", "stocks fell", "--labels", ",".join(LABELS), "--top-k", "2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["LABEL", "SCORE"] and len(lines) == 3
    refused = run_cli("run", "cls", "x", "--labels", "a,b")
    assert refused.returncode != 0 and "entailment" in refused.stderr
    with SidecarClient() as client:
        got = client.call("classify_text", {"model": "cls", "inputs": "the cat sat on the mat"})
        assert [x["label"] for x in got[0]] == [x["label"] for x in own]
        assert [x["score"] for x in got[0]] == pytest.approx([x["score"] for x in own], abs=1e-6)
        zero = client.call("classify_text", {"model": "nli", "inputs": "stocks fell",
                                             "parameters": {"candidate_labels": list(LABELS)}})
        assert sorted(x["label"] for x in zero) == sorted(LABELS)
        with pytest.raises(SidecarError) as caught:
            client.call("classify_text", {"model": "cls", "inputs": []})
        assert caught.value.code == INVALID_PARAMS
        with pytest.raises(SidecarError) as caught:
            client.call("classify_text", {"model": "cls", "inputs": "x", "parameters": {"candidate_labels": ["a"]}})
        assert caught.value.code == INVALID_PARAMS and "entailment" in caught.value.message
        with pytest.raises(SidecarError) as caught:
            client.call("classify_text", {"model": "nope", "inputs": "x"})
        assert caught.value.code == CORRAL_ERROR and caught.value.data["status"] == 404
