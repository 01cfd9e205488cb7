"""OpenAI embeddings in corral's terms, for every door: inputs checked (texts, and images as
``{"image": ...}`` items: protocols.embed_inputs), one runtime call (batched with concurrent ones by
the runtime), OpenAI's list with numpy rows (``wire.dumps`` writes them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.protocols.embed_inputs import embed_inputs
from corral.protocols.openai.schemas import EmbeddingBody
from corral.tasks import EmbedRequest, EmbedResult, Task
from corral.wire import embedding_list

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

MAX_INPUTS = 2048


async def create_embeddings(runtime: Runtime, body: EmbeddingBody, call: CallInfo) -> dict[str, Any]:
    """``input``: strings, and (image-text models) ``{"text": ...}`` / ``{"image": ...}`` items."""
    inputs, _ = await embed_inputs(body.input, runtime, field="input", max_inputs=MAX_INPUTS)
    result: EmbedResult = await runtime.call(Task.EMBED, body.model, EmbedRequest(inputs), call)
    return embedding_list(result, body.model, dimensions=body.dimensions, encoding_format=body.encoding_format)
