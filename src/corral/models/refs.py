"""Model references: parse what a user typed into a source, or a clear error."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from corral.errors import BadReferenceError

SourceKind = Literal["hf", "path", "package", "name"]

_SEGMENT = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID = re.compile(rf"^{_SEGMENT}/{_SEGMENT}$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
PACKAGE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$")


@dataclass(frozen=True)
class ModelRef:
    kind: SourceKind
    value: str  # repo id, absolute path, package name, or a registered name / alias
    revision: str | None = None

    def __str__(self) -> str:
        if self.kind == "hf":
            return f"hf:{self.value}" + (f"@{self.revision}" if self.revision else "")
        if self.kind == "package":
            return f"pkg:{self.value}"
        return self.value


def _check_repo(repo: str, revision: str | None, text: str) -> None:
    if not REPO_ID.match(repo) or ".." in repo or "--" in repo:
        raise BadReferenceError(
            f"{text!r} is not a valid Hugging Face repo id",
            "write it as hf:organisation/name, e.g. hf:HuggingFaceTB/SmolLM2-135M-Instruct")
    if revision is not None and (not REVISION.match(revision) or ".." in revision):
        raise BadReferenceError(f"{revision!r} is not a valid revision in {text!r}",
                                "use a branch, tag or commit hash after @")


def looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..") or text.lower().endswith(".gguf")


def check_name(name: str) -> str:
    """A registered model name: letters, digits, . _ - and at most one '/'; never a path."""
    if not NAME.match(name) or ".." in name:
        raise BadReferenceError(
            f"{name!r} is not a valid model name",
            "names use letters, digits, '.', '_', '-' and at most one '/', and never '..'")
    return name


def parse_ref(text: str, *, allow_paths: bool = True, cwd: Path | None = None) -> ModelRef:
    """Parse a reference. Bare words become ``name`` refs, looked up later in the store."""
    text = text.strip()
    if not text:
        raise BadReferenceError("the model reference is empty", "name a model, e.g. smollm2")
    if "\x00" in text:
        raise BadReferenceError("the model reference contains a NUL byte")
    if text.startswith("hf:"):
        repo, _, rev = text[3:].partition("@")
        _check_repo(repo, rev or None, text)
        return ModelRef("hf", repo, rev or None)
    if text.startswith("pkg:"):
        pkg = text[4:]
        if not PACKAGE.match(pkg):
            raise BadReferenceError(f"{text!r} does not name a Python package", "write pkg:module_name")
        return ModelRef("package", pkg)
    if looks_like_path(text):
        if not allow_paths:
            raise BadReferenceError(f"{text!r} looks like a file path; paths are not accepted here",
                                    "use the name of a registered model (see `corral list`)")
        base = cwd or Path.cwd()
        # absolute and normalised, but symlinks kept: the name comes from what the user gave
        return ModelRef("path", os.path.normpath(base / Path(text).expanduser()))
    if "@" in text:
        repo, _, rev = text.partition("@")
        _check_repo(repo, rev, text)
        return ModelRef("hf", repo, rev)
    return ModelRef("name", check_name(text))
