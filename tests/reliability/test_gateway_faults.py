"""The catalogue's row 19 (issue 18): the gateway's faults end to end through the HTTP door
(create_app in-process, its lifespan run, httpx over ASGI), the upstreams being stand-in
OpenAI-compatible servers on 127.0.0.1 (tests/gateway/standin_openai.py) behind an alias chain
``fast = ["a/small", "b/small"]``. tests/gateway/test_router.py checks the router's rules on the
runtime; this file checks what a client of the door gets:

- a 5xx from the first upstream, then a 200 from the second: the client gets the 200, the headers
  and the request log show the failed attempt and the fallback;
- a 4xx from the first upstream is not tried on the second: the client gets it as a 4xx (401 and 403
  are corral's credentials, not the caller's: a 502 by design, also not tried elsewhere);
- a streamed answer whose upstream breaks after its first tokens: the client gets those tokens,
  then an error event, then ``[DONE]``; no token of the second upstream is spliced in;
- an upstream that takes the request and never answers times out on the provider's ``first_token``
  time (the chain goes on to the next upstream; a remote name asked for directly answers 504), and
  one that stalls mid-stream on its ``total`` time (set small here): an error event after the
  tokens already sent. Order and content are checked, never durations (the pytest timeout only
  catches a hang)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.gateway.standin_openai import StandIn
from tests.server.test_fake_http import run, serving, sse

from corral.config import load_settings
from corral.runtime.requestlog import latest
from corral.runtime.runtime import Runtime, RuntimeOptions, build_runtime

pytestmark = pytest.mark.timeout(60)
CHAT = "/v1/chat/completions"
LONG = "the long answer has more words than three"
HANG = 20  # seconds an upstream stays silent: far past the timeouts below


@pytest.fixture
def ups() -> Iterator[tuple[StandIn, StandIn]]:
    with StandIn("a", reply=LONG) as a, StandIn("b") as b:
        yield a, b


def gateway(tmp_path: Path, ups: tuple[StandIn, ...]) -> Runtime:
    """A runtime whose config has the stand-ins as providers (no retries, small timeouts, no
    cool-down in reach) and the alias ``fast`` over a/small then b/small."""
    providers = "".join(
        f'[providers.{u.name}]\ntype = "openai"\nbase_url = "{u.url}"\n'
        "timeout = { connect = 2, first_token = 0.5, total = 1.5 }\nretries = { max = 0, backoff = 0 }\n"
        "cooldown = { failures = 100, window = 60, seconds = 1 }\n" for u in ups)
    (tmp_path / "config.toml").write_text(providers + '[aliases]\nfast = ["a/small", "b/small"]\n')
    return build_runtime(load_settings(), options=RuntimeOptions(budget_bytes=2**30))


def ask(stream: bool = False, model: str = "fast") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def post(tmp_path: Path, ups: tuple[StandIn, ...], *bodies: dict[str, Any]) -> tuple[list[httpx.Response], Path]:
    """Each body posted in turn to the chat route of one in-process server; and its request log."""
    rt = gateway(tmp_path, ups)

    async def scenario() -> list[httpx.Response]:
        async with serving(rt) as (_, http):
            return [await http.post(CHAT, json=body) for body in bodies]

    return run(scenario()), rt.log.path


def rows(log: Path, n: int) -> list[tuple[Any, ...]]:
    """The last ``n`` rows, oldest first: (name asked for, target, status, attempts)."""
    return [(r["model"], r["target"], r["status"], r["attempts"]) for r in reversed(latest(log, n))]


def posted_models(standin: StandIn) -> list[str]:
    return [r["body"]["model"] for r in standin.requests if r["method"] == "POST"]


def content(events: list[Any]) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                   if isinstance(e, dict) and e.get("choices"))


@pytest.mark.parametrize(("status", "stream"), [(500, False), (503, True), (502, False)])
def test_a_5xx_then_a_200_falls_over_to_the_next_upstream(tmp_path: Path, ups: Any, status: int,
                                                           stream: bool) -> None:
    a, b = ups
    a.faults.append(("status", status))
    (answer,), log = post(tmp_path, ups, ask(stream))
    assert answer.status_code == 200
    got = content(sse(answer.text)) if stream else answer.json()["choices"][0]["message"]["content"]
    assert got == "hello from b"
    assert answer.headers["x-corral-target"] == "b/small" and answer.headers["x-corral-attempts"] == "2"
    assert posted_models(a) == ["small"] and posted_models(b) == ["small"]
    assert rows(log, 2) == [("fast", "a/small", 503, 1), ("fast", "b/small", 200, 2)]  # the failed try, logged


@pytest.mark.parametrize(("status", "client_status"), [(400, 400), (422, 400), (404, 404), (401, 502), (403, 502)])
def test_a_4xx_is_answered_at_once_and_not_tried_on_the_next_upstream(tmp_path: Path, ups: Any, status: int,
                                                                      client_status: int) -> None:
    a, b = ups
    a.faults.append(("status", status))
    (refused, streamed, after), log = post(tmp_path, ups, ask(), ask(stream=True), ask())
    a.faults.append(("status", status))
    assert refused.status_code == client_status, refused.text
    assert f"({status})" in refused.json()["error"]["message"]  # the upstream's status, named
    assert streamed.status_code == 200 and content(sse(streamed.text)) == LONG  # its fault was used up
    assert b.billed == 0 and posted_models(a) == ["small"] * 3
    assert after.status_code == 200 and after.headers["x-corral-target"] == "a/small"
    assert rows(log, 3)[0][1:3] == ("a/small", client_status)


def test_a_stream_broken_after_its_first_tokens_ends_with_an_error_event_never_spliced(tmp_path: Path,
                                                                                       ups: Any) -> None:
    a, b = ups
    a.faults.append(("cut", 3))  # three tokens, then the upstream's connection closes mid-body
    (answer, after), log = post(tmp_path, ups, ask(stream=True), ask(stream=True))
    assert answer.status_code == 200
    events = sse(answer.text)
    errors = [i for i, e in enumerate(events) if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and errors[0] == len(events) - 2 and events[-1] == "[DONE]"  # error, then [DONE]
    assert content(events[:errors[0]]) == "the long answer"  # a's first tokens, in order, and nothing else
    assert "a/small failed mid-answer" in events[errors[0]]["error"]["message"]
    assert "hello" not in answer.text and b.billed == 0  # b was never asked: nothing of it spliced in
    assert content(sse(after.text)) == LONG and b.billed == 0  # the next stream is whole
    assert events[errors[0]]["error"]["code"] == "StreamBrokenError"
    assert rows(log, 2) == [("fast", "a/small", 503, 1), ("fast", "a/small", 200, 1)]  # 503: the upstream's break


def test_an_upstream_that_never_answers_times_out_and_the_next_one_answers(tmp_path: Path, ups: Any) -> None:
    a, _ = ups
    a.faults += [("hang", HANG), ("hang", HANG)]  # takes the request, answers nothing
    (moved, alone), log = post(tmp_path, ups, ask(stream=True), ask(model="a/small"))
    assert moved.status_code == 200 and content(sse(moved.text)) == "hello from b"
    assert alone.status_code == 504, alone.text  # a remote name, no chain: its timeout is the answer
    assert alone.json()["error"]["message"].startswith("a/small sent nothing within 0.5 s")
    assert rows(log, 3) == [("fast", "a/small", 504, 1), ("fast", "b/small", 200, 2), ("a/small", "a/small", 504, 1)]


def test_an_upstream_that_stalls_mid_stream_ends_with_an_error_event(tmp_path: Path, ups: Any) -> None:
    a, b = ups
    a.faults += [("stall", HANG), ("stall", HANG)]  # three tokens, then silence without [DONE]
    (streamed, whole), log = post(tmp_path, ups, ask(stream=True), ask())
    events = sse(streamed.text)
    assert streamed.status_code == 200 and events[-1] == "[DONE]"
    assert content(events[:-2]) == "the long answer" and "error" in events[-2]
    assert "longer than its total time of 1.5 s" in events[-2]["error"]["message"]
    assert whole.status_code == 502, whole.text  # unstreamed: the same failure as a status
    assert "longer than its total time" in whole.json()["error"]["message"]
    assert b.billed == 0  # committed to a once its tokens were out: never b's words after a's
    assert [r[1:3] for r in rows(log, 2)] == [("a/small", 504), ("a/small", 504)]
