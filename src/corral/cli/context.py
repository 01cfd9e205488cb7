"""What every command needs: settings, the store, a resolver; and the shared model flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from corral.config import Settings, load_settings
from corral.devices import check_device
from corral.engines.base import LoadOptions
from corral.engines.table import all_dtypes
from corral.models.resolve import Resolver
from corral.models.safety import Trust
from corral.models.store import Entry, Store

if TYPE_CHECKING:
    from corral.runtime.sync import SyncRuntime


@dataclass
class Context:
    """One command's world. ``config`` is the global ``--config`` file; ``flags`` the settings given
    as flags ({section: {field: value}}), which win over the environment and the file."""

    config: str | None = None
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config, self.flags)

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.manifest_path)

    @cached_property
    def resolver(self) -> Resolver:
        return Resolver(self.settings, self.store)

    def resolve(self, text: str, *, progress: bool = True) -> Entry:
        """The registered model ``text`` names, or the entry of a name the router serves (remote)."""
        from corral.models.remote import remote_entry

        routed = remote_entry(self.settings, text, lambda name: self.resolver.resolve(name, progress=progress))
        return routed or self.resolver.resolve(text, progress=progress)

    def resolve_asked(self, text: str) -> tuple[str, Entry]:
        """(the name to ask the runtime for, the entry of the model that serves it): a preset
        (``MODEL@MODE``, a config preset) is asked for by its own name, so the router applies it."""
        from corral.presets import find_preset

        preset = find_preset(self.settings, text)
        if preset is not None:
            return text, self.resolve(preset[0])
        entry = self.resolve(text)
        return entry.name, entry


def add_trust_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model's own Python code to run (off by default)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow pickle-based weight files (.bin/.pt/.ckpt), which can run code")


def add_load_flags(p: argparse.ArgumentParser, *, threads: bool = True) -> None:
    """The flags of a model load; ``threads``: also --threads (serve and sidecar have it as a [runtime] setting)."""
    add_trust_flags(p)
    p.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto (default: best available)")
    p.add_argument("--ctx", type=int, dest="context_length", help="context length to allocate")
    if threads:
        p.add_argument("--threads", type=int, help="CPU threads for llama.cpp (default: [runtime] threads, "
                       "CORRAL_THREADS, else the CPUs this process may use)")
    p.add_argument("--dtype", choices=("auto", *all_dtypes()), metavar="DTYPE",
                   help="load weights as this type: torch models float32, float16, bfloat16 (default: as stored; "
                   "half precision on CUDA); CTranslate2 (faster-whisper) compute types int8, int8_float32, "
                   "float16, float32, ... (default: as stored, or what the device supports)")


def trust_from(args: argparse.Namespace) -> Trust:
    return Trust(trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)


def load_options(args: argparse.Namespace, ctx: Context) -> LoadOptions:
    device = check_device(args.device or ctx.settings.default_device)
    threads = getattr(args, "threads", None) or ctx.settings.runtime.threads
    return LoadOptions(device=device, trust=trust_from(args), context_length=args.context_length,
                       threads=threads, dtype=args.dtype)


NO_BUDGET = 2**62  # the CLI loads what it is asked to: no memory budget, one model at a time


def cli_runtime(args: argparse.Namespace, ctx: Context, *, parallel: int = 1, max_loaded: int = 1) -> SyncRuntime:
    """The runtime a CLI command runs its calls through (logged with door ``cli``): ``parallel``
    sequences per batching model, ``max_loaded`` models at once."""
    from corral.runtime.runtime import RuntimeOptions, build_runtime
    from corral.runtime.sync import SyncRuntime

    load = replace(load_options(args, ctx), parallel=max(1, parallel))
    options = RuntimeOptions(load=load, budget_bytes=NO_BUDGET, max_loaded=max_loaded, keep_alive=-1,
                             allow_paths=True, record_memory=False)
    return SyncRuntime(build_runtime(ctx.settings, ctx.store, options))
