"""What every HTTP route needs to reach the runtime: the runtime of the app, the call's identity
(door, route, client), and the headers that say which target served it and what it cost."""

from __future__ import annotations

from fastapi import Request

from corral.runtime.dispatcher import CallInfo, Door, Trace
from corral.runtime.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def call_info(request: Request, door: Door, route: str, prompt: str | None = None) -> CallInfo:
    client = f"{request.client.host}:{request.client.port}" if request.client else None
    return CallInfo(door, route, client, prompt)


def trace_headers(trace: Trace) -> dict[str, str]:
    """``x-corral-target`` and ``x-corral-attempts`` once a target has answered; ``x-corral-cost-usd``
    once the call is priced (a whole answer: a stream's headers go out before its cost is known)."""
    headers = {}
    if trace.target is not None:
        headers["x-corral-target"] = trace.target
        headers["x-corral-attempts"] = str(max(1, trace.attempts))
    if trace.cost_usd is not None:
        headers["x-corral-cost-usd"] = f"{trace.cost_usd:.8f}"
    return headers
