"""OpenAI's Responses API: ``POST /v1/responses`` (a ``response`` object, or SSE with the typed
Responses events when ``stream``), over the same runtime as every door (logged with door
``responses``). A server started with ``--store-responses`` keeps each response with its
conversation (``runtime.stored_responses``) so ``previous_response_id`` continues it, and serves
``GET`` / ``DELETE /v1/responses/{id}``; without the flag nothing is kept (``store`` reads false) and
``previous_response_id`` is a 400 naming the flag."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from corral.api.common import call_info, runtime_of, trace_headers
from corral.api.sse import EventStream, typed_event
from corral.errors import CorralError
from corral.protocols.openai.chat import start_chat
from corral.protocols.responses.run import chat_body, conversation, events, response, turn_of
from corral.protocols.responses.schemas import ResponsesBody
from corral.runtime.dispatcher import Door
from corral.runtime.stored_responses import ResponseStore

log = logging.getLogger("corral.api")
router = APIRouter()
ROUTE = "/v1/responses"


class ResponseNotFoundError(CorralError):
    http_status = 404


class NotKeptError(CorralError):
    """previous_response_id on a server that keeps no responses."""

    http_status = 400


def _store(request: Request) -> ResponseStore | None:
    store: ResponseStore | None = getattr(request.app.state, "responses", None)
    return store


async def _previous(store: ResponseStore | None, response_id: str | None) -> list[dict[str, Any]] | None:
    if not response_id:
        return None
    if store is None:
        raise NotKeptError("previous_response_id: this server keeps no responses",
                           "start corral serve with --store-responses, or send the whole conversation as input items")
    messages = await asyncio.to_thread(store.messages, response_id)
    if messages is None:
        raise ResponseNotFoundError(f"no response {response_id[:100]!r} is kept here (unknown, deleted, or older "
                                    "than --response-retention)", "send the whole conversation as input items")
    return messages


async def _sse(items: AsyncIterator[dict[str, Any]], keep: Any) -> AsyncIterator[str]:
    try:
        async for item in items:
            if item["type"] in ("response.completed", "response.incomplete"):
                await keep(item["response"])
            yield typed_event(item)
    except Exception as exc:  # not a corral error (events() turns those into response.failed)
        log.exception("a Responses stream failed")
        failure = {"type": "error", "code": "server_error", "message": f"internal error: {type(exc).__name__}",
                   "param": None, "sequence_number": 0}
        yield typed_event(failure)
    finally:
        await items.aclose()  # type: ignore[attr-defined]


@router.post(ROUTE, response_model=None)
async def create(body: ResponsesBody, request: Request) -> Response:
    store = _store(request)
    messages = conversation(body, await _previous(store, body.previous_response_id))
    stored = store is not None and body.store is not False
    call = call_info(request, Door.RESPONSES, ROUTE)
    run = await start_chat(runtime_of(request), chat_body(body, messages), call)

    async def keep(answer: dict[str, Any]) -> None:
        if stored and store is not None:
            await asyncio.to_thread(store.put, answer, [*messages, turn_of(answer["output"])])

    if body.stream:
        return EventStream(_sse(events(body, run.chunks(True), stored), keep), trace_headers(call.trace))
    answer = response(body, await run.response(), stored)
    await keep(answer)
    return JSONResponse(answer, headers=trace_headers(call.trace))


def _kept(request: Request) -> ResponseStore:
    store = _store(request)
    if store is None:
        raise ResponseNotFoundError("this server keeps no responses", "start corral serve with --store-responses")
    return store


@router.get(ROUTE + "/{response_id}")
async def retrieve(response_id: str, request: Request) -> dict[str, Any]:
    found = await asyncio.to_thread(_kept(request).response, response_id)
    if found is None:
        raise ResponseNotFoundError(f"no response {response_id[:100]!r} is kept here")
    return found


@router.delete(ROUTE + "/{response_id}")
async def delete(response_id: str, request: Request) -> dict[str, Any]:
    if not await asyncio.to_thread(_kept(request).delete, response_id):
        raise ResponseNotFoundError(f"no response {response_id[:100]!r} is kept here")
    return {"id": response_id, "object": "response", "deleted": True}
