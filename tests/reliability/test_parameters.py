"""The catalogue's rows 7 and 8 (issue 18): out-of-range parameters and context edges, over the
HTTP doors in-process with the fake engine. Every answer is a 4xx naming the field (never a 500,
never a silent clamp of what the caller asked for), and the server keeps serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.server.test_fake_http import fake_runtime, register, run, serving

pytestmark = pytest.mark.timeout(60)
CHAT = "/v1/chat/completions"


def chat(content: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": content}], **extra}


def posts(tmp_path: Path, requests: list[tuple[str, Any]], **config: Any) -> list[httpx.Response]:
    register(tmp_path, "echo", **config)

    async def scenario() -> list[httpx.Response]:
        async with serving(fake_runtime()) as (_, http):
            out = []
            for route, body in requests:
                raw = body if isinstance(body, bytes) else None
                out.append(await http.post(route, content=raw, headers={"content-type": "application/json"})
                           if raw is not None else await http.post(route, json=body))
            out.append(await http.post(CHAT, json=chat(max_tokens=2)))  # still serving
            return out

    return run(scenario())


@pytest.mark.parametrize(("body", "field"), [
    (chat(max_tokens=-1), "max_tokens"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=10**12), "max_tokens"),
    (chat(max_completion_tokens=10**12), "max_tokens"),
    (chat(temperature=2.5), "temperature"),
    (chat(top_p=2), "top_p"),
    (chat(top_p=0), "top_p"),
    (chat(n=1000), "n"),
    (chat(stop=[f"s{i}" for i in range(10_000)]), "stop"),
    (chat(logprobs=True, top_logprobs=100), "top_logprobs"),
    (chat(top_k=-3), "top_k"),
    (chat(seed="x"), "seed"),
    ({"model": "echo", "prompt": "hi", "max_tokens": 10**12}, "max_tokens"),
])
def test_out_of_range_parameters_are_400_naming_the_field(tmp_path: Path, body: dict[str, Any], field: str) -> None:
    route = "/v1/completions" if "prompt" in body else CHAT
    answer, after = posts(tmp_path, [(route, body)], context=4096)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert field in (error.get("param") or "") or field in error["message"], error
    assert after.status_code == 200


def test_a_max_tokens_past_the_context_names_the_models_limit(tmp_path: Path) -> None:
    answer, _ = posts(tmp_path, [(CHAT, chat(max_tokens=5000))], context=4096)
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["param"] == "max_tokens"
    assert "4096" in error["message"] and "5000" in error["message"]


def test_nan_temperature_is_refused(tmp_path: Path) -> None:
    raw = b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'
    answer, after = posts(tmp_path, [(CHAT, raw)])
    assert answer.status_code == 400 and "temperature" in answer.text and after.status_code == 200


def test_context_edges(tmp_path: Path) -> None:
    """The fake model counts one token per word: a context of 10 holds 9 words and 1 answer token."""
    nine, ten = " ".join(["w"] * 9), " ".join(["w"] * 10)
    fits, full, empty, after = posts(tmp_path, [(CHAT, chat(nine, max_tokens=1)), (CHAT, chat(ten, max_tokens=1)),
                                                (CHAT, {"model": "echo", "messages": []})], context=10)
    assert fits.status_code == 200 and fits.json()["usage"] == {"prompt_tokens": 9, "completion_tokens": 1,
                                                                 "total_tokens": 10}
    assert full.status_code == 400 and "10 tokens" in full.json()["error"]["message"]
    assert "context holds 10" in full.json()["error"]["message"]
    assert empty.status_code == 400 and "messages" in empty.json()["error"]["message"]
    assert after.status_code == 200
