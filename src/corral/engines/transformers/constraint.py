"""JSON-schema constrained decoding for the transformers engine, through llguidance.

llguidance compiles a JSON schema into a grammar over the model's own tokenizer and, at each step,
says which tokens may come next. :class:`Constraint` turns that into a logits mask for one
request's row, and advances with every token the request takes. When the JSON value is complete
only end-of-sequence stays allowed, so the answer ends there.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from corral.errors import MissingDependencyError, UsageError

# One space after separators, no other whitespace: a model cannot pad the answer with blank lines.
JSON_LAYOUT: Any = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class Constraint:
    """One request's grammar state."""

    def __init__(self, matcher: Any) -> None:
        self.matcher = matcher

    def mask(self, row: Any) -> None:
        """Set every token the grammar does not allow next to -inf, in place."""
        import torch

        allowed = torch.frombuffer(bytearray(self.matcher.compute_logit_bias()), dtype=torch.uint8) > 0
        n = min(allowed.shape[0], row.shape[-1])
        row[n:] = float("-inf")  # ids past the tokenizer's vocabulary (padded embedding rows)
        row[:n].masked_fill_(~allowed[:n].to(row.device), float("-inf"))

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise UsageError(f"the JSON grammar rejected a token: {self.matcher.get_error()}")


class ConstraintFactory:
    """Builds constraints for one tokenizer; the tokenizer conversion (about a second) happens once."""

    def __init__(self, tokenizer: Any, eos_ids: list[int]) -> None:
        self.tokenizer, self.eos_ids = tokenizer, eos_ids
        self._ll_tokenizer: Any = None
        self._lock = threading.Lock()

    def _llg_tokenizer(self) -> Any:
        try:
            import llguidance.hf
        except ImportError:
            raise MissingDependencyError(
                "JSON-constrained output on the transformers engine needs the Python package 'llguidance'",
                "install it with: pip install 'corral[torch]'") from None
        with self._lock:
            if self._ll_tokenizer is None:
                try:
                    self._ll_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, eos_token=self.eos_ids or None)
                except ValueError as exc:
                    raise UsageError(f"cannot constrain this model's output: {exc}",
                                     "JSON-constrained output needs a model with a fast tokenizer") from None
        return self._ll_tokenizer

    def json(self, schema: dict[str, Any]) -> Constraint:
        from llguidance import LLMatcher

        tokenizer = self._llg_tokenizer()
        try:
            grammar = LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_LAYOUT)
        except ValueError as exc:
            raise UsageError(f"cannot constrain output to this JSON schema: {exc}") from None
        matcher = LLMatcher(tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise UsageError(f"cannot constrain output to this JSON schema: {matcher.get_error()}")
        return Constraint(matcher)
