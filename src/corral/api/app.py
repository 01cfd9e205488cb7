"""create_app(runtime, options, state): the FastAPI application. No module-level mutable state."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request

from corral.api import (
    admin,
    anthropic,
    compare,
    conversations,
    errors,
    hf,
    manage,
    ollama,
    ollama_admin,
    openai,
    progress,
    rerank,
    responses,
    ui,
)
from corral.api.departure import Departures
from corral.api.guard import Guard, ServerState
from corral.runtime.runtime import Runtime
from corral.wire import check_text


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)
    max_body: int = 64 * 1024 * 1024


def _response_store(runtime: Runtime) -> Any:
    """The kept /v1/responses answers, when the server was started with --store-responses."""
    server = runtime.settings.server
    if not server.store_responses:
        return None
    from corral.runtime.stored_responses import ResponseStore

    return ResponseStore(runtime.settings.data_dir, server.response_retention)


async def unicode_body(request: Request) -> None:
    """Every route's dependency: a JSON body is valid Unicode text (no lone surrogate) before the route
    or its body model reads it. The parse is the one FastAPI made (Starlette keeps it); a body that
    does not parse is left to the route, which answers it."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if (kind and kind != "application/json" and not kind.endswith("+json")) or not await request.body():
        return  # no JSON (a body without a content type may be: FastAPI and the HF routes read it so)
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        return
    check_text(body)


def create_app(runtime: Runtime, options: ServeOptions, state: ServerState) -> Any:
    """The HTTP door over ``runtime``: its lifespan is the runtime's ``async with``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime:
            from corral.protocols.openai.videos import VideoJobs

            app.state.videos = VideoJobs(runtime)  # text-to-video jobs: rows and files under the data folder
            app.state.responses = _response_store(runtime)
            state.ready = True
            try:
                yield
            finally:
                state.ready = False
                await app.state.videos.close()
                if app.state.responses is not None:
                    app.state.responses.close()

    app = FastAPI(title="corral", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None,
                  dependencies=[Depends(unicode_body)])
    app.state.runtime, app.state.server = runtime, state
    app.state.background = set()  # work a client started and may leave before it ends (a pull)
    errors.install(app)
    app.include_router(openai.router)
    app.include_router(rerank.router)
    app.include_router(hf.router)
    app.include_router(admin.router)
    app.include_router(manage.router)
    app.include_router(compare.router)
    app.include_router(progress.router)
    app.include_router(ui.router)
    app.include_router(ollama.router)
    app.include_router(ollama_admin.router)
    app.include_router(anthropic.router)
    app.include_router(responses.router)
    app.include_router(conversations.router)
    hosts = [*options.allowed_hosts]
    if options.host not in ("0.0.0.0", "::", ""):
        hosts.append(options.host)
    watched = Departures(app, send_timeout=runtime.options.stall_timeout)
    return Guard(watched, allowed_hosts=hosts, api_keys=options.api_keys, state=state, max_body=options.max_body)
