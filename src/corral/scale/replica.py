"""One replica of `corral serve --ray`: corral's runtime and HTTP app, built inside a Ray Serve
replica (its own process, on whichever node Ray placed it). Every route of `corral serve` is the
same app; on top of it each response names the replica (``x-corral-replica``), ``/ready`` answers
for the whole deployment (every replica running), and the replica reports itself to the registry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Any

from ray import serve

from corral.scale.plan import REPLICA_HEADER, ReplicaSpec
from corral.scale.registry import find_registry, report_forever


def labelled(app: Any, replica: str) -> Any:
    """``app`` with the ``x-corral-replica`` header on every HTTP response."""
    header = (REPLICA_HEADER.encode(), replica.encode())

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_labelled(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await app(scope, receive, send_labelled)

    return wrapped


def name_of(state: Any) -> str:
    """An enum member of Serve's status ('RUNNING') or the plain string."""
    return str(getattr(state, "value", state))


def deployment_waiting(app_name: str) -> str | None:
    """Why the deployment is not fully up (None when it is), from Serve's public status."""
    return waiting_reason(serve.status().applications.get(app_name))


def waiting_reason(app: Any) -> str | None:
    """None when every replica of every deployment of ``app`` (an ``ApplicationStatusOverview``, or
    None when not deployed) is running; else what is still missing."""
    if app is None:
        return "the application is not deployed yet"
    if name_of(app.status) != "RUNNING":
        return f"the application is {name_of(app.status).lower()}"
    for name, deployment in app.deployments.items():
        waiting = {name_of(state).lower(): count for state, count in deployment.replica_states.items()
                   if name_of(state) != "RUNNING" and count}
        if name_of(deployment.status) != "HEALTHY" or waiting:
            detail = ", ".join(f"{n} {state}" for state, n in waiting.items()) or name_of(deployment.status).lower()
            return f"deployment {name}: {detail}"
    return None


class CorralReplica:
    """The deployment's class; Ray builds one per replica with the :class:`ReplicaSpec`."""

    def __init__(self, spec: ReplicaSpec) -> None:
        from corral.api.app import ServeOptions, create_app
        from corral.api.guard import ServerState
        from corral.models.store import Store
        from corral.runtime.runtime import RuntimeOptions, build_runtime

        settings, server = spec.settings, spec.settings.server
        level = logging.getLevelName(server.log_level.upper())
        logging.basicConfig(stream=sys.stderr, level=max(level, logging.WARNING),
                            format="corral: %(levelname)s %(name)s: %(message)s")
        logging.getLogger("corral").setLevel(level)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.runtime = build_runtime(settings, Store(settings.manifest_path),
                                     RuntimeOptions.from_settings(settings, spec.load))
        app_name = spec.app_name
        state = ServerState(peers=lambda: asyncio.to_thread(deployment_waiting, app_name))
        app = create_app(self.runtime, ServeOptions(host=server.host, port=server.port, api_keys=server.api_keys,
                                                    allowed_hosts=server.allowed_hosts, max_body=server.max_body),
                         state)
        self.asgi = labelled(app, self.replica)
        self.reporter: asyncio.Task[None] | None = None

    async def __serve_build_asgi_app__(self) -> Any:
        self.reporter = asyncio.create_task(report_forever(self.replica, self.runtime.status))
        return self.asgi

    async def __del__(self) -> None:
        reporter, replica = getattr(self, "reporter", None), getattr(self, "replica", None)
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(BaseException):
                await reporter
        if replica is None:
            return
        with contextlib.suppress(Exception):
            registry = find_registry()
            if registry is not None:
                await registry.leave.remote(replica)


Replica = serve.ingress()(CorralReplica)
