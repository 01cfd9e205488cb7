"""The catalogue's row 6 (issue 18): request bodies, fuzzed, over every route that takes one.

The routes come from the app's own /openapi.json (every POST, PUT and PATCH, and any other operation
that declares a body), so a new route is covered without touching this file. Each gets malformed
JSON, bodies that are no object (list, string, number, null), invalid UTF-8, a lone surrogate,
10^5-deep arrays and objects, an empty body, the wrong content type, broken multipart, a body over the
server's limit (announced by Content-Length at the default limit; streamed without one past a small
--max-body), then a few dozen hypothesis-generated bodies: shaped by the route's schema (its fields,
types, bounds, enums; a registered model) with random JSON in random places, objects of its field
names holding anything, and any JSON value at all. Every answer is below 500 with no internal error
sent in band, and an error answer is the JSON error object of the API its path belongs to
(api/errors.py). JSON nested 10^5 deep inside strings (a tool call's arguments, an answer the model
echoes) is text, not a crash. In-process, through the real app with the fake engine (a chat model and
an embedding model); huge headers go to a real `corral serve`: 431 or a closed connection, and the
server goes on serving. The sidecar, the other door that parses JSON, takes the deep and the
non-Unicode lines too."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from tests.server.conftest import Server
from tests.server.test_fake_http import fake_runtime, register

from corral.api.app import ServeOptions, create_app
from corral.api.errors import ANTHROPIC_PATHS, OLLAMA_PATHS
from corral.api.guard import ServerState

pytestmark = pytest.mark.timeout(300)
MODELS = ("echo", "vec")
PATH_VALUES = {"name": "vec", "task": "feature-extraction"}  # any other path parameter: "none"
JSON = "application/json"
settings.register_profile("corral-bodies", max_examples=30, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass
class Route:
    method: str
    path: str  # the template, as the error shape is chosen by it (errors.error_body_for)
    url: str
    fields: tuple[str, ...]  # the body's top-level fields ((): none declared)
    names: tuple[str, ...]  # field names at every depth of the body's schema
    words: tuple[str, ...]  # the strings its enums and consts allow
    schema: dict[str, Any]  # the body's JSON schema ({}: none declared) and the document's components
    components: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.method} {self.url}"


def _schema_words(schema: Any, components: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Every property name and every enum/const string reachable from ``schema`` ($refs followed once)."""
    names: set[str] = set()
    words: set[str] = set()
    seen: set[str] = set()
    todo = [schema]
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                key = ref.rsplit("/", 1)[-1]
                if key not in seen:
                    seen.add(key)
                    todo.append(components[key])
                continue
            names.update(item.get("properties", {}))
            words.update(w for w in [*item.get("enum", []), item.get("const")] if isinstance(w, str))
            todo.extend(item.values())
    return names, words


def body_routes(doc: dict[str, Any]) -> list[Route]:
    components = doc.get("components", {}).get("schemas", {})
    routes = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            if method not in ("post", "put", "patch") and "requestBody" not in op:
                continue
            schema = op.get("requestBody", {}).get("content", {}).get(JSON, {}).get("schema", {})
            top = components[schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema
            names, words = _schema_words(schema, components)
            url = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PATH_VALUES.get(m.group(1), "none"), path)
            routes.append(Route(method.upper(), path, url, tuple(sorted(top.get("properties", {}))),
                                tuple(sorted(names)), tuple(sorted(words)), schema, components))
    return routes


@contextlib.contextmanager
def serving(tmp_path: Path, **options: Any) -> Iterator[TestClient]:
    """The real app over the fake engine, its lifespan running (Starlette's TestClient: synchronous, so
    hypothesis can drive it), a 500 returned as a response rather than raised."""
    for name in MODELS:
        register(tmp_path, name, tasks=("embed",) if name == "vec" else ("chat", "complete"))
    app = create_app(fake_runtime(), ServeOptions(**options), ServerState())
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as http:
        yield http


def well_formed_error(path: str, body: Any) -> bool:
    """The error object of the API ``path`` belongs to: Ollama's, Anthropic's, else OpenAI's (HF too)."""
    if path in OLLAMA_PATHS:
        return (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)
                and bool(body["error"]))
    if path in ANTHROPIC_PATHS:
        error = body.get("error") if isinstance(body, dict) else None
        return (body.get("type") == "error" and isinstance(error, dict) and isinstance(error.get("type"), str)
                and isinstance(error.get("message"), str) and bool(error["message"]))
    error = body.get("error") if isinstance(body, dict) else None
    return (isinstance(error, dict) and isinstance(error.get("message"), str) and bool(error["message"])
            and isinstance(error.get("type"), str))


ENDS = frozenset({"message_stop", "error", "response.completed", "response.incomplete", "response.failed"})


def stream_ended(answer: httpx.Response) -> bool:
    """A streamed answer ends as its API ends one (OpenAI's ``[DONE]``, Anthropic's and the Responses
    API's last event, Ollama's ``done`` or ``error`` line), not cut short by a crash."""
    kind = answer.headers.get("content-type", "")
    if kind.startswith("text/event-stream"):
        last = [line[6:] for line in answer.text.splitlines() if line.startswith("data: ")][-1:]
        return last == ["[DONE]"] or (bool(last) and json.loads(last[0]).get("type") in ENDS)
    if kind.startswith("application/x-ndjson"):
        last = [line for line in answer.text.splitlines() if line.strip()][-1:]
        return bool(last) and (json.loads(last[0]).get("done") is True or "error" in json.loads(last[0]))
    return True


def check(route: Route, answer: httpx.Response, sent: Any) -> None:
    where = f"{route} with {sent!r:.300}: {answer.status_code} {answer.text[:300]}"
    assert answer.status_code < 500, where
    assert "internal error: " not in answer.text, where  # a crash sent in band, in a stream's error event
    assert stream_ended(answer), f"{where} ... {answer.text[-300:]}"
    if answer.status_code >= 400:
        assert answer.headers["content-type"].startswith(JSON), where
        assert well_formed_error(route.path, answer.json()), where


def send(http: TestClient, route: Route, content: bytes, content_type: str | None = JSON) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return http.request(route.method, route.url, content=content, headers=headers)


DEEP = 100_000
MULTIPART = "multipart/form-data; boundary=b"
BAD_BODIES: list[tuple[str, bytes, str | None]] = [
    ("malformed JSON", b'{"model": "echo", "messages": [{"role": "user", "content": "hi"', JSON),
    ("a list", b'[{"model": "echo", "input": "hi"}]', JSON),
    ("a string", b'"echo"', JSON),
    ("a number", b"42", JSON),
    ("null", b"null", JSON),
    ("invalid UTF-8", b'{"model": "echo", "input": "\xff\xfe\xc3\x28", "prompt": "\xed\xa0\x80"}', JSON),
    ("a lone surrogate", b'{"model": "echo", "input": "a\\ud800", "prompt": "\\udc00", "inputs": "\\ud800"}', JSON),
    ("10^5-deep arrays", b"[" * DEEP + b"]" * DEEP, JSON),
    ("10^5-deep objects", b'{"a":' * DEEP + b"0" + b"}" * DEEP, JSON),
    ("an unclosed 10^5-deep array", b'{"model": "echo", "input": ' + b"[" * DEEP, JSON),
    ("an empty body", b"", JSON),
    ("JSON sent as text/plain", b'{"model": "echo", "input": "hi"}', "text/plain"),
    ("JSON without a content type", b'{"model": "echo", "input": "hi"}', None),
    ("a urlencoded form", b"model=echo&input=hi&prompt=%ff", "application/x-www-form-urlencoded"),
    ("broken multipart", b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc', MULTIPART),
    ("multipart without a boundary", b"--b\r\n\r\n", "multipart/form-data"),
    ("multipart with invalid UTF-8", b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n\xff\xed\xa0\x80'
     b"\r\n--b--\r\n", MULTIPART),
]


def test_every_route_with_a_body_is_enumerated(tmp_path: Path) -> None:
    with serving(tmp_path) as http:
        routes = {r.path: r for r in body_routes(http.get("/openapi.json").json())}
    for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/rerank", "/models/{name}", "/v1/videos", "/api/chat",
                 "/api/embed", "/api/delete", "/v1/messages", "/v1/responses", "/api/compare"):
        assert path in routes, sorted(routes)
    assert {"messages", "model", "role", "content", "arguments"} <= set(routes["/v1/chat/completions"].names)
    assert "assistant" in routes["/v1/chat/completions"].words


def test_bad_bodies_are_4xx_in_each_apis_error_shape(tmp_path: Path) -> None:
    with serving(tmp_path) as http:
        routes = body_routes(http.get("/openapi.json").json())
        for route in routes:
            for what, content, kind in BAD_BODIES:
                answer = send(http, route, content, kind)
                check(route, answer, what)
                if route.fields and what != "JSON without a content type":  # FastAPI reads that as JSON
                    assert 400 <= answer.status_code < 500, f"{route} with {what}: {answer.status_code} {answer.text}"
        after = http.post("/v1/chat/completions", json={"model": "echo", "messages": [
            {"role": "user", "content": "still serving"}]})
    assert after.json()["choices"][0]["message"]["content"] == "still serving"


def test_bodies_over_the_limit_are_413(tmp_path: Path) -> None:
    """Announced by Content-Length past the default limit: 413 before a byte is read. Streamed without a
    length past a configured --max-body: 413 as soon as the route reads past it, FastAPI's own body
    parsing included (it turned any other error there into a 400)."""
    default = ServeOptions().max_body
    with serving(tmp_path) as http:
        for route in body_routes(http.get("/openapi.json").json()):
            answer = http.request(route.method, route.url, content=b"{}",
                                  headers={"content-type": JSON, "content-length": str(default + 1)})
            assert answer.status_code == 413, f"{route}: {answer.status_code} {answer.text}"
            check(route, answer, "Content-Length over the limit")
    limit = 4096
    big = json.dumps({"model": "echo", "input": "x " * limit, "prompt": "y", "messages": [], "inputs": "z"}).encode()
    with serving(tmp_path / "small", max_body=limit) as http:
        for route in body_routes(http.get("/openapi.json").json()):
            chunks = iter([big[i:i + 1000] for i in range(0, len(big), 1000)])  # no Content-Length: chunked
            answer = http.request(route.method, route.url, content=chunks, headers={"content-type": JSON})
            check(route, answer, f"a {len(big)}-byte body streamed past a {limit}-byte limit")
            if route.fields:
                assert answer.status_code == 413, f"{route}: {answer.status_code} {answer.text}"


DEEP_TEXT = "[" * DEEP  # JSON text nested 10^5 deep, inside a string
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(("route", "body"), [
    ("/v1/chat/completions", {"model": "echo", "messages": [  # an earlier call's arguments, sent back
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": DEEP_TEXT}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}]}),
    ("/v1/chat/completions", {"model": "echo", "messages": [{"role": "user", "content": DEEP_TEXT}], "tools": [TOOL]}),
    ("/v1/chat/completions", {"model": "echo", "messages": [{"role": "user", "content": DEEP_TEXT}], "tools": [TOOL],
                              "stream": True}),
    ("/api/chat", {"model": "echo", "messages": [{"role": "user", "content": DEEP_TEXT}], "tools": [TOOL],
                   "stream": False}),
    ("/v1/messages", {"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": DEEP_TEXT}],
                      "tools": [{"name": "f", "input_schema": {"type": "object"}}]}),
    ("/v1/responses", {"model": "echo", "input": DEEP_TEXT,
                       "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]}),
    ("/v1/responses", {"model": "echo", "input": [
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": DEEP_TEXT},
        {"type": "function_call_output", "call_id": "c", "output": "done"}, {"role": "user", "content": "hi"}]}),
], ids=["openai-arguments", "openai-answer", "openai-answer-stream", "ollama-answer", "anthropic-answer",
        "responses-answer", "responses-arguments"])
def test_json_nested_deep_inside_a_string_is_text(tmp_path: Path, route: str, body: dict[str, Any]) -> None:
    """The fake model echoes its prompt, so an answer that looks like the start of a tool call nested 10^5
    deep goes through the tool-call parser; arguments sent back are parsed as JSON where they can be."""
    with serving(tmp_path) as http:
        answer = http.post(route, json=body)
    assert answer.status_code == 200, answer.text[:300]
    assert "internal error" not in answer.text
    assert stream_ended(answer) if body.get("stream") else answer.json(), answer.text[-300:]


def json_values(names: tuple[str, ...], words: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Any JSON value (non-finite floats and big integers too), bounded; object keys are mostly real field
    names, strings sometimes the schema's enum words or a registered model's name."""
    scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=24)
               | st.sampled_from((*MODELS, *words)))
    keys = st.sampled_from(names) | st.text(max_size=8) if names else st.text(max_size=8)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
                        max_leaves=16)


def shaped(schema: Any, route: Route, noise: st.SearchStrategy[Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that follow ``schema`` (its fields, required keys, types, bounds and enums; a ``model`` one of
    the registered models), each node now and then ``noise`` instead: mostly valid bodies, so that the
    generated requests reach the engine, broken in random places."""
    if depth > 12 or not isinstance(schema, dict):
        return noise
    if "$ref" in schema:
        return shaped(route.components[schema["$ref"].rsplit("/", 1)[-1]], route, noise, depth + 1)
    good = _shaped(schema, route, noise, depth)
    return st.sampled_from(range(20)).flatmap(lambda i: noise if i == 19 else good)  # noise one time in 20


def _shaped(schema: dict[str, Any], route: Route, noise: st.SearchStrategy[Any], depth: int) -> st.SearchStrategy[Any]:
    def inner(sub: Any) -> st.SearchStrategy[Any]:
        return shaped(sub, route, noise, depth + 1)

    kind = schema.get("type")
    if "const" in schema or "enum" in schema:
        return st.sampled_from(schema["enum"]) if "enum" in schema else st.just(schema["const"])
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of([inner(alternative) for alternative in schema.get("anyOf") or schema["oneOf"]])
    if kind == "object" or "properties" in schema:
        def field(name: str, sub: Any) -> st.SearchStrategy[Any]:
            return st.sampled_from(MODELS) if name == "model" else inner(sub)
        props, required = schema.get("properties", {}), set(schema.get("required", ()))
        optional = sorted(set(props) - required)
        chosen = st.lists(st.sampled_from(optional), max_size=3, unique=True) if optional else st.just([])
        return chosen.flatmap(lambda keys: st.fixed_dictionaries(  # the required fields and a few others
            {k: field(k, v) for k, v in props.items() if k in required or k in keys}))
    if kind == "array":
        return st.lists(inner(schema.get("items", {})), min_size=min(schema.get("minItems", 0), 2), max_size=3)
    if kind in ("integer", "number"):
        low, high = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum")
        if kind == "integer":
            return st.integers(min_value=None if low is None else math.ceil(low),
                               max_value=None if high is None else math.floor(high))
        return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    simple = {"string": st.text(max_size=20), "boolean": st.booleans(), "null": st.none()}
    return simple.get(str(kind), noise)


def bodies(route: Route) -> st.SearchStrategy[Any]:
    """A route's bodies: shaped by its schema (most), objects of its field names holding anything, and
    any JSON value at all."""
    values = json_values(route.names or ("inputs", "parameters", "model"), route.words)
    fields = route.fields or ("inputs", "parameters", "model", "prompt")  # routes that read their body themselves
    objects = st.fixed_dictionaries({}, optional=dict.fromkeys(fields, values))
    with_model = st.fixed_dictionaries({"model": st.sampled_from(MODELS)},
                                       optional=dict.fromkeys((f for f in fields if f != "model"), values))
    if not route.schema:
        return st.one_of(values, objects, with_model)
    valid = shaped(route.schema, route, values)
    return st.sampled_from(range(10)).flatmap(lambda i: valid if i < 7 else (objects, with_model, values)[i - 7])


def property_for(http: TestClient, route: Route) -> Any:
    """The hypothesis test of one route: a few dozen generated bodies, each answered below 500."""
    @settings(settings.get_profile("corral-bodies"))
    @given(body=bodies(route))
    def generated(body: Any) -> None:
        content = json.dumps(body).encode()  # NaN and Infinity as Python writes them
        check(route, send(http, route, content), body)
    return generated


def test_generated_bodies_never_answer_5xx(tmp_path: Path) -> None:
    with serving(tmp_path) as http:
        for route in body_routes(http.get("/openapi.json").json()):
            for name in MODELS:  # back, in case an earlier example deleted it (DELETE /api/delete)
                register(tmp_path, name, tasks=("embed",) if name == "vec" else ("chat", "complete"))
            property_for(http, route)()


def test_the_sidecar_takes_the_same_lines_and_goes_on(tmp_path: Path) -> None:
    """The other door that parses JSON (`corral sidecar`, NDJSON): a line nested 10^5 deep is a parse error
    (it ended the session, exit 70) and a lone surrogate in the params invalid params; the session goes on."""
    lines = (b"[" * DEEP + b"\n"
             + b'{"jsonrpc": "2.0", "id": 2, "method": "embed", "params": {"model": "vec", "input": "a\\ud800"}}\n'
             + b'{"jsonrpc": "2.0", "id": 3, "method": "no/such/method"}\n')
    env = {**os.environ, "CORRAL_HOME": str(tmp_path / "home"), "CORRAL_CONFIG": str(tmp_path / "none.toml")}
    done = subprocess.run([sys.executable, "-m", "corral", "sidecar"], input=lines, capture_output=True, env=env,
                          timeout=100)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(a["id"], a["error"]["code"]) for a in answers] == [(None, -32700), (2, -32602), (3, -32601)], answers
    assert "nested too deeply" in answers[0]["error"]["message"]
    assert answers[1]["error"]["data"] == {"param": "input"} and "surrogate" in answers[1]["error"]["message"]


HUGE_HEADERS = [
    ("a 100 KB header", {"x-big": "a" * 100_000}),
    ("1000 headers", {f"x-h{i}": "v" for i in range(1000)}),
    ("10 MB of headers", {f"x-h{i}": "v" * 65_536 for i in range(160)}),
]


def test_huge_headers_are_refused_and_the_server_goes_on(tmp_path: Path) -> None:
    """A real `corral serve` (the bound on a request's head is corral's, api/http_protocol.py: uvicorn's
    httptools has none): 431 or a closed connection, never an answer; then ordinary requests are served."""
    srv = Server(tmp_path / "home")
    body = {"model": "nothing-here", "input": "hi"}
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as http:  # kept alive: the huge head follows a request
            for what, headers in HUGE_HEADERS:
                ordinary = http.post("/v1/embeddings", json=body, headers={"x-fine": "a" * 4000})
                assert ordinary.status_code == 404 and "nothing-here" in ordinary.text, (what, ordinary.text)
                try:
                    answer: httpx.Response | None = http.post("/v1/embeddings", json=body, headers=headers)
                except httpx.TransportError:  # the connection was closed: refused too
                    answer = None
                if answer is not None:
                    assert answer.status_code == 431, (what, answer.status_code, answer.text)
                    assert well_formed_error("/v1/embeddings", answer.json())
            assert http.get("/ready").status_code == 200
    finally:
        assert srv.stop() == 0
