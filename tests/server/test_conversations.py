"""Conversations the runtime keeps (/api/conversations), in-process over the fake engine (which echoes
the last message and counts a word as a token): create, send as JSON and SSE, the history in the
next prompt and in GET, list, delete; unknown ids and bad bodies; a history past the context leaves
its oldest exchanges out (never the system prompt) and says how many; retention by an injected
clock; a second send while one is answering is 409; failed or abandoned answers store nothing."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fake_engine import loaded_fake
from tests.server.test_fake_http import (
    fake_runtime,
    leave_mid_stream,
    lifespan,
    register,
    run,
    serving,
    sse,
    until,
)

from corral.api.app import ServeOptions, create_app
from corral.api.guard import ServerState
from corral.config import load_settings
from corral.runtime.conversations import ConversationBusyError, ConversationStore
from corral.runtime.requestlog import latest

pytestmark = pytest.mark.timeout(60)
CONV = "/api/conversations"


def words(answer: dict[str, Any]) -> str:
    return str(answer["choices"][0]["message"]["content"])


def streamed_text(events: list[Any]) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])


def engine_saw(rt: Any, name: str) -> list[tuple[str, str]]:
    """The messages of the fake model's latest generation, as the engine got them."""
    return [(m.role, m.content) for m in loaded_fake(rt, name).generations[-1].request.messages]


def test_create_send_json_and_sse_get_list_delete(tmp_path: Path, corral_home: Path) -> None:
    register(tmp_path, "echo")

    async def scenario() -> dict[str, Any]:
        rt = fake_runtime()
        async with serving(rt) as (_, client):
            made = await client.post(CONV, json={"model": "echo", "system": "be brief"})
            cid = made.json()["id"]
            first = await client.post(f"{CONV}/{cid}/messages", json={"content": "one two three", "max_tokens": 3})
            streamed = await client.post(f"{CONV}/{cid}/messages", json={"content": "four five", "stream": True})
            seen = engine_saw(rt, "echo")
            prompt_tokens = loaded_fake(rt, "echo").generations[-1].prompt_tokens
            got, listed = await client.get(f"{CONV}/{cid}"), await client.get(CONV)
            deleted, after = await client.delete(f"{CONV}/{cid}"), await client.get(f"{CONV}/{cid}")
            again = await client.delete(f"{CONV}/{cid}")
            return {"made": made, "first": first, "streamed": streamed, "seen": seen, "prompt": prompt_tokens,
                    "got": got, "listed": listed, "deleted": deleted, "after": after, "again": again, "id": cid}

    r = run(scenario())
    cid = r["id"]
    assert r["made"].status_code == 201 and re.fullmatch(r"conv_[0-9a-f]{24}", cid)
    assert r["made"].json()["messages"] == [] and r["made"].json()["system"] == "be brief"
    first = r["first"]
    assert first.status_code == 200 and first.json()["object"] == "chat.completion"
    assert words(first.json()) == "one two three"
    assert first.json()["corral"] == {"conversation": cid, "dropped_messages": 0}
    assert first.headers["x-corral-dropped-messages"] == "0"
    events = sse(r["streamed"].text)
    assert r["streamed"].headers["content-type"].startswith("text/event-stream") and events[-1] == "[DONE]"
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    assert streamed_text(events) == "four five"
    assert events[-2]["corral"] == {"conversation": cid, "dropped_messages": 0}  # on the final chunk only
    assert not any("corral" in e for e in events[:-2])
    # the second send carried the first exchange, after the system prompt
    assert r["seen"] == [("system", "be brief"), ("user", "one two three"), ("assistant", "one two three"),
                         ("user", "four five")]
    assert r["prompt"] == 2 + 3 + 3 + 2
    got = r["got"].json()
    assert (got["id"], got["model"], got["system"]) == (cid, "echo", "be brief")
    assert got["messages"] == [{"role": "user", "content": "one two three"},
                               {"role": "assistant", "content": "one two three"},
                               {"role": "user", "content": "four five"}, {"role": "assistant", "content": "four five"}]
    assert got["updated"] >= got["created"] > 0
    [row] = r["listed"].json()["data"]
    assert (row["id"], row["model"], row["message_count"]) == (cid, "echo", 4)
    assert r["deleted"].status_code == 200 and r["deleted"].json()["deleted"] is True
    for gone in (r["after"], r["again"]):
        assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found_error"
        assert cid in gone.json()["error"]["message"]
    assert (corral_home / "conversations.db").is_file()  # under CORRAL_HOME
    with sqlite3.connect(corral_home / "conversations.db") as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0  # delete forgot the text too
    rows = latest(corral_home / "requests.db", 2)
    assert {(x["door"], x["route"], x["status"]) for x in rows} == {("admin", CONV + "/{id}/messages", 200)}


def test_unknown_ids_and_bad_bodies(tmp_path: Path) -> None:
    register(tmp_path, "echo")

    async def scenario() -> dict[str, httpx.Response]:
        async with serving(fake_runtime()) as (_, client):
            cid = (await client.post(CONV, json={"model": "echo"})).json()["id"]
            nobody = (await client.post(CONV, json={"model": "nope"})).json()["id"]
            send = f"{CONV}/{cid}/messages"
            return {
                "get unknown": await client.get(f"{CONV}/conv_{'0' * 24}"),
                "get odd": await client.get(f"{CONV}/..%2F..%2Fetc"),
                "send unknown": await client.post(f"{CONV}/conv_{'1' * 24}/messages", json={"content": "hi"}),
                "delete unknown": await client.delete(f"{CONV}/conv_{'2' * 24}"),
                "model": await client.post(CONV, json={"system": "x"}),
                "empty model": await client.post(CONV, json={"model": ""}),
                "sytem": await client.post(CONV, json={"model": "echo", "sytem": "typo"}),
                "content": await client.post(send, json={"content": 5}),
                "no content": await client.post(send, json={"stream": True}),
                "temperature": await client.post(send, json={"content": "hi", "temperature": 9}),
                "stop": await client.post(send, json={"content": "hi", "stop": ["a", "b", "c", "d", "e"]}),
                "api_base": await client.post(send, json={"content": "hi", "api_base": "http://x"}),
                "not json": await client.post(send, content=b"{", headers={"content-type": "application/json"}),
                "unknown model": await client.post(f"{CONV}/{nobody}/messages", json={"content": "hi"}),
                "kept": await client.get(f"{CONV}/{nobody}"),
            }

    r = run(scenario())
    for key in ("get unknown", "get odd", "send unknown", "delete unknown"):
        assert r[key].status_code == 404, key
        assert r[key].json()["error"]["type"] == "not_found_error", key
    for param in ("model", "sytem", "content", "temperature", "stop", "api_base"):
        assert r[param].status_code == 400 and r[param].json()["error"]["param"] == param, (param, r[param].text)
    assert r["empty model"].status_code == 400 and r["empty model"].json()["error"]["param"] == "model"
    assert r["no content"].status_code == 400 and r["no content"].json()["error"]["param"] == "content"
    assert r["not json"].status_code == 400
    assert r["unknown model"].status_code == 404 and "nope" in r["unknown model"].json()["error"]["message"]
    assert r["kept"].json()["messages"] == []  # a failed answer stores nothing


def test_a_history_past_the_context_drops_its_oldest_exchanges(tmp_path: Path) -> None:
    """Context 16 words: system (1) + each exchange (3 + 3) + the new message (3). The third send
    (1 + 12 + 3 = 16) leaves the first exchange out, the fourth the first two; the stored history keeps
    all; a message that alone overflows the context is a 400 that stores nothing."""
    register(tmp_path, "small", context=16)

    async def scenario() -> dict[str, Any]:
        rt = fake_runtime()
        async with serving(rt) as (_, client):
            cid = (await client.post(CONV, json={"model": "small", "system": "sys"})).json()["id"]
            send, answers, seen = f"{CONV}/{cid}/messages", [], []
            for i, text in enumerate(["a b c", "d e f", "g h i"]):
                answers.append(await client.post(send, json={"content": text, "max_tokens": 3}))
                seen.append(engine_saw(rt, "small"))
                assert answers[-1].status_code == 200, (i, answers[-1].text)
            streamed = await client.post(send, json={"content": "j k l", "max_tokens": 3, "stream": True})
            seen.append(engine_saw(rt, "small"))
            huge = await client.post(send, json={"content": " ".join(["w"] * 20)})
            after = await client.post(send, json={"content": "m", "max_tokens": 1})
            return {"answers": answers, "streamed": streamed, "seen": seen, "huge": huge, "after": after,
                    "kept": (await client.get(f"{CONV}/{cid}")).json()}

    r = run(scenario())
    dropped = [a.json()["corral"]["dropped_messages"] for a in r["answers"]]
    assert dropped == [0, 0, 2]
    assert [a.headers["x-corral-dropped-messages"] for a in r["answers"]] == ["0", "0", "2"]
    events = sse(r["streamed"].text)
    assert events[-2]["corral"]["dropped_messages"] == 4 and r["streamed"].headers["x-corral-dropped-messages"] == "4"
    assert r["seen"][2] == [("system", "sys"), ("user", "d e f"), ("assistant", "d e f"), ("user", "g h i")]
    assert r["seen"][3] == [("system", "sys"), ("user", "g h i"), ("assistant", "g h i"), ("user", "j k l")]
    assert all(s[0] == ("system", "sys") for s in r["seen"])  # the system prompt is never left out
    assert r["huge"].status_code == 400 and r["huge"].json()["error"]["code"] == "ContextLengthError"
    # the failed send moved nothing: the window starts where the last answer's did (1 + 12 + 1 words fit)
    assert r["after"].status_code == 200 and r["after"].json()["corral"]["dropped_messages"] == 4
    contents = [m["content"] for m in r["kept"]["messages"]]
    assert contents == ["a b c", "a b c", "d e f", "d e f", "g h i", "g h i", "j k l", "j k l", "m", "m"]


def test_a_second_send_while_one_answers_is_409(tmp_path: Path) -> None:
    register(tmp_path, "held", hold=True)  # tokens after the first wait for the test's release

    async def scenario() -> list[httpx.Response]:
        rt = fake_runtime()
        async with serving(rt) as (_, client):
            cid = (await client.post(CONV, json={"model": "held"})).json()["id"]
            send = f"{CONV}/{cid}/messages"
            await client.post("/api/models/held/load")
            handler = loaded_fake(rt, "held")
            first = asyncio.create_task(client.post(send, json={"content": "a b c"}))
            await asyncio.to_thread(handler.wait_until, lambda: any(g.waiting for g in handler.generations))
            second = await client.post(send, json={"content": "d e"})
            streamed = await client.post(send, json={"content": "d e", "stream": True})
            handler.release.set()
            done = await first
            third = await client.post(send, json={"content": "f"})
            return [second, streamed, done, third, await client.get(f"{CONV}/{cid}")]

    second, streamed, done, third, kept = run(scenario())
    for refused in (second, streamed):
        assert refused.status_code == 409 and refused.json()["error"]["type"] == "conflict_error"
        assert "answering another message" in refused.json()["error"]["message"]
    assert words(done.json()) == "a b c" and words(third.json()) == "f"
    assert [m["content"] for m in kept.json()["messages"]] == ["a b c", "a b c", "f", "f"]


def test_failed_and_abandoned_answers_store_nothing_and_free_the_conversation(tmp_path: Path) -> None:
    register(tmp_path, "broken", fail_after=1)
    register(tmp_path, "echo", repeat=True, delay=0.001, context=20_000)

    async def scenario() -> list[Any]:
        rt = fake_runtime()
        async with serving(rt) as (app, client):
            as_served = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                          base_url=str(client.base_url))  # the 500 uvicorn would send
            broken = (await client.post(CONV, json={"model": "broken"})).json()["id"]
            failed = await as_served.post(f"{CONV}/{broken}/messages", json={"content": "x y z"})
            failed_stream = await client.post(f"{CONV}/{broken}/messages", json={"content": "x y z", "stream": True})
            cid = (await client.post(CONV, json={"model": "echo"})).json()["id"]
            await leave_mid_stream(app, f"{CONV}/{cid}/messages", {"content": "la", "stream": True,
                                                                    "max_tokens": 10_000})
            handler = loaded_fake(rt, "echo")
            await asyncio.to_thread(handler.wait_until, lambda: handler.generations[0].closed)
            await until(lambda: all(m.in_flight == 0 for m in rt.status().models))
            after = await client.post(f"{CONV}/{cid}/messages", json={"content": "hi", "max_tokens": 1})
            return [failed, failed_stream, (await client.get(f"{CONV}/{broken}")).json(), after,
                    (await client.get(f"{CONV}/{cid}")).json()]

    failed, failed_stream, broken, after, kept = run(scenario())
    assert failed.status_code == 500  # not a 409: the failed answer released its claim
    events = sse(failed_stream.text)
    assert "error" in events[-2] and events[-1] == "[DONE]" and "corral" not in events[-2]
    assert broken["messages"] == []
    assert after.status_code == 200  # the abandoned stream released its claim
    assert kept["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_retention_expires_conversations_by_the_clock(tmp_path: Path, corral_home: Path) -> None:
    register(tmp_path, "echo")
    clock = Clock()

    async def scenario() -> list[Any]:
        async with serving(fake_runtime()) as (app, client):
            app.app.app.state.conversations = ConversationStore(corral_home, 3600, clock)  # Guard, Departures, app
            old = (await client.post(CONV, json={"model": "echo"})).json()["id"]
            await client.post(f"{CONV}/{old}/messages", json={"content": "secret words"})
            clock.now += 1800
            young = (await client.post(CONV, json={"model": "echo"})).json()["id"]
            clock.now += 1900  # old: 3700 s since its last message; young: 1900 s
            return [old, young, await client.get(f"{CONV}/{old}"),
                    await client.post(f"{CONV}/{old}/messages", json={"content": "more"}),
                    await client.get(f"{CONV}/{young}"), (await client.get(CONV)).json()]

    old, young, gone, send, kept, listed = run(scenario())
    assert gone.status_code == 404 and old in gone.json()["error"]["message"]
    assert send.status_code == 404 and kept.status_code == 200
    assert [c["id"] for c in listed["data"]] == [young]
    with sqlite3.connect(corral_home / "conversations.db") as db:  # deleted, not only hidden
        assert db.execute("SELECT id FROM conversations").fetchall() == [(young,)]
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    forever = ConversationStore(tmp_path / "forever", -1, clock)
    kept_id = forever.create("echo").id
    clock.now += 10**9
    assert forever.get(kept_id).id == kept_id and forever.expire() == 0


def test_retention_setting_and_claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().runtime.conversation_retention == 30 * 86400
    monkeypatch.setenv("CORRAL_CONVERSATION_RETENTION", "2h")
    assert load_settings().runtime.conversation_retention == 7200
    monkeypatch.setenv("CORRAL_CONVERSATION_RETENTION", "-1")
    assert load_settings().runtime.conversation_retention == -1
    store = ConversationStore(tmp_path, -1)
    cid = store.create("echo").id
    claim = store.claim(cid)
    with pytest.raises(ConversationBusyError):
        ConversationStore(tmp_path, -1).claim(cid)  # another store (as another process would have) on the file
    claim.release()
    store.claim(cid).release()


def test_conversations_need_the_api_key(tmp_path: Path) -> None:
    register(tmp_path, "echo")

    async def scenario() -> list[int]:
        app = create_app(fake_runtime(), ServeOptions(api_keys=["sekret"]), ServerState())
        transport = httpx.ASGITransport(app=app)
        async with lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            bare = await client.post(CONV, json={"model": "echo"})
            listed = await client.get(CONV)
            keyed = await client.post(CONV, json={"model": "echo"}, headers={"authorization": "Bearer sekret"})
            return [bare.status_code, listed.status_code, keyed.status_code]

    assert run(scenario()) == [401, 401, 201]
