"""OpenAI-compatible providers (OpenAI, Groq, Together, Fireworks, OpenRouter, DeepSeek, Mistral,
and any server with a ``base_url``: vLLM, TGI, LocalAI, LM Studio, llama.cpp's server, another
corral) through the official ``openai`` SDK: its async client with ``max_retries=0`` (the router is
the only retry loop) and the provider's connect / total timeouts. Chat and completions stream with
``include_usage`` (the upstream's own token counts; the SSE lines read through the SDK's streaming
response and parsed with orjson); embeddings come back as vectors. Every SDK
failure becomes a :class:`~corral.engines.remote.base.RemoteError` the router can act on; the key
is read from its environment variable when the client is built and never leaves the SDK."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

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

NO_KEY = "none"  # the SDK wants some key; servers without auth ignore it


class OpenAICompatible:
    """One provider speaking OpenAI's wire format."""

    def __init__(self, name: str, settings: ProviderSettings, base_url: str) -> None:
        import openai

        self.name, self.settings = name, settings
        timeout = settings.timeout
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key=settings.api_key.reveal() if settings.api_key is not None else NO_KEY,
            max_retries=0, timeout=openai.Timeout(timeout.total, connect=timeout.connect))

    def serves(self) -> frozenset[Task]:
        return frozenset({Task.CHAT, Task.COMPLETE, Task.EMBED})

    def run(self, task: Task, upstream: str, request: Any) -> AsyncIterator[Any]:
        if task is Task.CHAT:
            return self._chat(upstream, request)
        if task is Task.COMPLETE:
            return self._complete(upstream, request)
        if task is Task.EMBED:
            return self._embed(upstream, request)
        raise RemoteError(f"provider {self.name} does not run {task.value} through corral",
                          "chat, complete and embed go to OpenAI-compatible providers", status=400)

    async def aclose(self) -> None:
        await self.client.close()

    async def models(self) -> list[str]:
        """The upstream's model ids (GET /models: free)."""
        try:
            return [m.id async for m in self.client.models.list()]
        except Exception as exc:
            raise self.failure(exc) from None

    async def _chat(self, upstream: str, request: ChatRequest) -> AsyncIterator[TextChunk]:
        arguments = {"model": upstream, "messages": [message_json(m) for m in request.messages],
                     **sampling_arguments(request)}
        async for chunk in self._stream(self.client.chat.completions, arguments, chat=True):
            yield chunk

    async def _complete(self, upstream: str, request: CompletionRequest) -> AsyncIterator[TextChunk]:
        arguments = {"model": upstream, "prompt": request.prompt, **sampling_arguments(request)}
        async for chunk in self._stream(self.client.completions, arguments, chat=False):
            yield chunk

    async def _stream(self, resource: Any, arguments: dict[str, Any], *, chat: bool) -> AsyncIterator[TextChunk]:
        """The SDK sends the request (auth, headers, status errors); its SSE lines are read raw and
        parsed with orjson: building the SDK's pydantic chunk objects cost 1.5-2 ms per answer here."""
        finish, usage = None, None
        try:
            async with resource.with_streaming_response.create(
                    **arguments, stream=True, stream_options={"include_usage": True}) as response:
                async for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = orjson.loads(data)
                    if event.get("error"):
                        raise RemoteError(f"provider {self.name} failed mid-answer: {_error_text(event)}",
                                          status=502, retryable=True)
                    if event.get("usage"):
                        usage = Usage(event["usage"].get("prompt_tokens") or 0,
                                      event["usage"].get("completion_tokens") or 0)
                    for choice in (event.get("choices") or [])[:1]:
                        text = ((choice.get("delta") or {}).get("content") if chat else choice.get("text")) or ""
                        finish = choice.get("finish_reason") or finish
                        if text:
                            yield TextChunk(text)
        except Exception as exc:
            raise self.failure(exc) from None
        if finish is None:  # the body ended cleanly but the answer did not: never pass it off as finished
            raise RemoteError(f"provider {self.name}'s stream ended before the answer finished", status=502,
                              retryable=True)
        yield TextChunk("", finish_reason=finish, usage=usage or Usage())

    async def _embed(self, upstream: str, request: EmbedRequest) -> AsyncIterator[EmbedResult]:
        try:
            answer = await self.client.embeddings.create(model=upstream, input=list(request.inputs))
        except Exception as exc:
            raise self.failure(exc) from None
        vectors = [item.embedding for item in sorted(answer.data, key=lambda d: d.index)]
        tokens = answer.usage.prompt_tokens if answer.usage is not None else 0
        yield EmbedResult(vectors, Usage(tokens, 0))

    def failure(self, exc: Exception) -> RemoteError:
        """The RemoteError for anything the SDK raised."""
        import openai

        if isinstance(exc, RemoteError):
            return exc
        if (lost := transport_failure(self.name, exc, openai.APITimeoutError, openai.APIConnectionError)) is not None:
            return lost
        if isinstance(exc, openai.APIStatusError):
            return status_error(self.name, exc.status_code, _detail(exc), exc.response.headers)
        if isinstance(exc, openai.APIError):  # an error event inside a stream, or a malformed one
            return RemoteError(f"provider {self.name} failed mid-answer: {str(exc)[:300]}", status=502, retryable=True)
        return RemoteError(f"provider {self.name} failed: {type(exc).__name__}", status=502, retryable=True)


def _error_text(event: dict[str, Any]) -> str:
    error = event.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:300]


def _detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str):
            return message
    return str(getattr(exc, "message", "") or exc)


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
