"""create_app(settings, runtime): the FastAPI application. No module-level mutable state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from corral.api import admin, errors, openai
from corral.api.guard import Guard, ServerState
from corral.config import Settings
from corral.models.store import Store
from corral.runtime.dispatcher import Dispatcher


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)
    preload: list[str] = field(default_factory=list)
    reap_interval: float = 1.0


@dataclass
class Runtime:
    store: Store
    dispatcher: Dispatcher


def create_app(settings: Settings, runtime: Runtime, options: ServeOptions, state: ServerState) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for name in options.preload:
            await runtime.dispatcher.registry.get(name)
        reaper = asyncio.create_task(_reap(runtime, options.reap_interval))
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            reaper.cancel()
            await runtime.dispatcher.registry.close()
            runtime.dispatcher.log.close()

    app = FastAPI(title="corral", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.settings, app.state.store = settings, runtime.store
    app.state.dispatcher, app.state.server = runtime.dispatcher, state
    errors.install(app)
    app.include_router(openai.router)
    app.include_router(admin.router)
    hosts = [*options.allowed_hosts]
    if options.host not in ("0.0.0.0", "::", ""):
        hosts.append(options.host)
    return Guard(app, allowed_hosts=hosts, api_keys=options.api_keys, state=state)


async def _reap(runtime: Runtime, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):
            await runtime.dispatcher.registry.reap_idle()
