"""Conversations the runtime keeps (``protocols.conversations``), for apps that hold no history:
``POST /api/conversations`` (201, the conversation), ``POST /api/conversations/{id}/messages``
(answered as ``/v1/chat/completions`` answers: the chat completion object, or SSE chunks and
``[DONE]``; ``x-corral-dropped-messages`` and ``corral.dropped_messages`` say how many of the oldest
messages the prompt left out), ``GET /api/conversations[/{id}]``, ``DELETE /api/conversations/{id}``.
Calls are logged with door ``admin``; the store opens on first use (``conversations.db`` in the data
folder)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from corral.api.common import call_info, runtime_of, trace_headers
from corral.api.sse import EventStream, sse_events
from corral.protocols.conversations import CreateBody, SendBody, Turn, start_turn
from corral.runtime.conversations import ConversationStore, not_found
from corral.runtime.dispatcher import Door

router = APIRouter()
ROUTE = "/api/conversations"
DROPPED = "x-corral-dropped-messages"


async def store_of(request: Request) -> ConversationStore:
    """The app's store, opened on first use (a test may set ``app.state.conversations`` first)."""
    store: ConversationStore | None = getattr(request.app.state, "conversations", None)
    if store is None:
        settings = runtime_of(request).settings
        store = await asyncio.to_thread(ConversationStore, settings.data_dir,
                                        settings.runtime.conversation_retention)
        request.app.state.conversations = store
    return store


class _TurnStream(EventStream):
    """The turn's events; its claim is released however the response ends (also unstarted)."""

    def __init__(self, events: AsyncIterator[str], headers: dict[str, str], turn: Turn) -> None:
        super().__init__(events, headers)
        self._turn = turn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._turn.close()


@router.post(ROUTE, status_code=201)
async def create(body: CreateBody, request: Request) -> dict[str, Any]:
    store = await store_of(request)
    return (await asyncio.to_thread(store.create, body.model, body.system)).to_json()


@router.get(ROUTE)
async def listing(request: Request, limit: int = Query(default=100, ge=1, le=1000)) -> dict[str, Any]:
    store = await store_of(request)
    return {"object": "list", "data": [c.summary() for c in await asyncio.to_thread(store.recent, limit)]}


@router.get(ROUTE + "/{conversation_id}")
async def retrieve(conversation_id: str, request: Request) -> dict[str, Any]:
    store = await store_of(request)
    return (await asyncio.to_thread(store.get, conversation_id)).to_json()


@router.delete(ROUTE + "/{conversation_id}")
async def delete(conversation_id: str, request: Request) -> dict[str, Any]:
    store = await store_of(request)
    if not await asyncio.to_thread(store.delete, conversation_id):
        raise not_found(conversation_id)
    return {"id": conversation_id, "object": "conversation", "deleted": True}


@router.post(ROUTE + "/{conversation_id}/messages", response_model=None)
async def send(conversation_id: str, body: SendBody, request: Request) -> Response:
    route = ROUTE + "/{id}/messages"  # the log's and the metrics' route: the template, never an id
    started, call = time.perf_counter(), call_info(request, Door.ADMIN, route)
    turn = await start_turn(runtime_of(request), await store_of(request), conversation_id, body, call)
    dropped = {DROPPED: str(turn.skipped)}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _TurnStream(sse_events(turn.chunks(include_usage)), {**trace_headers(call.trace), **dropped}, turn)
    answer = await turn.response()
    return JSONResponse(answer, headers={**trace_headers(call.trace, started), **dropped})
