"""Ollama's model listings from corral's store and runtime: ``/api/tags`` items, ``/api/show``,
and the Ollama fields ``/api/ps`` adds to corral's own loaded-model object (a superset, so both
``ollama.Client.ps()`` and corral's clients read it). Digests are corral's own: a sha256 over what
identifies the model's files (reference, path, size, registration time), stable while the
registration is."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.models.info import ModelInfo
from corral.models.store import Entry
from corral.protocols.ollama.names import ollama_name

FOREVER = "2318-11-18T00:00:00Z"  # what Ollama reports for a model kept loaded with keep_alive -1


def digest(entry: Entry) -> str:
    text = f"{entry.source}\0{entry.path}\0{entry.info.size_bytes}\0{entry.created_at}"
    return hashlib.sha256(text.encode()).hexdigest()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _parameter_size(n: int | None) -> str:
    if not n:
        return ""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}".rstrip("0").rstrip(".") + unit
    return str(n)


def details(info: ModelInfo) -> dict[str, Any]:
    family = info.model_type or info.architecture or ""
    return {"parent_model": "", "format": info.format, "family": family, "families": [family] if family else None,
            "parameter_size": _parameter_size(info.parameters),
            "quantization_level": info.quantization or (info.dtype or "").upper()}


def tag_item(entry: Entry) -> dict[str, Any]:
    name = ollama_name(entry.name)
    return {"name": name, "model": name, "modified_at": _iso(entry.created_at), "size": entry.info.size_bytes,
            "digest": digest(entry), "details": details(entry.info)}


def named_item(name: str, kind: str) -> dict[str, Any]:
    """A ``/api/tags`` item for a name that is no local model: an alias, or a remote model the
    gateway routes to (``kind``); no size, a digest of the name."""
    tagged = ollama_name(name)
    return {"name": tagged, "model": tagged, "modified_at": _iso(time.time()), "size": 0,
            "digest": hashlib.sha256(f"{kind}:{name}".encode()).hexdigest(),
            "details": {"parent_model": "", "format": kind, "family": "", "families": None, "parameter_size": "",
                        "quantization_level": ""}}


def capabilities(info: ModelInfo) -> list[str]:
    """Ollama's capability names for what the model serves."""
    tasks, out = set(info.tasks), []
    if tasks & {"chat", "complete"}:
        out.append("completion")
    if "chat" in tasks and info.chat_template:
        out.append("tools")
    if "describe_image" in tasks:
        out.append("vision")
    if "embed" in tasks:
        out.append("embedding")
    return out


def chat_template(info: ModelInfo) -> str:
    """The model's own chat template text, where its files carry one ('' otherwise)."""
    from corral.models.gguf_reader import read_gguf_header
    from corral.models.inspect import read_json

    path = Path(info.path)
    if info.format == "gguf" and path.is_file():
        template = read_gguf_header(path).metadata.get("tokenizer.chat_template")
        return template if isinstance(template, str) else ""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8", errors="replace")
    template = read_json(path / "tokenizer_config.json").get("chat_template") \
        if (path / "tokenizer_config.json").is_file() else None
    return template if isinstance(template, str) else ""


def show(entry: Entry) -> dict[str, Any]:
    info = entry.info
    family = info.model_type or info.architecture or "unknown"
    model_info: dict[str, Any] = {"general.architecture": family, "general.parameter_count": info.parameters,
                                  "general.basename": info.name_hint or entry.name}
    if info.context_length:
        model_info[f"{family}.context_length"] = info.context_length
    return {"modelfile": f"# corral model {entry.name}\nFROM {entry.source}\n", "parameters": "",
            "template": chat_template(info), "details": details(info), "model_info": model_info,
            "capabilities": capabilities(info), "modified_at": _iso(entry.created_at),
            "license": "", "tasks": info.tasks}


def ps_fields(entry: Entry | None, loaded: dict[str, Any], on_gpu: bool) -> dict[str, Any]:
    """The Ollama fields of one loaded model (``loaded``: corral's ``ModelStatus.to_json()``)."""
    size = loaded["memory"]["measured_bytes"] or loaded["memory"]["estimate_bytes"]
    expires = loaded.get("expires_in_seconds")
    info = entry.info if entry is not None else None
    return {"model": loaded["name"], "size": size, "size_vram": size if on_gpu else 0,
            "digest": digest(entry) if entry is not None else "",
            "expires_at": FOREVER if expires is None else _iso(time.time() + expires),
            "details": details(info) if info is not None else {},
            "context_length": info.context_length if info is not None else None}
