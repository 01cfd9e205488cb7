"""transformers text models exported and answering as corral does: a causal LM (OpenAI chat and
completions, greedy, seeded sampling, stop strings, SSE), sequence classifiers (rerank, text and
zero-shot classification), extractive QA, token classification and encoder-decoder models
(translation with T5 prefixes and NLLB language codes, summarisation). Each tiny model is exported,
its files checked, then served with ``--warmup`` (the selftest's input first); every route the README
lists gets a valid request whose answer must equal corral's own (in-process, through the same
protocol functions corral's HTTP doors call), and one bad request a 400 error object."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.export.helpers import Exported, check_files, export, selftest
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_models import (
    build_bart,
    build_causal_lm,
    build_cross_encoder,
    build_nli_classifier,
    build_question_answering,
    build_t5,
    build_token_classifier,
)
from tests.fixtures.tiny_translators import build_marian, build_mbart50, build_nllb

from corral.protocols.hf.tasks import HF_TASKS
from corral.protocols.openai.chat import start_chat
from corral.protocols.openai.completions import start_completion
from corral.protocols.openai.schemas import ChatCompletionBody, CompletionBody
from corral.protocols.rerank import RerankBody, create_rerank
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.runtime import Runtime

BUILDERS: dict[str, Callable[[Path], Any]] = {
    "tiny-lm": lambda dest: build_causal_lm("llama", dest), "tiny-cross": build_cross_encoder,
    "tiny-nli": build_nli_classifier, "tiny-qa": build_question_answering, "tiny-ner": build_token_classifier,
    "tiny-t5": build_t5, "tiny-bart": build_bart, "tiny-nllb": build_nllb, "tiny-mbart": build_mbart50,
    "tiny-marian": build_marian,
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text-models")
    for name, build in BUILDERS.items():
        build(root / name)
    return {name: root / name for name in BUILDERS}


class Server:
    """The exported server's client, recording the routes posted to."""

    def __init__(self, http: httpx.Client, name: str) -> None:
        self.http, self.name, self.posted = http, name, set[str]()

    def post(self, path: str, body: Any, status: int = 200) -> Any:
        response = self.http.post(path, json=body)
        assert response.status_code == status, response.text
        self.posted.add(path)
        if status != 200:
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"], error
            return error
        return response.json()

    def hf(self, inputs: Any, parameters: dict[str, Any] | None = None, status: int = 200) -> Any:
        return self.post(f"/models/{self.name}", {"inputs": inputs, "parameters": parameters or {}}, status)


@contextmanager
def exported(folder: Path, tmp_path: Path, tasks: list[str]) -> Iterator[Server]:
    """``folder`` exported, checked, and served after its selftest's input ran (--warmup); on leaving,
    every route of its README must have been posted to."""
    out = tmp_path / "export"
    result = export(str(folder), out)
    assert result["tasks"] == tasks and result["source"] == "copy"
    check_files(out)
    routes = set(re.findall(r"^- `POST (\S+)`", (out / "README.md").read_text(), re.MULTILINE))
    # --warmup runs the selftest's input before serving (the code --selftest runs, one process instead of two)
    with Exported(out, sys.executable, "--warmup") as running, running.client() as http:
        assert re.search(r"^selftest ok", running.log.read_text(), re.MULTILINE), running.log.read_text()
        server = Server(http, result["model"])
        yield server
    assert server.posted == routes


def corral(folder: Path, name: str, work: Callable[[Runtime, CallInfo], Awaitable[Any]]) -> Any:
    """``work`` run on corral's own runtime serving ``folder`` as ``name``."""
    runtime = runtime_with({name: folder})

    async def scenario() -> Any:
        async with runtime:
            return await work(runtime, CallInfo(Door.CLI, "test"))

    return asyncio.run(scenario())


def hf_calls(task: str, name: str, calls: list[tuple[Any, dict[str, Any]]]
             ) -> Callable[[Runtime, CallInfo], Awaitable[list[Any]]]:
    """Corral's answers to HF ``task`` requests ((inputs, parameters) each)."""
    async def work(runtime: Runtime, call: CallInfo) -> list[Any]:
        return [await HF_TASKS[task].run(runtime, name, inputs, parameters, call) for inputs, parameters in calls]

    return work


def same(ours: Any, theirs: Any) -> bool:
    """Equal JSON values, floats within 1e-5 (relative) of each other."""
    if isinstance(ours, float) or isinstance(theirs, float):
        numbers = isinstance(ours, int | float) and isinstance(theirs, int | float)
        return numbers and ours == pytest.approx(theirs, rel=1e-5)
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(same(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(same(a, b) for a, b in zip(ours, theirs, strict=True))
    return bool(ours == theirs)


def sse_events(http: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with http.stream("POST", path, json=body) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_a_causal_lm_chats_and_completes_as_corral_does(models: dict[str, Path], tmp_path: Path) -> None:
    folder = models["tiny-lm"]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]
    greedy = {"messages": messages, "temperature": 0, "max_tokens": 12}
    sampled = {"messages": messages, "temperature": 0.9, "top_p": 0.9, "seed": 7, "max_tokens": 12}
    prompt = {"prompt": "the quick brown", "temperature": 0, "max_tokens": 10}
    default = {"prompt": "hello", "temperature": 0}  # max_tokens: OpenAI's 16
    with exported(folder, tmp_path, ["chat", "complete"]) as server:
        name = server.name
        ours = [server.post("/v1/chat/completions", body) for body in (greedy, sampled)]
        text = ours[0]["choices"][0]["message"]["content"]
        assert ours[0]["object"] == "chat.completion" and ours[0]["model"] == name and len(text) > 6
        stopped = {**greedy, "stop": [text[4:6]]}
        ours.append(server.post("/v1/chat/completions", stopped))
        assert ours[2]["choices"][0]["finish_reason"] == "stop" and text.startswith(
            ours[2]["choices"][0]["message"]["content"])
        completions = [server.post("/v1/completions", body) for body in (prompt, default)]
        assert completions[0]["object"] == "text_completion"

        events = sse_events(server.http, "/v1/chat/completions",
                            {**greedy, "stream": True, "stream_options": {"include_usage": True}})
        assert events[0]["choices"][0]["delta"]["role"] == "assistant"
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == text
        assert events[-1]["usage"] == ours[0]["usage"]
        events = sse_events(server.http, "/v1/completions", {**prompt, "stream": True})
        assert "".join(e["choices"][0]["text"] for e in events) == completions[0]["choices"][0]["text"]

        assert server.post("/v1/chat/completions", {**greedy, "temperature": 7}, 400)["param"] == "temperature"
        assert server.post("/v1/chat/completions", {"messages": "hi"}, 400)["param"] == "messages"
        assert server.post("/v1/completions", {"prompt": ""}, 400)["param"] == "prompt"

    async def work(runtime: Runtime, call: CallInfo) -> tuple[list[Any], list[Any]]:
        chats = [await (await start_chat(runtime, ChatCompletionBody.model_validate({**body, "model": name}),
                                         call)).response() for body in (greedy, sampled, stopped)]
        texts = [await (await start_completion(runtime, CompletionBody.model_validate({**body, "model": name}),
                                               call)).response() for body in (prompt, default)]
        return chats, texts

    theirs, their_texts = corral(folder, name, work)
    for mine, other in zip(ours, theirs, strict=True):
        assert mine["choices"][0]["message"] == other["choices"][0]["message"]
        assert mine["choices"][0]["finish_reason"] == other["choices"][0]["finish_reason"]
        assert mine["usage"] == other["usage"]
    for mine, other in zip(completions, their_texts, strict=True):
        assert mine["choices"] == other["choices"] and mine["usage"] == other["usage"]
    assert completions[1]["usage"]["completion_tokens"] <= 16


def test_a_cross_encoder_reranks_and_classifies_as_corral_does(models: dict[str, Path], tmp_path: Path) -> None:
    folder = models["tiny-cross"]
    query, documents = "what runs models?", ["corral runs models", "a bird sings", "the quick brown fox"]
    texts = ["corral runs models", "a bird"]
    with exported(folder, tmp_path, ["rerank", "classify_text"]) as server:
        name = server.name
        ours = server.post("/v1/rerank", {"query": query, "documents": [documents[0], {"text": documents[1]},
                                                                          documents[2]], "top_n": 2})
        bare = server.post("/rerank", {"query": query, "documents": documents, "return_documents": False})
        labels = server.hf(texts)
        assert server.post("/v1/rerank", {"query": query, "documents": []}, 400)["param"] == "documents"
        assert "entailment" in server.hf("a text", {"candidate_labels": ["a", "b"]}, 400)["message"]

    async def work(runtime: Runtime, call: CallInfo) -> list[Any]:
        ranked = [await create_rerank(runtime, RerankBody(model=name, query=query, documents=list(documents),
                                                          top_n=top_n, return_documents=full), call)
                  for top_n, full in ((2, True), (None, False))]
        return [*ranked, await HF_TASKS["text-classification"].run(runtime, name, texts, {}, call)]

    theirs = corral(folder, name, work)
    assert [r["index"] for r in ours["results"]] == [r["index"] for r in theirs[0]["results"]]
    assert same(ours["results"], theirs[0]["results"]) and ours["usage"] == theirs[0]["usage"]
    assert len(ours["results"]) == 2 and ours["results"][0]["document"]["text"] in documents
    assert same(bare["results"], theirs[1]["results"]) and "document" not in bare["results"][0]
    assert same(labels, theirs[2]) and labels[0][0]["label"] == "LABEL_0"


def test_an_nli_model_classifies_and_zero_shots_as_corral_does(models: dict[str, Path], tmp_path: Path) -> None:
    folder = models["tiny-nli"]
    calls: list[tuple[Any, dict[str, Any]]] = [
        ("the fox jumps over the dog", {"candidate_labels": ["animals", "finance", "sport"]}),
        (["the fox jumps", "money talks"], {"candidate_labels": "animals, finance", "multi_label": True,
                                            "hypothesis_template": "It is about {}."})]
    with exported(folder, tmp_path, ["classify_text"]) as server:
        name = server.name
        own = server.hf(["a tiny model", "the lazy dog"], {"top_k": 2})
        zero = [server.hf(inputs, parameters) for inputs, parameters in calls]
        assert server.hf("a text", {"candidate_labels": []}, 400)["param"] == "parameters"
        assert server.hf("", {}, 400)["param"] == "inputs"

    theirs = corral(folder, name, hf_calls("text-classification", name, [(["a tiny model", "the lazy dog"],
                                                                           {"top_k": 2})]))
    assert same(own, theirs[0]) and len(own) == 2 and len(own[0]) == 2
    assert {x["label"] for x in own[0]} <= {"contradiction", "neutral", "entailment"}
    their_zero = corral(folder, name, hf_calls("zero-shot-classification", name, calls))
    assert same(zero, their_zero)
    assert len(zero[0]) == 3 and sum(x["score"] for x in zero[0]) == pytest.approx(1.0)


def test_question_answering_as_corral_does(models: dict[str, Path], tmp_path: Path) -> None:
    folder = models["tiny-qa"]
    context = "the quick brown fox jumps over the lazy dog"
    calls: list[tuple[Any, dict[str, Any]]] = [
        ({"question": "who jumps?", "context": context}, {}),
        ([{"question": "who jumps?", "context": context}, {"question": "what is it?", "context": "a tiny model"}],
         {"top_k": 2, "max_answer_len": 4})]
    with exported(folder, tmp_path, ["answer_question"]) as server:
        name = server.name
        ours = [server.hf(inputs, parameters) for inputs, parameters in calls]
        assert server.hf({"question": "who?", "context": ""}, {}, 400)["param"] == "inputs"
    theirs = corral(folder, name, hf_calls("question-answering", name, calls))
    assert same(ours, theirs)
    assert context[ours[0]["start"]:ours[0]["end"]] == ours[0]["answer"]
    assert len(ours[1]) == 2 and len(ours[1][0]) == 2


def test_token_classification_as_corral_does(models: dict[str, Path], tmp_path: Path) -> None:
    folder = models["tiny-ner"]
    calls: list[tuple[Any, dict[str, Any]]] = [
        ("hello world, this is a tiny model", {}),
        (["the quick brown fox", "corral serves tiny models"], {"aggregation_strategy": "none"})]
    with exported(folder, tmp_path, ["classify_tokens"]) as server:
        name = server.name
        ours = [server.hf(inputs, parameters) for inputs, parameters in calls]
        assert server.hf("a text", {"aggregation_strategy": "max"}, 400)["param"] == "parameters"
    theirs = corral(folder, name, hf_calls("token-classification", name, calls))
    assert same(ours, theirs)
    assert ours[0] and {"entity_group", "score", "word", "start", "end"} == set(ours[0][0])
    assert ours[1][0] and {"entity", "score", "index", "word", "start", "end"} == set(ours[1][0][0])


@pytest.mark.parametrize(("model", "tasks", "task", "parameters", "bad"), [
    ("tiny-t5", ["translate", "summarize"], "translation", {"src_lang": "en", "tgt_lang": "de"},
     {"generate_parameters": {"temperature": 5}}),
    ("tiny-bart", ["summarize", "translate"], "summarization", {}, {"generate_parameters": {"max_new_tokens": -1}}),
    ("tiny-nllb", ["translate"], "translation", {"src_lang": "eng_Latn", "tgt_lang": "fra_Latn"},
     {"src_lang": "eng_Latn", "tgt_lang": "fr"}),
    ("tiny-mbart", ["translate", "summarize"], "translation", {"src_lang": "en_XX", "tgt_lang": "de_DE"},
     {"tgt_lang": "de_DE"}),
    ("tiny-marian", ["translate"], "translation", {}, {"generate_parameters": {"seed": "x", "do_sample": True}}),
])
def test_seq2seq_translates_and_summarises_as_corral_does(models: dict[str, Path], tmp_path: Path, model: str,
                                                          tasks: list[str], task: str, parameters: dict[str, Any],
                                                          bad: dict[str, Any]) -> None:
    folder = models[model]
    key = "translation_text" if task == "translation" else "summary_text"
    calls: list[tuple[Any, dict[str, Any]]] = [
        ("the house is wonderful", {**parameters, "generate_parameters": {"max_new_tokens": 8}}),
        (["the cat sat on the mat", "hello world"],
         {**parameters, "generate_parameters": {"max_new_tokens": 6, "do_sample": True, "temperature": 0.8,
                                                "top_p": 0.9, "seed": 3}})]
    with exported(folder, tmp_path, tasks) as server:
        name = server.name
        ours = [server.hf(inputs, parameters) for inputs, parameters in calls]
        error = server.hf("a text", bad, 400)
        assert error["param"] == "parameters"
    theirs = corral(folder, name, hf_calls(task, name, calls))
    assert ours == theirs
    assert [list(row) for row in ours[0] + ours[1]] == [[key], [key], [key]]
    if model == "tiny-nllb":
        assert "fra_Latn" in error["message"]  # the codes the model knows, widely spoken first


def test_the_pickle_opt_in_still_loads_safetensors(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "export"
    export(str(models["tiny-qa"]), out, "--allow-pickle")
    assert "ALLOW_PICKLE = True" in (out / "serve.py").read_text()
    checked = selftest(out)
    assert checked.returncode == 0, checked.stderr
