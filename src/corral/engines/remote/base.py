"""What every remote provider shares: the error a failed upstream call becomes (with what the router
needs to decide: retry, fall back, or answer at once), and the interface a provider implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from corral.errors import CorralError
from corral.tasks import Task

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})  # 529: Anthropic overloaded


class RemoteError(CorralError):
    """An upstream call that failed. ``retryable``: worth retrying and falling back (a connect error,
    a timeout, 408/409/429/5xx, overloaded); ``too_long``: the prompt does not fit the upstream model
    (the alias's context fallback may take it); ``retry_after``: seconds the upstream asked to wait."""

    def __init__(self, message: str, hint: str | None = None, *, status: int = 502, retryable: bool = False,
                 retry_after: float | None = None, too_long: bool = False) -> None:
        super().__init__(message, hint)
        self.http_status, self.retryable, self.retry_after, self.too_long = status, retryable, retry_after, too_long


class Provider(Protocol):
    """One configured provider: runs a task on one of its upstream models."""

    name: str

    def serves(self) -> frozenset[Task]: ...

    def run(self, task: Task, upstream: str, request: Any) -> AsyncIterator[Any]:
        """The chunks of a streaming task (TextChunk, the last with usage), or the one result of
        another task; RemoteError for any failure, before or during the stream."""
        ...

    async def models(self) -> list[str]:
        """The upstream's model ids, through a call the provider bills nothing for (health and
        ``corral list --remote`` use it)."""
        ...

    async def aclose(self) -> None: ...


def retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header (a number; an HTTP date is not honoured: None)."""
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def status_error(provider: str, status: int, detail: str, headers: Any = None) -> RemoteError:
    """The RemoteError for an upstream HTTP status: retryable ones as such; the upstream refusing
    corral's key is the server's problem (502), not the caller's; 404 and 400 pass through."""
    detail = detail[:300]
    if status in RETRYABLE_STATUS:
        return RemoteError(f"provider {provider} answered {status}: {detail}", "try again later",
                           status=503 if status != 429 else 429, retryable=True, retry_after=retry_after(headers))
    if status in (401, 403):
        return RemoteError(f"provider {provider} refused corral's credentials ({status}): {detail}",
                           f"check the api_key the config gives provider {provider}", status=502)
    if status == 404:
        return RemoteError(f"provider {provider} has no such model ({status}): {detail}",
                           f"list its models with `corral list --remote {provider}`", status=404)
    too_long = status == 400 and any(w in detail.lower() for w in ("context length", "context_length",
                                                                    "too long", "maximum context"))
    return RemoteError(f"provider {provider} refused the request ({status}): {detail}", status=400 if status < 500
                       else 502, too_long=too_long)


def transport_failure(provider: str, exc: Exception, timeout: type[Exception],
                      connection: type[Exception]) -> RemoteError | None:
    """The retryable RemoteError for an SDK's timeout (504) or connection error (503; the SDKs'
    timeout class is a kind of connection error, so it is checked first), else None."""
    if isinstance(exc, timeout):
        return RemoteError(f"provider {provider} did not answer in time", "try again later", status=504,
                           retryable=True)
    if isinstance(exc, connection):
        cause = type(exc.__cause__ or exc).__name__
        return RemoteError(f"provider {provider} cannot be reached ({cause})", "check its base_url and that it is up",
                           status=503, retryable=True)
    return None
