"""`corral health` and GET /api/health/targets: is each configured target up, without spending a
token. A remote target is asked only what its provider bills nothing for (OpenAI-compatible: the
models list, which also says whether the upstream model is there and whether corral's key is
accepted); a local target is looked up in the store and the registry (registered, loaded), never
loaded. ``deep`` sends one one-token request per target and says so. An alias is up when any of its
targets is; a ``required`` alias with none up fails the check."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from corral.errors import CorralError
from corral.models.catalog import remote_rows
from corral.targets import split_remote
from corral.tasks import ChatRequest, Message, Sampling, Task

if TYPE_CHECKING:
    from corral.runtime.runtime import Runtime


@dataclass
class TargetHealth:
    target: str
    kind: str  # "remote" | "local"
    up: bool | None  # None: cannot be told without a billed request (LiteLLM's providers)
    latency_ms: float | None = None
    authenticated: bool | None = None  # remote: the key was accepted
    model_present: bool | None = None  # remote: the upstream lists the model; local: registered
    loaded: bool | None = None  # local
    deep: bool = False  # a (tiny, billed) request was sent
    error: str | None = None


async def check(runtime: Runtime, *, deep: bool = False) -> dict[str, Any]:
    settings = runtime.settings
    names = [row["name"] for row in remote_rows(settings)]
    for alias in settings.aliases.values():
        names += [t for t in alias.targets if t not in names and not split_remote(t, settings.providers)]
    targets = {name: await _check_one(runtime, name, deep) for name in names}
    aliases = []
    for name, alias in sorted(settings.aliases.items()):
        refs = [*alias.targets, *([alias.context_fallback] if alias.context_fallback else [])]
        up = [r for r in refs if targets.get(r) is not None and targets[r].up]
        unknown = any(targets.get(r) is not None and targets[r].up is None for r in refs)
        state = True if up else None if unknown else False
        aliases.append({"alias": name, "targets": refs, "up": state, "up_targets": up, "required": alias.required})
    failed = [a["alias"] for a in aliases if a["required"] and a["up"] is False]
    return {"ok": not failed, "required_down": failed, "deep": deep,
            "targets": [asdict(t) for t in targets.values()], "aliases": aliases}


async def _check_one(runtime: Runtime, name: str, deep: bool) -> TargetHealth:
    remote = split_remote(name, runtime.settings.providers)
    if remote is None:
        return _local(runtime, name)
    provider, upstream = remote
    started = time.perf_counter()
    try:
        listed = await runtime.providers.get(provider).models()
    except CorralError as exc:
        if exc.http_status == 501:  # no free check exists for this provider: unknown, not down
            health = TargetHealth(name, "remote", None, error=exc.message)
        else:
            refused = exc.http_status == 502 and "credentials" in exc.message
            return TargetHealth(name, "remote", False, authenticated=False if refused else None, error=exc.message)
    else:
        present = upstream in listed
        health = TargetHealth(name, "remote", present, round((time.perf_counter() - started) * 1000, 1),
                              authenticated=True, model_present=present,
                              error=None if present else f"{upstream} is not in the provider's model list")
    if deep and health.up is not False:
        health.deep = True
        try:
            request = ChatRequest((Message("user", "ping"),), sampling=Sampling(max_tokens=1, temperature=0.0))
            async for _ in runtime.providers.get(provider).run(Task.CHAT, upstream, request):
                pass
            health.up, health.error = True, None
        except CorralError as exc:
            health.up, health.error = False, exc.message
    return health


def _local(runtime: Runtime, name: str) -> TargetHealth:
    target = runtime.settings.all_aliases().get(name, name)
    entry = runtime.store.get(name) or runtime.store.find_by_source(target) or runtime.store.get(target)
    if entry is None and target.startswith("pkg:") and importlib.util.find_spec(target[4:].split("/")[0]):
        return TargetHealth(name, "local", True, model_present=True, loaded=False)  # registered at first use
    if entry is None:
        return TargetHealth(name, "local", False, model_present=False, error="not registered (corral pull it)")
    return TargetHealth(name, "local", True, model_present=True, loaded=entry.name in runtime.registry.models)
