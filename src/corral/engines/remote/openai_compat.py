"""OpenAI-compatible providers (OpenAI, Groq, Together, Fireworks, OpenRouter, DeepSeek, Mistral,
and any server with a ``base_url``: vLLM, TGI, LocalAI, LM Studio, llama.cpp's server, another
corral) over their wire format with httpx: ``POST chat/completions`` and ``completions`` streamed as
SSE with ``include_usage`` (the upstream's own token counts; each ``data:`` line parsed with orjson),
``POST embeddings`` for vectors, ``GET models`` for health (free). No SDK on this path: the
``openai`` SDK's request building cost about 1 ms and its parsed chunks 1.5-2 ms per answer
(benchmarks/README.md, bench_gateway.py), and the router is the only retry loop anyway. Every
failure becomes a :class:`~corral.engines.remote.base.RemoteError` the router can act on; the key
is read from its environment variable when the client is built and only ever sent as a bearer token."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from corral.engines.remote.base import RemoteError, status_error, transport_failure
from corral.targets import ProviderSettings
from corral.tasks import (
    ChatRequest,
    CompletionRequest,
    EmbedRequest,
    EmbedResult,
    ImagePart,
    Message,
    Task,
    TextChunk,
    Usage,
)

MAX_LINE = 1 << 20  # one SSE line of an answer: a chunk of text, never this long
MAX_ERROR = 4000  # bytes of an error body read for its message


class OpenAICompatible:
    """One provider speaking OpenAI's wire format."""

    def __init__(self, name: str, settings: ProviderSettings, base_url: str) -> None:
        self.name, self.settings = name, settings
        timeout = settings.timeout
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.reveal()}"
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers=headers, trust_env=False,
                                        timeout=httpx.Timeout(timeout.total, connect=timeout.connect))

    def serves(self) -> frozenset[Task]:
        return frozenset({Task.CHAT, Task.COMPLETE, Task.EMBED})

    def run(self, task: Task, upstream: str, request: Any) -> AsyncIterator[Any]:
        if task is Task.CHAT:
            body = {"model": upstream, "messages": [message_json(m) for m in request.messages],
                    **sampling_arguments(request)}
            return self._stream("chat/completions", body, chat=True)
        if task is Task.COMPLETE:
            return self._stream("completions", {"model": upstream, "prompt": request.prompt,
                                                **sampling_arguments(request)}, chat=False)
        if task is Task.EMBED:
            return self._embed(upstream, request)
        raise RemoteError(f"provider {self.name} does not run {task.value} through corral",
                          "chat, complete and embed go to OpenAI-compatible providers", status=400)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def models(self) -> list[str]:
        """The upstream's model ids (GET /models: free)."""
        data = await self._json("GET", "models", None)
        return [str(m["id"]) for m in data.get("data") or [] if isinstance(m, dict) and m.get("id")]

    async def _stream(self, path: str, body: dict[str, Any], *, chat: bool) -> AsyncIterator[TextChunk]:
        finish, usage = None, None
        content = orjson.dumps({**body, "stream": True, "stream_options": {"include_usage": True}})
        try:
            async with self.client.stream("POST", path, content=content,
                                          headers={"Accept": "text/event-stream"}) as response:
                if response.status_code != 200:
                    raise status_error(self.name, response.status_code, await _error(response), response.headers)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = self._event(data)
                    if event.get("usage"):
                        usage = Usage(event["usage"].get("prompt_tokens") or 0,
                                      event["usage"].get("completion_tokens") or 0)
                    for choice in (event.get("choices") or [])[:1]:
                        text = ((choice.get("delta") or {}).get("content") if chat else choice.get("text")) or ""
                        finish = choice.get("finish_reason") or finish
                        if text:
                            yield TextChunk(text)
        except httpx.HTTPError as exc:
            raise self.failure(exc) from None
        if finish is None:  # the body ended cleanly but the answer did not: never pass it off as finished
            raise RemoteError(f"provider {self.name}'s stream ended before the answer finished", status=502,
                              retryable=True)
        yield TextChunk("", finish_reason=finish, usage=usage or Usage())

    def _event(self, data: str) -> dict[str, Any]:
        """One SSE event's JSON; an error event (or a line that is none) is a failure mid-answer."""
        try:
            event = orjson.loads(data) if len(data) <= MAX_LINE else None
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            raise RemoteError(f"provider {self.name} sent a stream line that is not a JSON object: {data[:80]!r}",
                              status=502, retryable=True)
        if event.get("error"):
            raise RemoteError(f"provider {self.name} failed mid-answer: {_error_text(event)}", status=502,
                              retryable=True)
        return event

    async def _embed(self, upstream: str, request: EmbedRequest) -> AsyncIterator[EmbedResult]:
        texts = list(request.texts(f"{self.name}/{upstream}"))
        answer = await self._json("POST", "embeddings", {"model": upstream, "input": texts})
        try:
            items = sorted(answer["data"], key=lambda d: int(d["index"]))
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (KeyError, TypeError, ValueError):
            raise RemoteError(f"provider {self.name} answered embeddings in a shape corral does not know",
                              status=502, retryable=True) from None
        tokens = (answer.get("usage") or {}).get("prompt_tokens") or 0
        yield EmbedResult(vectors, Usage(int(tokens), 0))

    async def _json(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One whole JSON answer; a status error, a lost connection or a body that is no JSON object
        as a RemoteError."""
        try:
            response = await self.client.request(method, path, content=orjson.dumps(body) if body else None)
        except httpx.HTTPError as exc:
            raise self.failure(exc) from None
        if response.status_code != 200:
            raise status_error(self.name, response.status_code, await _error(response), response.headers)
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise RemoteError(f"provider {self.name} answered {path} with something other than a JSON object",
                              status=502, retryable=True)
        return data

    def failure(self, exc: httpx.HTTPError) -> RemoteError:
        """The retryable RemoteError for a timeout (504) or a connection lost or refused (503): every
        httpx.HTTPError is one or the other, so the last line is a guard, not a path."""
        lost = transport_failure(self.name, exc, httpx.TimeoutException, httpx.HTTPError)
        return lost or RemoteError(f"provider {self.name} failed: {type(exc).__name__}", status=502, retryable=True)


def _error_text(event: dict[str, Any]) -> str:
    error = event.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:300]


async def _error(response: httpx.Response) -> str:
    """The message of an error answer: OpenAI's ``error.message`` where the body has one."""
    raw = b""
    async for part in response.aiter_bytes():
        raw += part
        if len(raw) >= MAX_ERROR:
            break
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:300].decode("utf-8", "replace")
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)


def sampling_arguments(request: ChatRequest | CompletionRequest) -> dict[str, Any]:
    sampling = request.sampling
    out: dict[str, Any] = {"max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
                           "top_p": sampling.top_p}
    if sampling.seed is not None:
        out["seed"] = sampling.seed
    if sampling.stop:
        out["stop"] = list(sampling.stop)
    if request.json_schema is not None:
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "answer", "schema": request.json_schema, "strict": True}}
    return out


def message_json(message: Message) -> dict[str, Any]:
    """A corral message as OpenAI's: plain text, or text and images (as data URLs) in their order."""
    if not message.images:
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            parts.append({"type": "image_url", "image_url": {"url": data_url(part.image)}})
        else:
            parts.append({"type": "text", "text": part})
    return {"role": message.role, "content": parts}


def image_base64(image: Any) -> str:
    """A decoded image as base64 PNG (what providers take inline)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def data_url(image: Any) -> str:
    return "data:image/png;base64," + image_base64(image)
