"""Token ids to text, one token at a time, for tokenizers whose pieces only make sense in context.

Decoding a lone token loses leading spaces (SentencePiece) or splits a multi-byte character. So
each step decodes a short window ending at the new token and emits only what the window adds to
its own prefix; text that ends in an incomplete character waits for the next token.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, skip: frozenset[int] = frozenset()) -> None:
        self.tokenizer = tokenizer
        self.skip = skip  # token ids that never become text (end of sequence)
        self.ids: list[int] = []
        self.prefix = 0  # window start: the tokens before it are already text
        self.read = 0  # tokens up to here have been emitted

    def _decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return text

    def push(self, token: int) -> str:
        """Add one token; return the new text it completes (possibly empty)."""
        if token in self.skip:
            return ""
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return after[len(before):] if len(after) > len(before) else ""
