"""Ollama servers through their native API over httpx: ``/api/chat`` and ``/api/generate`` streamed
as NDJSON (the last line, ``done: true``, carries ``done_reason``, ``prompt_eval_count`` and
``eval_count``), ``/api/embed`` for embeddings, ``/api/tags`` for health (free: it lists the pulled
models). Sampling goes in ``options`` (``num_predict`` is the token limit); images as base64 in a
message's ``images``. A key, if the config gives one (a proxy in front of Ollama), is sent as a
bearer token."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from corral.engines.remote.base import RemoteError, status_error
from corral.engines.remote.openai_compat import image_base64
from corral.targets import ProviderSettings
from corral.tasks import (
    ChatRequest,
    CompletionRequest,
    EmbedRequest,
    EmbedResult,
    Generation,
    Message,
    Task,
    TextChunk,
    Usage,
)

MAX_LINE = 1 << 20  # one NDJSON line of an answer: a chunk of text, never this long


class OllamaProvider:
    def __init__(self, name: str, settings: ProviderSettings, base_url: str) -> None:
        self.name, self.settings = name, settings
        timeout = settings.timeout
        headers = {"Authorization": f"Bearer {settings.api_key.reveal()}"} if settings.api_key is not None else {}
        self.client = httpx.AsyncClient(base_url=base_url, headers=headers, trust_env=False,
                                        timeout=httpx.Timeout(timeout.total, connect=timeout.connect))

    def serves(self) -> frozenset[Task]:
        return frozenset({Task.CHAT, Task.COMPLETE, Task.EMBED})

    def run(self, task: Task, upstream: str, request: Any) -> AsyncIterator[Any]:
        if task is Task.CHAT:
            body = {"model": upstream, "messages": [_message(m) for m in request.messages]}
            return self._stream("/api/chat", body, request, chat=True)
        if task is Task.COMPLETE:
            return self._stream("/api/generate", {"model": upstream, "prompt": request.prompt}, request, chat=False)
        if task is Task.EMBED:
            return self._embed(upstream, request)
        raise RemoteError(f"provider {self.name} (Ollama) cannot {task.value} through corral", status=400)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _stream(self, path: str, body: dict[str, Any], request: ChatRequest | CompletionRequest,
                      chat: bool) -> AsyncIterator[TextChunk]:
        last: dict[str, Any] | None = None
        try:
            async with self.client.stream("POST", path, json={**body, "stream": True,
                                                                "options": options(request)}) as response:
                if response.status_code != 200:
                    raise status_error(self.name, response.status_code, await _error(response), response.headers)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = _line(line)
                    if "error" in event:
                        raise RemoteError(f"provider {self.name} failed mid-answer: {str(event['error'])[:300]}",
                                          status=502, retryable=True)
                    text = (event.get("message") or {}).get("content", "") if chat else event.get("response", "")
                    if text:
                        yield TextChunk(text)
                    if event.get("done"):
                        last = event
        except RemoteError:
            raise
        except httpx.TimeoutException:
            raise RemoteError(f"provider {self.name} did not answer in time", status=504, retryable=True) from None
        except httpx.HTTPError as exc:
            raise RemoteError(f"provider {self.name} cannot be reached ({type(exc).__name__})",
                              "check its base_url and that Ollama runs", status=503, retryable=True) from None
        if last is None:
            raise RemoteError(f"provider {self.name}'s stream ended before the answer finished", status=502,
                              retryable=True)
        finish = "length" if last.get("done_reason") == "length" else "stop"
        yield TextChunk("", finish_reason=finish,
                        usage=Usage(int(last.get("prompt_eval_count") or 0), int(last.get("eval_count") or 0)))

    async def _embed(self, upstream: str, request: EmbedRequest) -> AsyncIterator[EmbedResult]:
        texts = list(request.texts(f"{self.name}/{upstream}"))
        try:
            response = await self.client.post("/api/embed", json={"model": upstream, "input": texts})
        except httpx.HTTPError as exc:
            raise RemoteError(f"provider {self.name} cannot be reached ({type(exc).__name__})", status=503,
                              retryable=True) from None
        if response.status_code != 200:
            raise status_error(self.name, response.status_code, await _error(response), response.headers)
        data = response.json()
        yield EmbedResult(data["embeddings"], Usage(int(data.get("prompt_eval_count") or 0), 0))

    async def models(self) -> list[str]:
        """The pulled models (GET /api/tags: free), each also as its name without ``:latest``."""
        try:
            response = await self.client.get("/api/tags")
        except httpx.HTTPError as exc:
            raise RemoteError(f"provider {self.name} cannot be reached ({type(exc).__name__})", status=503,
                              retryable=True) from None
        if response.status_code != 200:
            raise status_error(self.name, response.status_code, await _error(response), response.headers)
        names = [str(m.get("name")) for m in response.json().get("models", []) if m.get("name")]
        return names + [n.removesuffix(":latest") for n in names if n.endswith(":latest")]


def options(request: Generation) -> dict[str, Any]:
    sampling = request.sampling
    out: dict[str, Any] = {"num_predict": sampling.max_tokens, "temperature": sampling.temperature,
                           "top_p": sampling.top_p}
    if sampling.seed is not None:
        out["seed"] = sampling.seed
    if sampling.top_k is not None:
        out["top_k"] = sampling.top_k
    if sampling.context is not None:
        out["num_ctx"] = sampling.context
    if sampling.stop:
        out["stop"] = list(sampling.stop)
    return out


def _message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.images:
        out["images"] = [image_base64(image) for image in message.images]
    return out


def _line(line: str) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise RemoteError("the Ollama server sent a line longer than 1 MiB", status=502, retryable=True)
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        raise RemoteError(f"the Ollama server sent a line that is not JSON: {line[:80]!r}", status=502,
                          retryable=True) from None
    return event if isinstance(event, dict) else {}


async def _error(response: httpx.Response) -> str:
    raw = (await response.aread())[:2000]
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
    return str(data.get("error", data)) if isinstance(data, dict) else str(data)
