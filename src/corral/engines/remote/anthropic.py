"""Anthropic providers through the official ``anthropic`` SDK (async client, ``max_retries=0``: the
router is the only retry loop): corral's chat as the Messages API. System messages become the
``system`` prompt; user and assistant turns keep their order, images as base64 blocks; the stream's
``message_start`` gives the input tokens, ``content_block_delta`` the text, ``message_delta`` the
output tokens and the stop reason (``end_turn`` / ``stop_sequence`` -> stop, ``max_tokens`` ->
length). Sampling: the token limit and stop sequences (the 2.x SDK's Messages API takes no
temperature or top_p). An ``overloaded_error`` (status 529, or an ``event: error`` mid-stream) is retryable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from corral.engines.remote.base import RemoteError, status_error, transport_failure
from corral.engines.remote.openai_compat import image_base64
from corral.targets import ProviderSettings
from corral.tasks import ChatRequest, ImagePart, Message, Task, TextChunk, Usage

FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


class AnthropicProvider:
    def __init__(self, name: str, settings: ProviderSettings, base_url: str) -> None:
        import anthropic

        self.name, self.settings = name, settings
        timeout = settings.timeout
        self.client = anthropic.AsyncAnthropic(
            base_url=base_url, api_key=settings.api_key.reveal() if settings.api_key is not None else "none",
            max_retries=0, timeout=anthropic.Timeout(timeout.total, connect=timeout.connect))

    def serves(self) -> frozenset[Task]:
        return frozenset({Task.CHAT})

    def run(self, task: Task, upstream: str, request: Any) -> AsyncIterator[Any]:
        if task is not Task.CHAT:
            raise RemoteError(f"provider {self.name} (Anthropic) only chats; it cannot {task.value}", status=400)
        return self._chat(upstream, request)

    async def aclose(self) -> None:
        await self.client.close()

    async def _chat(self, upstream: str, request: ChatRequest) -> AsyncIterator[TextChunk]:
        arguments = message_arguments(upstream, request)
        prompt_tokens, completion_tokens, finish = 0, 0, None
        try:
            stream = await self.client.messages.create(**arguments, stream=True)
            async with stream:
                async for event in stream:
                    if event.type == "message_start":
                        prompt_tokens = event.message.usage.input_tokens or 0
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        if event.delta.text:
                            yield TextChunk(event.delta.text)
                    elif event.type == "message_delta":
                        completion_tokens = event.usage.output_tokens or completion_tokens
                        finish = FINISH.get(event.delta.stop_reason or "", "stop")
        except Exception as exc:
            raise self.failure(exc) from None
        if finish is None:
            raise RemoteError(f"provider {self.name}'s stream ended before the answer finished", status=502,
                              retryable=True)
        yield TextChunk("", finish_reason=finish, usage=Usage(prompt_tokens, completion_tokens))

    async def models(self) -> list[str]:
        """The model ids (GET /v1/models: free)."""
        try:
            return [m.id async for m in self.client.models.list()]
        except Exception as exc:
            raise self.failure(exc) from None

    def failure(self, exc: Exception) -> RemoteError:
        import anthropic

        if isinstance(exc, RemoteError):
            return exc
        lost = transport_failure(self.name, exc, anthropic.APITimeoutError, anthropic.APIConnectionError)
        if lost is not None:
            return lost
        detail = _detail(exc)
        if "overloaded" in detail:  # 529, or an `event: error` inside a stream (the SDK raises it with the 200)
            return RemoteError(f"provider {self.name} is overloaded: {detail}", "try again later", status=503,
                               retryable=True)
        if isinstance(exc, anthropic.APIStatusError) and exc.status_code >= 300:
            return status_error(self.name, exc.status_code, detail, exc.response.headers)
        return RemoteError(f"provider {self.name} failed mid-answer: {detail[:300]}", status=502, retryable=True)


def _detail(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return f"{error.get('type', '')}: {error.get('message', '')}".strip(": ")
    return str(getattr(exc, "message", "") or exc)


def message_arguments(upstream: str, request: ChatRequest) -> dict[str, Any]:
    """The Messages API's arguments for a corral chat request."""
    sampling = request.sampling
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    turns = [_turn(m) for m in request.messages if m.role != "system"]
    # the Messages API of the SDK corral pins (anthropic 2.x) takes no temperature or top_p: only the
    # token limit and the stop sequences of corral's sampling settings reach it
    out: dict[str, Any] = {"model": upstream, "messages": turns, "max_tokens": sampling.max_tokens}
    if system:
        out["system"] = system
    if sampling.stop:
        out["stop_sequences"] = list(sampling.stop)
    return out


def _turn(message: Message) -> dict[str, Any]:
    role = "assistant" if message.role == "assistant" else "user"  # a tool result reads as the user's
    if not message.images:
        return {"role": role, "content": message.content}
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            blocks.append({"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                       "data": image_base64(part.image)}})
        else:
            blocks.append({"type": "text", "text": part})
    return {"role": role, "content": blocks}
