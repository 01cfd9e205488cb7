"""The sidecar's methods: each takes the session and its by-name params and returns the result
object. Generation and embedding take the OpenAI request body fields and answer OpenAI's objects
(``protocols.openai``, the same code as the HTTP door); a stream sends ``stream/delta``
notifications first (``sidecar.streaming``). rerank speaks the Cohere/Jina shape; every other task
(classify_text, classify_tokens, answer_question, translate, summarize, classify_image,
detect_objects, segment_image, describe_image, transcribe: audio as base64 or a data: URL) the
Hugging Face task API's, through
``protocols.hf`` as ``POST /models/{name}`` does; its generation tasks (translate, summarize,
describe_image) stream too. speak takes OpenAI's speech fields (``sidecar.speech``). generate_image and
generate_video (``sidecar.generation``) take the OpenAI images / video fields and send
``notifications/progress`` per diffusion step. Admin methods
answer what the runtime's dataclasses say, as ``/api/ps`` does."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from corral import __version__
from corral.errors import ModelNotFoundError, UsageError
from corral.models.refs import REPO_ID, check_name
from corral.models.system import system_entry
from corral.protocols.openai.chat import ChatFold, start_chat
from corral.protocols.openai.completions import CompletionFold, start_completion
from corral.protocols.openai.embeddings import create_embeddings
from corral.protocols.openai.schemas import ChatCompletionBody, CompletionBody, EmbeddingBody
from corral.runtime.dispatcher import CallInfo, Door
from corral.sidecar.conversations import METHODS as CONVERSATIONS
from corral.sidecar.devices import probe_devices
from corral.sidecar.generation import generate_image, generate_video
from corral.sidecar.speech import speak
from corral.sidecar.streaming import send_stream, stream_generation, timed
from corral.tasks import Task

if TYPE_CHECKING:
    from corral.models.download import PullProgress
    from corral.runtime.runtime import Runtime

PROTOCOL_VERSION = "2026-12-03"


@dataclass
class Session:
    """What a method sees: the runtime, the id of the request it answers, and a thread-safe way to
    send a notification."""

    runtime: Runtime
    request_id: int | str
    notify: Callable[[str, dict[str, Any]], None]

    def call(self, method: str) -> CallInfo:
        return CallInfo(Door.SIDECAR, method, "stdio")


class _Params(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ModelParams(_Params):
    model: str = Field(min_length=1, max_length=300)


class PullParams(ModelParams):
    meta: dict[str, Any] = Field(default_factory=dict, alias="_meta")
    progressToken: int | str | None = None


class ListParams(_Params):
    aliases: bool = True


class LogParams(_Params):
    limit: int = Field(default=20, ge=1, le=1000)


class UsageParams(_Params):
    since: float | None = None  # unix seconds


async def chat(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    body = ChatCompletionBody.model_validate(params)
    started = time.perf_counter()
    run = await start_chat(session.runtime, body, session.call("chat"))
    if not body.stream:
        return timed(await run.response(), started, None)
    answer, first = await send_stream(session, run.chunks(include_usage=True), run.settle, ChatFold(),
                                      lambda ch: any(c["delta"].get("content") for c in ch["choices"]))
    return timed(answer, started, first)


async def complete(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    body = CompletionBody.model_validate(params)
    started = time.perf_counter()
    run = await start_completion(session.runtime, body, session.call("complete"))
    if not body.stream:
        return timed(await run.response(), started, None)
    answer, first = await send_stream(session, run.chunks(include_usage=True), run.settle, CompletionFold(),
                                      lambda ch: any(c["text"] for c in ch["choices"]))
    return timed(answer, started, first)


async def embed(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    return await create_embeddings(session.runtime, EmbeddingBody.model_validate(params), session.call("embed"))


async def rerank(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    from corral.protocols.rerank import RerankBody, create_rerank

    return await create_rerank(session.runtime, RerankBody.model_validate(params), session.call("rerank"))


class HFParams(ModelParams):
    inputs: Any
    parameters: dict[str, Any] = Field(default_factory=dict)
    stream: bool = False


async def hf_task(task: Task, session: Session, params: dict[str, Any]) -> Any:
    """A task in the Hugging Face task API's fields (``model``, ``inputs``, ``parameters``) and
    answer shape, the same code as ``POST /models/{name}``; within the task, the payload picks the
    shape (``candidate_labels``: zero-shot). ``stream`` (the generation tasks: translate,
    summarize, describe_image) sends the text as ``stream/delta`` chunks first; the answer is the
    same."""
    from corral.protocols.hf.tasks import HF_TASKS, choose

    p = HFParams.model_validate(params)
    chosen = HF_TASKS[choose([task.value], {"inputs": p.inputs, "parameters": p.parameters})]
    call = session.call(task.value)
    if not p.stream:
        return await chosen.run(session.runtime, p.model, p.inputs, p.parameters, call)
    if chosen.start is None:
        streamed = sorted({"chat", "complete", *(t.task.value for t in HF_TASKS.values() if t.start)})
        raise UsageError(f"{task.value} does not stream", f"leave out stream; these methods stream: "
                         f"{', '.join(streamed)}")
    return await stream_generation(session, chosen.start(session.runtime, p.model, p.inputs, p.parameters, call))


async def initialize(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    from corral.tasks import TASKS

    engines = session.runtime.engines.values()
    tasks = sorted(t.value for t in TASKS if t.value in METHODS and any(t in e.handlers for e in engines))
    return {"protocolVersion": PROTOCOL_VERSION, "serverInfo": {"name": "corral", "version": __version__},
            "capabilities": {"methods": sorted(METHODS), "tasks": tasks, "devices": probe_devices(),
                             "streaming": True, "cancellation": True, "progress": True}}


async def models_list(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    from corral.models.catalog import alias_rows, model_rows

    p = ListParams.model_validate(params)
    rt = session.runtime
    models = await asyncio.to_thread(model_rows, rt.store)
    aliases = alias_rows(rt.settings, rt.store, {m["name"] for m in models}) if p.aliases else []
    return {"models": models + aliases}


async def models_inspect(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    from corral.models.inspect import inspect_path

    name = check_name(ModelParams.model_validate(params).model)
    rt = session.runtime
    entry = rt.store.get(name)
    target = rt.settings.all_aliases().get(name)
    if entry is None and target is not None:
        entry = rt.store.find_by_source(target) or rt.store.get(target)
    if entry is None:
        entry = system_entry(name)  # a program on this system (espeak-ng)
    if entry is None:
        raise ModelNotFoundError(f"no model named {name!r} is registered", "models/pull it first; models/list "
                                 "shows what is registered")
    info = await asyncio.to_thread(inspect_path, entry.path)
    return {"name": entry.name, **info.to_dict()}


def _pull_reference(session: Session, text: str) -> str:
    """``ORG/NAME`` means the Hugging Face repo unless a model or alias already has that name."""
    rt = session.runtime
    if REPO_ID.match(text) and rt.store.get(text) is None and text not in rt.settings.all_aliases():
        return f"hf:{text}"
    return text


class _Progress:
    """PullProgress events (from download threads) as ``notifications/progress``, increasing only."""

    def __init__(self, session: Session, token: int | str) -> None:
        self.session, self.token, self.sent, self.lock = session, token, -1, threading.Lock()

    def __call__(self, event: PullProgress) -> None:
        with self.lock:
            if event.completed <= self.sent:
                return
            self.sent = event.completed
            self.session.notify("notifications/progress", {"progressToken": self.token, "progress": event.completed,
                                                           "total": event.total, "message": f"pulling {event.repo}"})


async def models_pull(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    p = PullParams.model_validate(params)
    token = p.meta.get("progressToken", p.progressToken)
    progress: Any = _Progress(session, token) if isinstance(token, (int, str)) else False
    entry = await session.runtime.pull(_pull_reference(session, p.model), progress=progress)
    return {"name": entry.name, "source": entry.source, "path": str(entry.path), **entry.info.to_dict()}


async def models_load(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    name = check_name(ModelParams.model_validate(params).model)
    return (await session.runtime.load(name)).to_json()


async def models_unload(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    name = check_name(ModelParams.model_validate(params).model)
    return {"name": name, "unloaded": await session.runtime.unload(name)}


async def models_status(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    return session.runtime.status().to_json()


async def logs(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    from corral.runtime.requestlog import latest

    limit = LogParams.model_validate(params).limit
    rt = session.runtime
    await asyncio.to_thread(rt.log.flush)
    return {"requests": await asyncio.to_thread(latest, rt.log.path, limit)}


async def usage(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    from corral.runtime.requestlog import ledger
    from corral.runtime.requestlog import usage as summarize

    since = UsageParams.model_validate(params).since
    rt = session.runtime
    await asyncio.to_thread(rt.log.flush)
    return {"since": since, "usage": await asyncio.to_thread(summarize, rt.log.path, since),
            "ledger": await asyncio.to_thread(ledger, rt.log.path, since)}


HF_SHAPED = (Task.CLASSIFY_TEXT, Task.CLASSIFY_TOKENS, Task.ANSWER_QUESTION, Task.TRANSLATE, Task.SUMMARIZE,
             Task.CLASSIFY_IMAGE, Task.DETECT_OBJECTS, Task.SEGMENT_IMAGE, Task.DESCRIBE_IMAGE, Task.CLASSIFY_AUDIO,
             Task.CLASSIFY_VIDEO, Task.TRANSCRIBE)
Method = Callable[[Session, dict[str, Any]], Awaitable[Any]]
METHODS: dict[str, Method] = {
    "initialize": initialize, "models/list": models_list, "models/inspect": models_inspect,
    "models/pull": models_pull, "models/load": models_load, "models/unload": models_unload,
    "models/status": models_status, "chat": chat, "complete": complete, "embed": embed, "rerank": rerank,
    **{t.value: functools.partial(hf_task, t) for t in HF_SHAPED}, "speak": speak,
    "generate_image": generate_image, "generate_video": generate_video,
    "logs": logs, "usage": usage, **CONVERSATIONS,
}  # and "shutdown", which the session loop itself answers
