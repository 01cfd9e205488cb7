"""Hugging Face's token-classification shape (the ``transformers`` pipeline's and the HF inference
API's), free of any transport: ``{"inputs": str | [str], "parameters": {"aggregation_strategy"}}``
in; per text a list of ``{"entity_group", "score", "word", "start", "end"}`` out (aggregation
"none": ``"entity"`` and ``"index"`` instead of ``"entity_group"``). ``word`` is the text's own
span (``inputs[start:end]``), not the tokenizer's rendering of it (``##son``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corral.errors import UsageError
from corral.protocols.convert import converted
from corral.tasks import ClassifyTokensRequest, ClassifyTokensResult, Entity, Task

if TYPE_CHECKING:
    from corral.runtime.dispatcher import CallInfo
    from corral.runtime.runtime import Runtime

MAX_INPUTS = 1000


class TokenParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. ignore_labels, stride: accepted and ignored

    aggregation_strategy: Literal["simple", "none"] = "simple"


class TokenClassificationBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=300)
    inputs: str | list[str]
    parameters: TokenParameters = Field(default_factory=TokenParameters)

    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


def check_inputs(texts: Sequence[str]) -> None:
    if not texts:
        raise UsageError("inputs must hold at least one text")
    if len(texts) > MAX_INPUTS:
        raise UsageError(f"inputs may hold at most {MAX_INPUTS} texts", "split the list into several calls")
    empty = next((i for i, t in enumerate(texts) if not t.strip()), None)
    if empty is not None:
        raise UsageError("inputs is empty" if len(texts) == 1 else f"inputs[{empty}] is empty")


def token_classification_json(entities: Sequence[Entity], aggregation: str) -> list[dict[str, Any]]:
    """One text's entities in the HF shape."""
    if aggregation == "none":
        return [{"entity": e.label, "score": float(e.score), "index": e.index, "word": e.text,
                 "start": e.start, "end": e.end} for e in entities]
    return [{"entity_group": e.label, "score": float(e.score), "word": e.text, "start": e.start, "end": e.end}
            for e in entities]


async def create_token_classification(runtime: Runtime, body: TokenClassificationBody,
                                      call: CallInfo) -> list[Any]:
    """The list for one text; a list of lists for a list of texts."""
    texts = body.texts()
    check_inputs(texts)
    aggregation = body.parameters.aggregation_strategy
    result: ClassifyTokensResult = await runtime.call(
        Task.CLASSIFY_TOKENS, body.model, ClassifyTokensRequest(tuple(texts), aggregation), call)
    shaped = [token_classification_json(one, aggregation) for one in result.entities]
    return shaped[0] if isinstance(body.inputs, str) else shaped


async def token_classification(runtime: Runtime, model: str, inputs: Any, parameters: dict[str, Any],
                               call: CallInfo) -> list[Any]:
    """The Hugging Face task API's ``inputs`` / ``parameters`` (as every task of ``protocols.hf``)."""
    body = converted(TokenClassificationBody, {"model": model, "inputs": inputs, "parameters": parameters})
    return await create_token_classification(runtime, body, call)
