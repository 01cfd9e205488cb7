"""Conversations the runtime keeps, for the doors that serve them (HTTP ``/api/conversations``, the
sidecar's ``conversations/*``): the request bodies, and a turn: the kept conversation plus the new
user message become an OpenAI chat body and run through the chat door's own code
(``protocols.openai.chat``), so the answer is a ``chat.completion`` object or its chunks, with
``corral: {conversation, dropped_messages}`` added (on the last chunk of a stream).

A turn claims its conversation first (a second send meanwhile: 409) and stores the exchange only
once the answer is whole (a failed or cancelled answer stores nothing), before the last chunk goes
out. A prompt the model's context cannot hold is retried with the oldest exchange left out, and
again, from where the conversation's window last started (``runtime.conversations``); the system
prompt and the new message are never left out. Each retry fails at tokenisation, before the model
reads anything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from corral.errors import CorralError
from corral.protocols.openai.chat import ChatFold, ChatRun, start_chat
from corral.protocols.openai.schemas import ChatCompletionBody, Stop, StreamOptions
from corral.protocols.upstream import NoUpstreamChoice
from corral.runtime.conversations import (
    Claim,
    Conversation,
    ConversationStore,
    prompt_messages,
    too_long,
    widen,
)

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime


class _Body(NoUpstreamChoice, BaseModel):
    model_config = ConfigDict(extra="forbid")  # corral's own API: a misspelt field is an error, not ignored


class CreateBody(_Body):
    model: str = Field(min_length=1, max_length=300)  # a model, an alias or a preset (MODEL@MODE)
    system: str | None = None  # the persona: the system prompt of every turn


class SendBody(_Body):
    """One user message and the sampling of its answer (the chat completion fields of that name)."""

    content: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: Stop = None
    seed: int | None = None

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: Stop) -> Stop:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value


def chat_body(conversation: Conversation, body: SendBody, skipped: int) -> ChatCompletionBody:
    """The chat completion the turn asks for: only the fields the client set, so a preset's
    defaults fill the others as on the chat door."""
    sampling = body.model_dump(exclude_unset=True, exclude_none=True, exclude={"content"})
    return ChatCompletionBody.model_validate({"model": conversation.model,
                                              "messages": prompt_messages(conversation, skipped, body.content),
                                              **sampling})


@dataclass
class Turn:
    """A send under way: its conversation claimed, its chat started. Read it once, as
    :meth:`response` or as :meth:`chunks`; :meth:`close` releases the claim (idempotent)."""

    store: ConversationStore
    claim: Claim
    conversation: Conversation
    content: str
    run: ChatRun
    skipped: int  # the oldest messages this prompt left out

    @property
    def corral(self) -> dict[str, Any]:
        return {"conversation": self.conversation.id, "dropped_messages": self.skipped}

    async def _keep(self, answer: dict[str, Any]) -> None:
        text = answer["choices"][0]["message"]["content"] or ""
        await asyncio.to_thread(self.store.append, self.claim, self.content, text, self.skipped)

    async def response(self) -> dict[str, Any]:
        try:
            answer = await self.run.response()
            await self._keep(answer)
        finally:
            self.close()
        return {**answer, "corral": self.corral}

    async def chunks(self, include_usage: bool) -> AsyncGenerator[dict[str, Any], None]:
        """The chat's chunks, each held back until the next one came: the answer is stored before
        the last one goes out, with ``corral`` added to it."""
        fold, held = ChatFold(), None
        try:
            async with contextlib.aclosing(self.run.chunks(include_usage)) as chunks:
                async for chunk in chunks:
                    fold.add(chunk)
                    if held is not None:
                        yield held
                    held = chunk
            await self._keep(fold.result())
            if held is not None:
                yield {**held, "corral": self.corral}
        finally:
            self.close()

    def close(self) -> None:
        self.claim.release()


async def _fitted(runtime: Runtime, conversation: Conversation, body: SendBody,
                  call: CallInfo) -> tuple[ChatRun, int]:
    """The chat started with as much history as the model's context takes (one exchange fewer each
    try, from the window's last start): (the run, the messages left out)."""
    skipped = min(conversation.skipped, len(conversation.messages))
    while True:
        try:
            return await start_chat(runtime, chat_body(conversation, body, skipped), call), skipped
        except CorralError as exc:
            wider = widen(skipped, len(conversation.messages))
            if not too_long(exc) or wider is None:
                raise
            skipped = wider


async def start_turn(runtime: Runtime, store: ConversationStore, conversation_id: str, body: SendBody,
                     call: CallInfo) -> Turn:
    """Claim the conversation and start its answer; errors before generation (unknown conversation
    or model, busy conversation, a message that alone overflows the context) are raised here."""
    claim = await asyncio.to_thread(store.claim, conversation_id)
    try:
        conversation = await asyncio.to_thread(store.get, conversation_id)
        run, skipped = await _fitted(runtime, conversation, body, call)
    except BaseException:
        claim.release()
        raise
    return Turn(store, claim, conversation, body.content, run, skipped)
