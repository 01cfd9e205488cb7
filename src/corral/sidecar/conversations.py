"""The sidecar's kept conversations (``protocols.conversations``, the same as ``/api/conversations``):
``conversations/create`` {model, system?} -> the conversation; ``conversations/send`` {id, content,
stream?, sampling fields} -> the chat completion object with ``corral.dropped_messages`` (streamed:
``stream/delta`` notifications first, as ``chat`` sends them); ``conversations/get`` {id};
``conversations/list`` {limit?}; ``conversations/delete`` {id}. The store lives in the data folder,
shared with a server and the CLI on the same ``$CORRAL_HOME``; a send claims its conversation there
(a second send meanwhile, from any of them, is a 409 error)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from corral.protocols.conversations import CreateBody, SendBody, start_turn
from corral.runtime.conversations import ConversationStore, not_found
from corral.sidecar.streaming import send_stream, timed

if TYPE_CHECKING:
    from corral.sidecar.methods import Session


class _IdParams(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=100)


class _SendParams(SendBody):
    model_config = ConfigDict(extra="ignore")  # as every sidecar method's params (a client's _meta)
    id: str = Field(min_length=1, max_length=100)


class _ListParams(BaseModel):
    model_config = ConfigDict(extra="ignore")
    limit: int = Field(default=100, ge=1, le=1000)


async def _store(session: Session) -> ConversationStore:
    settings = session.runtime.settings
    return await asyncio.to_thread(ConversationStore, settings.data_dir, settings.runtime.conversation_retention)


class _CreateParams(CreateBody):
    model_config = ConfigDict(extra="ignore")


async def create(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    body = _CreateParams.model_validate(params)
    store = await _store(session)
    return (await asyncio.to_thread(store.create, body.model, body.system)).to_json()


async def send(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    p = _SendParams.model_validate(params)
    body = SendBody.model_validate(p.model_dump(exclude_unset=True, exclude={"id"}))
    started = time.perf_counter()
    turn = await start_turn(session.runtime, await _store(session), p.id, body, session.call("conversations/send"))
    if not body.stream:
        return timed(await turn.response(), started, None)
    from corral.protocols.openai.chat import ChatFold

    try:
        answer, first = await send_stream(session, turn.chunks(include_usage=True), turn.run.settle, ChatFold(),
                                          lambda ch: any(c["delta"].get("content") for c in ch["choices"]))
    finally:
        turn.close()
    return timed({**answer, "corral": turn.corral}, started, first)


async def get(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    cid = _IdParams.model_validate(params).id
    store = await _store(session)
    return (await asyncio.to_thread(store.get, cid)).to_json()


async def listing(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    limit = _ListParams.model_validate(params).limit
    store = await _store(session)
    return {"object": "list", "data": [c.summary() for c in await asyncio.to_thread(store.recent, limit)]}


async def delete(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    cid = _IdParams.model_validate(params).id
    store = await _store(session)
    if not await asyncio.to_thread(store.delete, cid):
        raise not_found(cid)
    return {"id": cid, "object": "conversation", "deleted": True}


METHODS: dict[str, Callable[[Session, dict[str, Any]], Awaitable[Any]]] = {
    "conversations/create": create, "conversations/send": send, "conversations/get": get,
    "conversations/list": listing, "conversations/delete": delete,
}
