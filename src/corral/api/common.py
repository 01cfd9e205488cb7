"""What every HTTP route needs to reach the runtime: the runtime of the app, the call's identity
(door, route, client), and a primed stream (errors before the first chunk become HTTP statuses)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

from fastapi import Request

from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.runtime import Runtime

T = TypeVar("T")


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def call_info(request: Request, door: Door, route: str, prompt: str | None = None) -> CallInfo:
    client = f"{request.client.host}:{request.client.port}" if request.client else None
    return CallInfo(door, route, client, prompt)


async def primed(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Pull the first item now, so that errors (unknown model, full queue) become HTTP errors."""
    first = await anext(stream)

    async def rest() -> AsyncIterator[T]:
        try:
            yield first
            async for item in stream:
                yield item
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    return rest()
