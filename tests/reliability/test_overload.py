"""The catalogue's row 16 (issue 18): overload. 1,000 concurrent requests (streamed and whole) against
a model that serves 4 at once with a queue of 64, through a real uvicorn server on 127.0.0.1: every
answer is 200, 429 or 503, none hangs (a generous client timeout only to catch hangs), each stream
that was accepted ends with ``[DONE]``, and afterwards the process's file descriptors and threads are
back to where they were before the burst."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tests.reliability.test_disconnects import uvicorn_serving
from tests.server.test_fake_http import CHAT, HOST, chat_body, fake_runtime, register, run, until

pytestmark = pytest.mark.timeout(240)
CLIENTS = 1000


def resources() -> tuple[int, int]:
    me = psutil.Process()
    return me.num_fds(), me.num_threads()


async def one(http: httpx.AsyncClient, i: int) -> tuple[int, bool]:
    """(status, whether a 200 stream ended with [DONE]; True for whole answers)."""
    body = chat_body(f"word{i} two three", max_tokens=3, stream=i % 2 == 0)
    if i % 2:
        answer = await http.post(CHAT, json=body)
        return answer.status_code, True
    async with http.stream("POST", CHAT, json=body) as answer:
        text = (await answer.aread()).decode()
        return answer.status_code, answer.status_code != 200 or text.rstrip().endswith("data: [DONE]")


def test_a_thousand_concurrent_requests_get_200_429_or_503_and_resources_come_back(tmp_path: Path) -> None:
    register(tmp_path, "echo", parallel=4, delay=0.005)

    async def scenario() -> tuple[collections.Counter[int], list[int], tuple[int, int], tuple[int, int]]:
        rt = fake_runtime(max_queue=64)
        async with uvicorn_serving(rt) as port:
            limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=120, limits=limits) as http:
                assert (await http.post(CHAT, json=chat_body("warm up", max_tokens=1))).status_code == 200
                before = resources()
                results = await asyncio.gather(*(one(http, i) for i in range(CLIENTS)))
            statuses = collections.Counter(status for status, _ in results)
            unfinished = [i for i, (status, ended) in enumerate(results) if status == 200 and not ended]
            state = rt.status().models[0]
            await until(lambda: resources()[0] <= before[0] and resources()[1] <= before[1], 30)
            return statuses, [*unfinished, state.in_flight, state.queued], before, resources()

    statuses, leftovers, before, after = run(scenario())
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses[200] >= 4 + 64 and statuses[429] > 0, statuses  # served up to capacity, the rest refused
    assert leftovers == [0, 0]  # every accepted stream ended whole; nothing left running or queued
    assert after[0] <= before[0] and after[1] <= before[1]


def test_the_refusals_say_when_to_retry(tmp_path: Path) -> None:
    register(tmp_path, "echo", parallel=1, hold=True)

    async def scenario() -> list[Any]:
        rt = fake_runtime(max_queue=1)
        async with uvicorn_serving(rt) as port, httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=60) as http:
            held = asyncio.ensure_future(http.post(CHAT, json=chat_body("a b", max_tokens=2)))
            await until(lambda: bool(rt.status().models) and rt.status().models[0].in_flight == 1)
            queued = asyncio.ensure_future(http.post(CHAT, json=chat_body("c d", max_tokens=2)))
            await until(lambda: rt.status().models[0].queued == 1)
            refused = await http.post(CHAT, json=chat_body("e f", max_tokens=2))
            rt.registry.models["echo"].handler.release.set()  # type: ignore[attr-defined]
            return [refused.status_code, refused.headers.get("retry-after"), refused.json()["error"]["type"],
                    (await held).status_code, (await queued).status_code]

    status, retry_after, kind, held, queued = run(scenario())
    assert (status, held, queued) == (429, 200, 200)
    assert retry_after is not None and int(retry_after) >= 1 and kind
