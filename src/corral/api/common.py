"""What every HTTP route needs to reach the runtime: the runtime of the app, the call's identity
(door, route, client), and the headers that say which target served it and what it cost."""

from __future__ import annotations

import time

from fastapi import Request

from corral.runtime.dispatcher import CallInfo, Door, Trace
from corral.runtime.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def call_info(request: Request, door: Door, route: str, prompt: str | None = None) -> CallInfo:
    client = f"{request.client.host}:{request.client.port}" if request.client else None
    return CallInfo(door, route, client, prompt)


def trace_headers(trace: Trace, started: float | None = None) -> dict[str, str]:
    """``x-corral-target`` and ``x-corral-attempts`` once a target has answered, ``x-corral-load-ms``
    when the call loaded its model; for a whole answer (``started``: when the route began) also
    ``x-corral-cost-usd`` and, for a remote target, ``x-corral-overhead-ms``: the time corral spent
    besides waiting on upstreams and back-off. A stream's headers go out before its cost is known."""
    headers = {}
    if trace.target is not None:
        headers["x-corral-target"] = trace.target
        headers["x-corral-attempts"] = str(max(1, trace.attempts))
    if trace.load_ms is not None:
        headers["x-corral-load-ms"] = f"{trace.load_ms:.1f}"
    if started is not None and trace.cost_usd is not None:
        headers["x-corral-cost-usd"] = f"{trace.cost_usd:.8f}"
    if started is not None and trace.waited_ms is not None:
        overhead = (time.perf_counter() - started) * 1000 - trace.waited_ms
        headers["x-corral-overhead-ms"] = f"{max(0.0, overhead):.2f}"
    return headers
