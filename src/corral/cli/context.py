"""What every command needs: settings, the store, a resolver; and the shared model flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import cached_property

from corral.config import Settings, load_settings
from corral.engines.base import Handler, LoadOptions
from corral.models.resolve import Resolver
from corral.models.safety import Trust
from corral.models.store import Entry, Store
from corral.runtime.devices import check_device


@dataclass
class Context:
    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.manifest_path)

    @cached_property
    def resolver(self) -> Resolver:
        return Resolver(self.settings, self.store)

    def resolve(self, text: str, *, progress: bool = True) -> Entry:
        return self.resolver.resolve(text, progress=progress)


def add_trust_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model's own Python code to run (off by default)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow pickle-based weight files (.bin/.pt/.ckpt), which can run code")


def add_load_flags(p: argparse.ArgumentParser) -> None:
    add_trust_flags(p)
    p.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto (default: best available)")
    p.add_argument("--ctx", type=int, dest="context_length", help="context length to allocate")
    p.add_argument("--threads", type=int, help="CPU threads for llama.cpp")


def trust_from(args: argparse.Namespace) -> Trust:
    return Trust(trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)


def load_options(args: argparse.Namespace, ctx: Context) -> LoadOptions:
    device = check_device(args.device or ctx.settings.default_device)
    return LoadOptions(device=device, trust=trust_from(args),
                       context_length=args.context_length, threads=args.threads)


def open_entry(args: argparse.Namespace, ctx: Context) -> tuple[Entry, Handler]:
    from corral.runtime.loader import open_model

    entry = ctx.resolve(args.model)
    return entry, open_model(entry, load_options(args, ctx))
