"""What a call cost, for the one ledger (the request log): a remote call by its tokens at the price
of its upstream model (the provider's ``prices`` in the config, else the preset's list price,
else unknown: 0 and said so, never guessed); a local call by the wall time it held the model at the
config's ``local_cost_per_hour`` (0 by default, and still recorded as compute time). Each price
says where it came from: ``config``, ``table``, ``local_time`` or ``unknown``."""

from __future__ import annotations

from dataclasses import dataclass

from corral.config import Settings
from corral.engines.remote.presets import PRESETS
from corral.errors import BadReferenceError
from corral.targets import split_remote
from corral.tasks import Usage

MILLION = 1_000_000


@dataclass(frozen=True)
class Cost:
    usd: float
    source: str  # "config" | "table" | "local_time" | "unknown"


def price(settings: Settings, target: str | None, usage: Usage, seconds: float) -> Cost:
    """The cost of one call that ``target`` served, with ``usage`` tokens in ``seconds``."""
    try:
        remote = split_remote(target or "", settings.providers)
    except BadReferenceError:
        remote = None
    if remote is None:
        return Cost(max(0.0, seconds) * settings.local_cost_per_hour / 3600, "local_time")
    provider, upstream = remote
    configured = settings.providers[provider].prices.get(upstream)
    if configured is not None:
        rates, source = (configured.input, configured.output), "config"
    elif (listed := PRESETS[settings.providers[provider].type].prices.get(upstream)) is not None:
        rates, source = listed, "table"
    else:
        return Cost(0.0, "unknown")
    return Cost((usage.prompt_tokens * rates[0] + usage.completion_tokens * rates[1]) / MILLION, source)
