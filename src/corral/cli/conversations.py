"""``corral chat MODEL --save NAME`` and ``corral chat --resume NAME``: the interactive chat kept as a
conversation in the data folder (``runtime.conversations``, the store ``/api/conversations`` and the
sidecar use), under a name of the user's. Each turn claims the conversation (another chat or a
server answering in it meanwhile: 409), runs through the runtime (logged with door cli), and is
stored once its answer is whole (Ctrl-C stores nothing). A history the model's context cannot hold
leaves its oldest exchanges out of the prompt (kept in the store); the system prompt never."""

from __future__ import annotations

import argparse
from contextlib import closing
from typing import TYPE_CHECKING

from corral.cli.context import Context, cli_runtime
from corral.cli.generate import _prompt as read_prompt
from corral.cli.generate import sampling_from, stream_text
from corral.errors import ConflictError, CorralError, UsageError
from corral.runtime.conversations import (
    Conversation,
    ConversationNotFoundError,
    ConversationStore,
    prompt_messages,
    too_long,
    widen,
)
from corral.runtime.dispatcher import CallInfo, Door
from corral.runtime.loader import entry_task
from corral.tasks import ChatRequest, Message, Sampling, Task

if TYPE_CHECKING:
    from corral.runtime.sync import SyncRuntime

SHOWN = 6  # messages of a resumed chat printed before its prompt (its last three exchanges)


def _opened(args: argparse.Namespace, store: ConversationStore) -> tuple[str, Conversation | None]:
    """(the model to ask for, the saved conversation when resuming); the flags checked."""
    if args.save and args.resume:
        raise UsageError("--save starts a saved chat and --resume continues one: give one of them")
    if args.resume:
        found = store.named(args.resume)
        if args.system:
            raise UsageError(f"the saved chat {args.resume!r} keeps its own system prompt: leave out --system")
        if args.model and args.model != found.model:
            raise UsageError(f"the chat {args.resume!r} was saved with {found.model!r}, not {args.model!r}",
                             f"corral chat --resume {args.resume}")
        return found.model, found
    if not args.model:
        raise UsageError("--save needs a MODEL", f"corral chat MODEL --save {args.save}")
    try:
        store.named(args.save)
    except ConversationNotFoundError:
        return str(args.model), None
    raise ConflictError(f"a chat named {args.save!r} is already saved",
                        f"continue it with corral chat --resume {args.save}, or choose another name")


def _show(conversation: Conversation, name: str) -> None:
    print(f"resuming {name} ({conversation.count} messages kept); the last turns:")
    for m in conversation.messages[-SHOWN:]:
        print(f">>> {m['content']}" if m["role"] == "user" else m["content"])


def _turn(runtime: SyncRuntime, store: ConversationStore, conversation_id: str, asked: str, line: str,
          sampling: Sampling) -> None:
    """One message and its answer, streamed to stdout, stored once whole."""
    claim = store.claim(conversation_id)
    try:
        kept = store.get(conversation_id)
        skipped = min(kept.skipped, len(kept.messages))
        while True:
            messages = tuple(Message(m["role"], m["content"]) for m in prompt_messages(kept, skipped, line))
            try:
                with closing(runtime.stream(Task.CHAT, asked, ChatRequest(messages, sampling=sampling),
                                            CallInfo(Door.CLI, "chat", prompt=line))) as chunks:
                    answer = stream_text(chunks, echo=True).text
                break
            except CorralError as exc:
                wider = widen(skipped, len(kept.messages))
                if not too_long(exc) or wider is None:
                    raise
                skipped = wider
        print()
        store.append(claim, line, answer, skipped)
        if skipped > kept.skipped:
            print(f"(the {skipped} oldest messages no longer fit the model's context: left out of the prompt, "
                  "still saved)")
    finally:
        claim.release()


def _reset(store: ConversationStore, conversation_id: str) -> None:
    claim = store.claim(conversation_id)
    try:
        store.clear(claim)
    finally:
        claim.release()


def chat_kept(args: argparse.Namespace, ctx: Context) -> int:
    """The chat loop of ``cmd_chat`` over a kept conversation."""
    settings = ctx.settings
    store = ConversationStore(settings.data_dir, settings.runtime.conversation_retention)
    model, found = _opened(args, store)
    sampling = sampling_from(args)
    asked, entry = ctx.resolve_asked(model)
    entry_task(entry, Task.CHAT)
    with cli_runtime(args, ctx) as runtime:
        if runtime.runtime.router.chain(entry.name) is None:  # a local model: loaded before the first prompt
            runtime.wait(runtime.runtime.load(entry.name))
        conversation = found or store.create(asked, args.system, args.save)  # saved once the model is there
        if found is not None:
            _show(found, args.resume)
        print(f"chatting with {entry.name}, saved as {args.save or args.resume}; /exit or Ctrl-D to leave, "
              "Ctrl-C stops an answer (nothing saved), /reset clears")
        while (line := read_prompt()) is not None:
            text = line.strip()
            if text in ("/exit", "/quit", "/bye"):
                break
            if text == "/reset":
                _reset(store, conversation.id)
                print("(history cleared)")
            elif text:
                try:
                    _turn(runtime, store, conversation.id, asked, line, sampling)
                except KeyboardInterrupt:
                    print("\n(stopped)")
    return 0
