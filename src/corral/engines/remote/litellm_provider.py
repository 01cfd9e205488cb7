"""The long tail of providers (Bedrock, Vertex, Azure, Cohere, ...) through LiteLLM, one optional
provider type (``type = "litellm"``, the ``corral[litellm]`` extra), imported only when such a
provider is used. The upstream id is LiteLLM's own model string (``tail/bedrock/anthropic.claude-3``
-> ``bedrock/anthropic.claude-3``); LiteLLM reads that provider's credentials from the environment
as it documents, and the config's ``api_key`` / ``base_url``, when given, are passed as ``api_key``
/ ``api_base``. LiteLLM's own retries are off (``num_retries=0``: the router is the only retry
loop). Before the import, ``LITELLM_LOCAL_MODEL_COST_MAP`` is set (unless the user set it) so that
importing LiteLLM never fetches its price table from the network. LiteLLM has no call that is free
for every provider, so health cannot check its models without ``--deep``. Without a ``base_url``, an id
on one of LiteLLM's self-hosted routes (``ollama/...``, ``llamafile/...``, ...: a server on this machine
or network, localhost by default) is refused: a request's model name must not choose what corral
connects to."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from corral.engines.remote.base import RemoteError, status_error
from corral.engines.remote.openai_compat import message_json, sampling_arguments
from corral.targets import ProviderSettings
from corral.tasks import ChatRequest, CompletionRequest, EmbedRequest, EmbedResult, Message, Task, TextChunk, Usage

# LiteLLM routes to servers people host themselves (localhost by default, or wherever the call says):
# usable only through a provider whose config names the server (base_url)
SELF_HOSTED = frozenset({"ollama", "ollama_chat", "llamafile", "lemonade", "docker_model_runner", "lm_studio",
                         "hosted_vllm", "vllm", "xinference", "triton", "oobabooga", "petals", "infinity",
                         "langgraph", "langflow", "litellm_proxy", "custom", "custom_openai", "openai_like",
                         "aiohttp_openai"})


def import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


class LiteLLMProvider:
    def __init__(self, name: str, settings: ProviderSettings, base_url: str | None) -> None:
        self.name, self.settings, self.litellm = name, settings, import_litellm()
        self.extra: dict[str, Any] = {"num_retries": 0, "timeout": settings.timeout.total}
        if settings.api_key is not None:
            self.extra["api_key"] = settings.api_key.reveal()
        if base_url is not None:
            self.extra["api_base"] = base_url

    def serves(self) -> frozenset[Task]:
        return frozenset({Task.CHAT, Task.COMPLETE, Task.EMBED})

    def run(self, task: Task, upstream: str, request: Any) -> AsyncIterator[Any]:
        self.check_route(upstream)
        if task is Task.CHAT:
            return self._chat(upstream, [message_json(m) for m in request.messages], request)
        if task is Task.COMPLETE:
            return self._chat(upstream, [message_json(Message("user", request.prompt))], request)
        if task is Task.EMBED:
            return self._embed(upstream, request)
        raise RemoteError(f"provider {self.name} (LiteLLM) cannot {task.value} through corral", status=400)

    async def aclose(self) -> None:
        return None

    def check_route(self, upstream: str) -> None:
        """Refuse an id on a self-hosted LiteLLM route unless the config names the server."""
        if "api_base" in self.extra:
            return
        try:
            route = str(self.litellm.get_llm_provider(upstream)[1])
        except Exception:  # LiteLLM cannot tell: its own call will say why
            route = upstream.partition("/")[0]
        if route in SELF_HOSTED or upstream.partition("/")[0] in SELF_HOSTED:
            raise RemoteError(f"provider {self.name} has no base_url, and {upstream!r} is LiteLLM's {route} route, "
                              "a server on this machine or its network that a request may not choose; refused",
                              f"set base_url for provider {self.name} to that server in the config", status=400)

    async def models(self) -> list[str]:
        raise RemoteError(f"provider {self.name} (LiteLLM) has no free way to list or check its models",
                          "`corral health --deep` sends one tiny request instead", status=501)

    async def _chat(self, upstream: str, messages: list[dict[str, Any]],
                    request: ChatRequest | CompletionRequest) -> AsyncIterator[TextChunk]:
        finish, usage = None, None
        try:
            stream = await self.litellm.acompletion(model=upstream, messages=messages, stream=True,
                                                    stream_options={"include_usage": True},
                                                    **sampling_arguments(request), **self.extra)
            async for event in stream:
                if getattr(event, "usage", None):
                    usage = Usage(event.usage.prompt_tokens or 0, event.usage.completion_tokens or 0)
                for choice in (event.choices or [])[:1]:
                    finish = choice.finish_reason or finish
                    if choice.delta.content:
                        yield TextChunk(choice.delta.content)
        except Exception as exc:
            raise self.failure(exc) from None
        if finish is None:
            raise RemoteError(f"provider {self.name}'s stream ended before the answer finished", status=502,
                              retryable=True)
        yield TextChunk("", finish_reason=finish, usage=usage or Usage())

    async def _embed(self, upstream: str, request: EmbedRequest) -> AsyncIterator[EmbedResult]:
        texts = list(request.texts(f"{self.name}/{upstream}"))
        try:
            answer = await self.litellm.aembedding(model=upstream, input=texts, **self.extra)
        except Exception as exc:
            raise self.failure(exc) from None
        vectors = [item["embedding"] for item in sorted(answer.data, key=lambda d: d["index"])]
        tokens = getattr(answer.usage, "prompt_tokens", 0) or 0 if answer.usage else 0
        yield EmbedResult(vectors, Usage(tokens, 0))

    def failure(self, exc: Exception) -> RemoteError:
        """LiteLLM's exceptions carry the upstream's status (``status_code``) like OpenAI's."""
        if isinstance(exc, RemoteError):
            return exc
        name = type(exc).__name__
        if "Timeout" in name:
            return RemoteError(f"provider {self.name} did not answer in time", status=504, retryable=True)
        if "APIConnectionError" in name or isinstance(exc, (ConnectionError, OSError)):
            return RemoteError(f"provider {self.name} cannot be reached ({name})", status=503, retryable=True)
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and status >= 400:
            return status_error(self.name, status, str(getattr(exc, "message", "") or exc),
                                getattr(getattr(exc, "response", None), "headers", None))
        return RemoteError(f"provider {self.name} failed: {name}: {str(exc)[:300]}", status=502, retryable=True)
