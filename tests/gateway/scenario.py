"""One scenario loop for the gateway tests: calls run in order through a runtime, each after an
optional fault is queued on a stand-in, each answered by its chunks or by the CorralError it raised,
then any checks (health) awaited inside the same runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from corral.errors import CorralError
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.runtime import Runtime
from corral.tasks import Task

CALL = CallInfo(Door.CLI, "test")
Fault = tuple[Any, ...]
Call = tuple[str, Task, Any, Fault | None]  # name, task, request, fault queued before the call


def play(runtime: Runtime, calls: Sequence[Call], faults: list[Fault] | None = None,
         checks: Sequence[Callable[[Runtime], Awaitable[Any]]] = ()) -> list[Any]:
    """Each call's chunks (or its error), then each check's result, in order."""

    async def scenario() -> list[Any]:
        out: list[Any] = []
        async with runtime:
            for name, task, request, fault in calls:
                if fault is not None:
                    assert faults is not None, "a fault needs the stand-in's fault queue"
                    faults.append(fault)
                try:
                    out.append([c async for c in runtime.run(task, name, request, CALL)])
                except CorralError as exc:
                    out.append(exc)
            for check in checks:
                out.append(await check(runtime))
        return out

    return asyncio.run(scenario())
