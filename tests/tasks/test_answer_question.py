"""answer_question (extractive QA) on a tiny random-weight BertForQuestionAnswering built from a config:
the best span found by brute force over the model's own logits, character offsets that index the
context, top-k answers best first, concurrent requests batched with the same answers as alone, and the
CLI and the sidecar (the HTTP door: tests/server/test_hf_api.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import run_cli
from tests.fixtures.runtimes import runtime_with
from tests.fixtures.tiny_models import build_question_answering

from corral.models.inspect import inspect_path
from corral.runtime.dispatcher import CallInfo, Door
from corral.sidecar.client import SidecarClient, SidecarError
from corral.sidecar.protocol import INVALID_PARAMS
from corral.tasks import AnswerQuestionRequest, AnswerQuestionResult, Task

pytestmark = pytest.mark.timeout(300)
ITEMS = [("where did the cat sit", "the cat sat on the mat in the park"),
         ("what fell", "stocks fell sharply today and the market closed"),
         ("who ran", "a dog ran in the park while the cat sat"),
         ("what did the dog do", "the dog ran")]


@pytest.fixture(scope="module")
def qa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_question_answering(tmp_path_factory.mktemp("qa")).path


def brute_force(path: Path, question: str, context: str, max_len: int = 30) -> tuple[str, float]:
    """The best span and its score, every (start, end) pair tried over the context tokens."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForQuestionAnswering.from_pretrained(str(path)).eval()
    features = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    offsets = features.pop("offset_mapping")[0]
    with torch.inference_mode():
        out = model(**features)
    ctx = [i for i, s in enumerate(features.sequence_ids(0)) if s == 1]
    p_start = torch.softmax(out.start_logits[0][ctx], dim=0)
    p_end = torch.softmax(out.end_logits[0][ctx], dim=0)
    best = max((float(p_start[a] * p_end[b]), a, b) for a in range(len(ctx)) for b in range(a, len(ctx))
                if b - a < max_len)
    score, a, b = best
    return context[int(offsets[ctx[a]][0]):int(offsets[ctx[b]][1])], score


def test_answers_are_the_best_spans_and_batching_changes_nothing(qa: Path) -> None:
    assert inspect_path(qa).tasks[0] == "answer_question"
    runtime = runtime_with({"qa": qa})
    call = CallInfo(Door.CLI, "test")
    requests = [AnswerQuestionRequest((item,), top_k=3) for item in ITEMS]

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with runtime:
            alone = [await runtime.call(Task.ANSWER_QUESTION, "qa", r, call) for r in requests]
            together = await asyncio.gather(*(runtime.call(Task.ANSWER_QUESTION, "qa", r, call) for r in requests))
            return alone, list(together)

    alone, together = asyncio.run(scenario())
    for (question, context), one, shared in zip(ITEMS, alone, together, strict=True):
        assert isinstance(one, AnswerQuestionResult)
        answers = one.answers[0]
        assert 1 <= len(answers) <= 3 and [a.score for a in answers] == sorted((a.score for a in answers), reverse=True)
        for a in answers:
            assert context[a.start:a.end] == a.text and a.text and 0 < a.score <= 1
        text, score = brute_force(qa, question, context)
        assert (answers[0].text, answers[0].score) == (text, pytest.approx(score, abs=1e-5))
        assert [(a.text, a.start, a.end) for a in shared.answers[0]] == [(a.text, a.start, a.end) for a in answers]
        assert [a.score for a in shared.answers[0]] == pytest.approx([a.score for a in answers], abs=1e-5)


def test_cli_and_sidecar(qa: Path) -> None:
    assert run_cli("pull", str(qa), "--name", "qa").returncode == 0
    question, context = ITEMS[0]
    r = run_cli("run", "qa", question, "--context", context, "--json")
    assert r.returncode == 0, r.stderr
    best = json.loads(r.stdout)[0]
    assert context[best["start"]:best["end"]] == best["answer"]
    piped = run_cli("run", "qa", question, "--top-k", "2", input=context)
    assert piped.returncode == 0 and piped.stdout.splitlines()[0].split() == ["ANSWER", "SCORE", "START", "END"]
    missing = run_cli("run", "qa", question, input="")
    assert missing.returncode == 2 and "no context" in missing.stderr
    with SidecarClient() as client:
        got = client.call("answer_question", {"model": "qa", "inputs": {"question": question, "context": context}})
        assert got["answer"] == best["answer"] and got["start"] == best["start"]
        with pytest.raises(SidecarError) as caught:
            client.call("answer_question", {"model": "qa", "inputs": {"question": question}})
        assert caught.value.code == INVALID_PARAMS and "context" in caught.value.message
