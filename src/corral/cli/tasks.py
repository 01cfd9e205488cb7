"""`corral run` for the one-shot tasks (rerank, classify_tokens): the request from the arguments,
one call through the runtime (logged with door cli), a readable summary or ``--json`` in the shape
of the API that task speaks (rerank: Cohere's; classify_tokens: Hugging Face's)."""

from __future__ import annotations

import argparse
import sys

from corral.cli.context import Context, cli_runtime
from corral.cli.output import print_json, table
from corral.errors import UsageError
from corral.models.store import Entry
from corral.protocols.hf_tokens import check_inputs as check_texts
from corral.protocols.hf_tokens import token_classification_json
from corral.protocols.rerank import RerankBody, check_inputs, ranked, rerank_response
from corral.runtime.dispatcher import CallInfo, Door
from corral.tasks import ClassifyTokensRequest, ClassifyTokensResult, RerankRequest, RerankResult, Task


def run_rerank(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    """`corral run RERANKER QUERY --doc A --doc B` (documents one per stdin line without --doc)."""
    if args.prompt is None:
        raise UsageError("a rerank model needs the query as the prompt", 'corral run MODEL "query" --doc "a document"')
    documents = args.doc or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    check_inputs(args.prompt, documents)
    if args.top_n is not None and args.top_n < 1:
        raise UsageError("--top-n must be at least 1")
    with cli_runtime(args, ctx) as runtime:
        result: RerankResult = runtime.call(Task.RERANK, entry.name, RerankRequest.of(args.prompt, documents),
                                            CallInfo(Door.CLI, "run", prompt=args.prompt))
    if args.json:
        body = RerankBody(model=entry.name, query=args.prompt, documents=list(documents), top_n=args.top_n)
        print_json(rerank_response(result, body))
        return 0
    rows = [[str(rank), f"{r['relevance_score']:.4f}", str(r["index"]), _short(r["document"]["text"])]
            for rank, r in enumerate(ranked(result, documents, args.top_n), start=1)]
    print(table(["rank", "score", "index", "document"], rows))
    return 0


def _short(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def run_classify_tokens(args: argparse.Namespace, ctx: Context, entry: Entry) -> int:
    """`corral run NER_MODEL "text"` (the text from stdin when left out): the entities as a table,
    or ``--json`` in Hugging Face's token-classification shape."""
    text = args.prompt if args.prompt is not None else sys.stdin.read()
    if not text.strip():
        raise UsageError("the text to classify is empty", 'corral run MODEL "a sentence to tag"')
    check_texts([text])
    request = ClassifyTokensRequest((text,), args.aggregation)
    with cli_runtime(args, ctx) as runtime:
        result: ClassifyTokensResult = runtime.call(Task.CLASSIFY_TOKENS, entry.name, request,
                                                    CallInfo(Door.CLI, "run", prompt=text))
    entities = result.entities[0]
    if args.json:
        print_json(token_classification_json(entities, args.aggregation))
        return 0
    rows = [[_short(e.text, 40), e.label, str(e.start), str(e.end), f"{e.score:.4f}"] for e in entities]
    print(table(["text", "label", "start", "end", "score"], rows))
    return 0
