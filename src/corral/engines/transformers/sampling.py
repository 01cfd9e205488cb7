"""One request's token choice on torch logits: greedy, or temperature / top-k / top-p with the
request's own seeded generator, optionally within a JSON grammar; plus the log-probabilities the
request asked for (of the model's raw distribution, as the llama.cpp engine reports them).

The transformers engine never lets ``generate`` (or continuous batching) sample. It runs them
greedy (argmax) and, for a sampled request, rewrites that request's logits row so that the token
drawn here is the only one left. So a request draws from its own RNG stream whether it runs alone
or among others in a batch, and the same seed gives the same tokens either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.tasks import Sampling

if TYPE_CHECKING:
    from corral.engines.transformers.constraint import Constraint

# transformers' own default for the knob corral does not expose (GenerationConfig.top_k).
TOP_K = 50


@dataclass
class TokenRecord:
    """The chosen token of one step, with its log-probability and the requested top alternatives."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


class RequestSampler:
    """Chooses each next token of one request; keeps a record per step when logprobs were asked."""

    def __init__(self, sampling: Sampling, logprobs: int | None, device: str = "cpu",
                 constraint: Constraint | None = None) -> None:
        import torch

        self.constraint = constraint
        self.greedy = sampling.temperature <= 0
        self.temperature = max(sampling.temperature, 1e-5)
        self.top_p = sampling.top_p
        self.top_k = TOP_K if sampling.top_k is None else sampling.top_k  # 0: no cut
        self.logprobs = logprobs
        self.records: list[TokenRecord] = []
        self.generator: Any = None
        if not self.greedy:
            self.generator = torch.Generator(device=device)
            if sampling.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(sampling.seed & 0xFFFF_FFFF_FFFF_FFFF)

    @property
    def passive(self) -> bool:
        """True when argmax of the raw logits is the whole job (greedy, unconstrained, no logprobs)."""
        return not self.forces and self.logprobs is None

    @property
    def forces(self) -> bool:
        """True when the chosen token may differ from the argmax of the raw logits."""
        return not self.greedy or self.constraint is not None

    def choose(self, logits: Any) -> int:
        """Pick the next token from one row of raw logits (shape [vocab])."""
        import torch

        raw = logits.float()
        row = raw
        if self.constraint is not None:
            row = raw.clone()
            self.constraint.mask(row)
        if self.greedy:
            token = int(torch.argmax(row))
        else:
            token = int(torch.multinomial(self._probs(row), 1, generator=self.generator))
        if self.constraint is not None:
            self.constraint.advance(token)
        if self.logprobs is not None:
            self.records.append(self._record(raw, token))
        return token

    def _probs(self, row: Any) -> Any:
        import torch

        scaled = row / self.temperature
        k = min(self.top_k or scaled.shape[-1], scaled.shape[-1])
        kth = torch.topk(scaled, k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        if self.top_p < 1.0:
            ordered, order = torch.sort(probs, descending=True)
            before = torch.cumsum(ordered, dim=-1) - ordered  # mass of the tokens ranked above each one
            drop = before >= self.top_p
            drop[0] = False
            probs = probs.masked_fill(drop.scatter(0, order, drop), 0.0)
        return probs

    def _record(self, row: Any, token: int) -> TokenRecord:
        import torch

        logp = torch.log_softmax(row, dim=-1)
        top: list[tuple[int, float]] = []
        if self.logprobs:
            values, ids = torch.topk(logp, min(self.logprobs, logp.shape[-1]))
            top = [(int(i), float(v)) for v, i in zip(values.tolist(), ids.tolist(), strict=True)]
        return TokenRecord(token, float(logp[token]), top)


def force(row: Any, token: int) -> None:
    """Rewrite a logits row in place so that argmax can only pick ``token``."""
    row.fill_(float("-inf"))
    row[token] = 0.0


def steer(row: Any, sampler: RequestSampler) -> None:
    """Let ``sampler`` choose from ``row``; a sampled choice is forced, a greedy one left to argmax."""
    token = sampler.choose(row)
    if sampler.forces:
        force(row, token)


class SamplerLogitsProcessor:
    """A transformers ``LogitsProcessor`` for one-sequence ``generate`` calls (batch of one)."""

    def __init__(self, sampler: RequestSampler) -> None:
        self.sampler = sampler

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        steer(scores[0], self.sampler)
        return scores
