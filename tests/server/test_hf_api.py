"""The Hugging Face task API door on a real `corral serve`, driven by the real
``huggingface_hub.InferenceClient`` pointed at ``{base}/models/{name}`` (HF_HUB_OFFLINE is turned off
for the client only): text classification, zero-shot classification, feature extraction and sentence
similarity, the task chosen from the model and the payload, ``/pipeline/{task}`` to pick one, and
bad input answered with the right status while the server serves on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from tests.fixtures.tiny_models import (
    build_bert_classifier,
    build_nli_classifier,
    build_question_answering,
    build_token_classifier,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.server.conftest import Server

    root = tmp_path_factory.mktemp("hf-door")
    cls = build_bert_classifier(root / "cls").path
    nli = build_nli_classifier(root / "nli").path
    qa = build_question_answering(root / "qa").path
    ner = build_token_classifier(root / "ner").path
    srv = Server(root / "home", "--models", "minilm", register={"cls": cls, "nli": nli, "qa": qa, "ner": ner})
    yield srv
    srv.stop()


@pytest.fixture
def client(served: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # this client only: loopback

    def make(name: str) -> InferenceClient:
        return InferenceClient(model=f"{served.url}/models/{name}")
    return make


def test_text_and_zero_shot_classification(client: Any, served: Any) -> None:
    labels = client("cls").text_classification("the cat sat on the mat")
    assert sorted(x.label for x in labels) == ["negative", "neutral", "positive"]
    assert [x.score for x in labels] == sorted((x.score for x in labels), reverse=True)
    assert sum(x.score for x in labels) == pytest.approx(1.0, abs=1e-5)
    assert [x.label for x in client("cls").text_classification("the cat sat on the mat", top_k=1)] == [labels[0].label]
    zero = client("nli").zero_shot_classification("stocks fell", candidate_labels=["finance", "animals"])
    assert sorted(x.label for x in zero) == ["animals", "finance"] and sum(x.score for x in zero) == pytest.approx(1)
    multi = client("nli").zero_shot_classification("stocks fell", candidate_labels=["finance", "animals"],
                                                   multi_label=True, hypothesis_template="This is about {}.")
    assert all(0 < x.score < 1 for x in multi) and sum(x.score for x in multi) != pytest.approx(1.0, abs=1e-3)


def test_feature_extraction_and_similarity_equal_the_openai_route(client: Any, served: Any) -> None:
    vector = client("minilm").feature_extraction("hello")
    assert vector.shape == (384,)
    with served.client() as http:
        openai = http.post("/v1/embeddings", json={"model": "minilm", "input": "hello"}).json()["data"][0]["embedding"]
    assert np.allclose(vector, np.array(openai, dtype=np.float32), atol=1e-6)
    scores = client("minilm").sentence_similarity("hello", other_sentences=["hello", "stock market crash"])
    assert scores[0] == pytest.approx(1.0, abs=1e-4) and scores[1] < scores[0]


def test_question_answering(client: Any, served: Any) -> None:
    context = "the cat sat on the mat in the park"
    answer = client("qa").question_answering(question="where did the cat sit", context=context)
    assert context[answer.start:answer.end] == answer.answer and 0 < answer.score <= 1
    several = client("qa").question_answering(question="where did the cat sit", context=context, top_k=3)
    assert len(several) == 3 and several[0].answer == answer.answer
    assert [a.score for a in several] == sorted((a.score for a in several), reverse=True)
    with served.client() as http:
        bad = http.post("/models/qa", json={"inputs": {"question": "where"}})
        assert bad.status_code == 422 and "context" in bad.json()["error"]["message"]


def test_token_classification(client: Any) -> None:
    text = "Tim Cook met the board of Apple in London"
    entities = client("ner").token_classification(text)
    assert entities and all(text[e.start:e.end] == e.word for e in entities)
    assert {e.entity_group for e in entities} <= {"PER", "ORG"}
    tokens = client("ner").token_classification(text, aggregation_strategy="none")
    assert all(e.entity in ("B-PER", "I-PER", "B-ORG", "I-ORG") for e in tokens)


def test_pipeline_route_and_bad_input(served: Any) -> None:
    with served.client() as http:
        picked = http.post("/models/minilm/pipeline/sentence-similarity",
                           json={"inputs": {"source_sentence": "a", "sentences": ["a", "b"]}})
        assert picked.status_code == 200 and len(picked.json()) == 2
        as_list = http.post("/models/cls", json={"inputs": ["a cat", "a dog"], "parameters": {"top_k": 2}})
        assert as_list.status_code == 200 and [len(x) for x in as_list.json()] == [2, 2]
        cases = [
            (http.post("/models/cls/pipeline/object-detection", json={"inputs": "x"}), 400, "does not serve"),
            (http.post("/models/cls", content=b"{not json"), 422, "not valid JSON"),
            (http.post("/models/cls", json={"parameters": {}}), 422, '"inputs"'),
            (http.post("/models/cls", json={"inputs": []}), 422, "non-empty"),
            (http.post("/models/cls", json={"inputs": "x", "parameters": {"top_k": 0}}), 422, "top_k"),
            (http.post("/models/cls", json={"inputs": "x", "parameters": {"candidate_labels": ["a"]}}), 422,
             "entailment"),
            (http.post("/models/nli", json={"inputs": "x", "parameters": {"candidate_labels": []}}), 422,
             "candidate_labels"),
            (http.post("/models/nope", json={"inputs": "x"}), 404, "nope"),
            (http.post("/models/..%2Fetc", json={"inputs": "x"}), 400, ""),
        ]
        for response, status, words in cases:
            assert response.status_code == status, response.text
            assert words in response.json()["error"]["message"]
        assert http.post("/models/cls", json={"inputs": "fine"}).status_code == 200  # still serving
