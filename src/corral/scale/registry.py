"""The registry: one named Ray actor that every replica reports to (its pid, node, memory and loaded
models, every few seconds), and that `corral ray status` reads. Owned by the `corral serve --ray`
process, so it goes when that process does. A replica that stops reporting (killed, its node gone)
drops out after :data:`STALE_AFTER` seconds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from corral.scale.plan import NAMESPACE, REGISTRY

REPORT_EVERY = 2.0
STALE_AFTER = 3 * REPORT_EVERY


class Registry:
    """The actor's state: replica id -> its last report."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def report(self, replica: str, info: dict[str, Any]) -> None:
        self.rows[replica] = {**info, "replica": replica, "seen": time.time()}

    def leave(self, replica: str) -> None:
        self.rows.pop(replica, None)

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.time()
        self.rows = {k: v for k, v in self.rows.items() if now - v["seen"] <= STALE_AFTER}
        return sorted(self.rows.values(), key=lambda row: (row.get("node", ""), row["replica"]))


def create_registry() -> Any:
    """Start the registry actor (no CPU reserved); an existing one of the same name is replaced."""
    import ray

    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(REGISTRY, namespace=NAMESPACE))
    actor = ray.remote(num_cpus=0)(Registry).options(name=REGISTRY, namespace=NAMESPACE)
    return actor.remote()


def find_registry() -> Any | None:
    import ray

    try:
        return ray.get_actor(REGISTRY, namespace=NAMESPACE)
    except ValueError:
        return None


def replica_info(status: Callable[[], Any]) -> dict[str, Any]:
    """What a replica reports: pid, node address, resident memory, loaded models (``status`` is the
    runtime's)."""
    import psutil
    import ray.util

    util: Any = ray.util
    now = status()
    return {"pid": os.getpid(), "node": util.get_node_ip_address(), "rss_bytes": psutil.Process().memory_info().rss,
            "models": [m.to_json() for m in now.models]}


async def report_forever(replica: str, status: Callable[[], Any]) -> None:
    """Report every :data:`REPORT_EVERY` seconds until cancelled; a registry that is gone (corral serve
    stopping) is looked up again next time."""
    registry = None
    while True:
        try:
            registry = registry or find_registry()
            if registry is not None:
                await registry.report.remote(replica, replica_info(status))
        except Exception:  # the registry is best effort: serving goes on without it
            registry = None
        await asyncio.sleep(REPORT_EVERY)
