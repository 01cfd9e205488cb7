"""What every HTTP route needs to reach the runtime: the runtime of the app and the call's identity
(door, route, client)."""

from __future__ import annotations

from fastapi import Request

from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def call_info(request: Request, door: Door, route: str, prompt: str | None = None) -> CallInfo:
    client = f"{request.client.host}:{request.client.port}" if request.client else None
    return CallInfo(door, route, client, prompt)
