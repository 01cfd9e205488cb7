"""OpenAI embeddings in corral's terms, for every door: inputs checked, one runtime call (batched
with concurrent ones by the runtime), OpenAI's list with numpy rows (``wire.dumps`` writes them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.protocols.openai.schemas import EmbeddingBody
from corral.tasks import EmbedRequest, EmbedResult, Task
from corral.wire import embedding_list

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

MAX_INPUTS = 2048


async def create_embeddings(runtime: Runtime, body: EmbeddingBody, call: CallInfo) -> dict[str, Any]:
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs or any(not isinstance(t, str) or not t for t in inputs):
        raise UsageError("input must be a non-empty string or a list of non-empty strings")
    if len(inputs) > MAX_INPUTS:
        raise UsageError(f"input may hold at most {MAX_INPUTS} strings")
    result: EmbedResult = await runtime.call(Task.EMBED, body.model, EmbedRequest(tuple(inputs)), call)
    return embedding_list(result, body.model, dimensions=body.dimensions, encoding_format=body.encoding_format)
