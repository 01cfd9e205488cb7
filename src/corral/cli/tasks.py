"""`corral run` for the one-shot tasks (rerank so far): the request from the arguments, one call
through the runtime (logged with door cli), a readable summary or ``--json`` in the HTTP shape."""

from __future__ import annotations

import argparse
import sys

from corral.cli.context import Context, cli_runtime
from corral.cli.output import print_json, table
from corral.errors import UsageError
from corral.models.store import Entry
from corral.protocols.rerank import RerankBody, check_inputs, ranked, rerank_response
from corral.runtime.dispatcher import CallInfo, Door
from corral.tasks import RerankRequest, RerankResult, Task


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
