"""Search the Hugging Face Hub's models, and say which of them corral can run and in about how much memory.

:func:`search_hub` is the one call to the hub (``HfApi.list_models`` at HF_ENDPOINT, read now, with the stored
token; offline mode and a missing connection are clear errors). The rest is pure and reads only what the listing
gives (``library_name``, ``pipeline_tag``, ``tags``, the file names, ``config``, the ``safetensors`` and ``gguf``
summaries), through corral's own tables: which engine takes the weights (``engines/table.py``: an engine's
library or format), which tasks the model has (``models/detect.py``), which of them that engine serves, and what a
default load would take (``models/memory.py``, from the weight bytes: file sizes where the hub lists them, else
parameters by dtype, else a GGUF's parameters at the bits of the quantization its file name says).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from corral.engines.table import ENGINES, EngineSpec, tasks_served
from corral.errors import UsageError
from corral.models import detect, memory
from corral.models.gguf_reader import BLOCKS, FILE_TYPES, TENSOR_TYPES
from corral.models.hub_auth import hub_endpoint, hub_failure, hub_site, offline_error, offline_mode
from corral.models.info import MemoryEstimate, ModelInfo
from corral.models.inspect import PICKLE_SUFFIXES
from corral.models.safetensors_header import DTYPE_BYTES, TORCH_NAMES

# CLI sort name -> list_models' sort
SORTS = {"downloads": "downloads", "likes": "likes", "last_modified": "last_modified", "trending": "trending_score"}
MAX_LIMIT = 1000  # the most models one listing page of the hub holds
PROBE_TIMEOUT = 10.0  # seconds for the hub to answer the first request of a search
# what the listing must carry for the verdict and the estimate (expand: exactly these, nothing heavier)
EXPAND = ["downloads", "likes", "lastModified", "gated", "private", "pipeline_tag", "library_name", "tags",
          "siblings", "safetensors", "gguf", "config"]
TORCH_FORMATS = frozenset({"safetensors", "pickle"})
_QUANT_NAMES = sorted(set(FILE_TYPES.values()), key=len, reverse=True)  # Q4_K_M before Q4_K
_TENSOR_IDS = {name: ggml for ggml, name in TENSOR_TYPES.items()}


@dataclass(frozen=True)
class SearchQuery:
    text: str | None = None  # in the model id
    task: str | None = None  # the hub's pipeline tag, e.g. text-generation
    library: str | None = None  # a library or tag filter, e.g. gguf, transformers
    sort: str = "downloads"  # a key of SORTS
    limit: int = 20


@dataclass(frozen=True)
class Verdict:
    engine: str | None  # the engine that would load the weights
    tasks: list[str] = field(default_factory=list)  # what corral would serve (or, not runnable, what it has)
    runnable: bool = False
    note: str | None = None  # why not, or what running it takes


@dataclass(frozen=True)
class HubModel:
    id: str
    task: str | None
    library: str | None
    downloads: int | None
    likes: int | None
    last_modified: str | None  # ISO 8601
    gated: str | bool  # False, "auto" or "manual"
    private: bool
    runnable: bool
    engine: str | None
    tasks: list[str]
    note: str | None
    parameters: int | None
    memory_bytes: int | None  # a default CPU load, estimated

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def engine_for_library(library: str, engines: Mapping[str, EngineSpec] = ENGINES) -> str | None:
    """The engine of a hub ``library_name``: the engine built on that library (its first package), else the
    one engine whose weight format the name is (gguf, ctranslate2, spacy)."""
    for spec in engines.values():
        if spec.packages[:1] == (library,):
            return spec.name
    owners = [spec.name for spec in engines.values() if library in spec.formats]
    return owners[0] if len(owners) == 1 else None


def _files(model: Any) -> list[str] | None:
    siblings = getattr(model, "siblings", None)
    return None if siblings is None else [str(s.rfilename) for s in siblings]


def _tags(model: Any) -> set[str]:
    return {str(t).lower() for t in getattr(model, "tags", None) or ()}


def _ggufs(files: list[str]) -> list[str]:
    return [f for f in files if f.lower().endswith(".gguf") and "/" not in f]


def _is_gguf(model: Any, files: list[str] | None) -> bool:
    """As inspection decides for the pulled folder: GGUF files at the top and no config.json."""
    if files is not None:
        return bool(_ggufs(files)) and "config.json" not in files
    return "gguf" in _tags(model) or (getattr(model, "library_name", None) or "").lower() == "gguf"


def _weights_format(files: list[str] | None, tags: set[str]) -> str | None:
    if files is None:
        return "safetensors" if "safetensors" in tags else "pickle" if "pytorch" in tags else None
    if any(f.endswith(".safetensors") for f in files):
        return "safetensors"
    return "pickle" if any(f.endswith(PICKLE_SUFFIXES) for f in files) else None


def _model_tasks(model: Any, engine: str) -> list[str]:
    config = getattr(model, "config", None) or {}
    tag = getattr(model, "pipeline_tag", None)
    if engine == "llama_cpp":
        gguf = getattr(model, "gguf", None) or {}
        return detect.tasks_for_gguf(str(gguf.get("architecture") or "unknown"), bool(gguf.get("chat_template")))
    if engine in ("transformers", "sentence_transformers"):
        archs = config.get("architectures") or [None]
        tokenizer = config.get("tokenizer_config") or {}
        chat = "conversational" in _tags(model) or bool(isinstance(tokenizer, dict) and tokenizer.get("chat_template"))
        return detect.tasks_for_config(archs[0], config.get("model_type"), tag, chat)
    pipeline = (config.get("diffusers") or {}).get("_class_name") if engine == "diffusers" else None
    if isinstance(pipeline, str):
        return detect.tasks_for_diffusers(pipeline)
    return detect.dedupe(list(detect.PIPELINE_TAGS.get(tag or "", ())))


def _blocker(model: Any, engine: str, files: list[str] | None) -> str | None:
    """Why the pulled repo would not load, before any task question."""
    spec = ENGINES[engine]
    if engine == "llama_cpp" and files is not None and len(_ggufs(files)) > 1:
        return (f"{len(_ggufs(files))} GGUF files: corral pulls a whole repo and runs a repo with one "
                "(or pull one file yourself and give its path)")
    if engine == "piper" and files is not None and not any(f + ".json" in files for f in files
                                                           if f.endswith(".onnx")):
        return "ONNX weights without a Piper voice config (X.onnx.json): corral has no engine for them"
    if files is not None and spec.formats & TORCH_FORMATS and _weights_format(files, _tags(model)) is None:
        return "no safetensors or PyTorch weights in the repo"
    return None


def judge(model: Any, installed: Callable[[str], bool] = _installed) -> Verdict:
    """Whether corral can run a listed model (``huggingface_hub.ModelInfo``), with which engine and tasks."""
    files = _files(model)
    library = (getattr(model, "library_name", None) or "").lower()
    engine = "llama_cpp" if _is_gguf(model, files) else engine_for_library(library)
    if engine == "transformers" and files is not None and "modules.json" in files:
        engine = "sentence_transformers"  # saved by sentence-transformers, as inspection decides
    if engine is None:
        return Verdict(None, note=f"library {library or 'not named'}: corral has no engine for it")
    tasks = _model_tasks(model, engine)
    blocker = _blocker(model, engine, files)
    if blocker:
        return Verdict(engine, tasks, note=blocker)
    served = tasks_served(engine, tasks)
    if not served:
        tag = getattr(model, "pipeline_tag", None)
        if not tasks:
            return Verdict(engine, tasks, note=f"no task corral knows (the hub's task: {tag or 'none given'})")
        return Verdict(engine, tasks, note=f"{', '.join(tasks)}: not served by corral's {engine} engine")
    spec, notes = ENGINES[engine], []
    if spec.formats & TORCH_FORMATS and _weights_format(files, _tags(model)) == "pickle":
        notes.append("pickle weights: run with --allow-pickle")
    if "custom_code" in _tags(model):
        notes.append("its own code: run with --trust-remote-code")
    if not all(installed(name) for name in spec.imports):
        notes.append(f"install corral[{spec.extra}]")
    return Verdict(engine, [t for t in tasks if t in served], True, "; ".join(notes) or None)


def gguf_quantization(filename: str) -> str | None:
    """The quantization a GGUF file's name says (``...-Q4_K_M.gguf`` -> Q4_K_M), if any."""
    stem = filename.rsplit("/", 1)[-1].upper()
    for name in _QUANT_NAMES:
        if re.search(rf"(?<![A-Z0-9]){re.escape(name)}(?![A-Z0-9])", stem):
            return name
    return None


def _gguf_bytes(parameters: int, quantization: str) -> int | None:
    """Weights of ``parameters`` at the block size of the quantization's main tensor type."""
    ggml = _TENSOR_IDS.get(quantization, _TENSOR_IDS.get(re.sub(r"_[SML]$", "", quantization)))
    if ggml is None or ggml not in BLOCKS:
        return None
    elements, size = BLOCKS[ggml]
    return parameters * size // elements


def _listed_bytes(model: Any, verdict: Verdict, files: list[str]) -> int | None:
    """Weight bytes from listed file sizes, when the hub gave every weight file's size."""
    sizes = {str(s.rfilename): s.size for s in model.siblings}
    if verdict.engine == "llama_cpp":
        weights = _ggufs(files)[:1]
    else:
        weights = [f for f in files if f.endswith(".safetensors")] or [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if not weights or any(not isinstance(sizes[f], int) for f in weights):
        return None
    return sum(int(sizes[f]) for f in weights)


def estimate(model: Any, verdict: Verdict) -> tuple[int | None, int | None]:
    """(parameters, memory of a default CPU load) from what the listing says; None where it says too little."""
    safetensors, gguf = getattr(model, "safetensors", None), getattr(model, "gguf", None) or {}
    files = _files(model)
    parameters, dtype, quant, weights = None, None, None, None
    if safetensors is not None and verdict.engine != "llama_cpp":
        counts = {str(k): int(v) for k, v in (safetensors.parameters or {}).items()}
        parameters = int(safetensors.total) or None
        if counts and all(k in DTYPE_BYTES for k in counts):
            weights = sum(DTYPE_BYTES[k] * n for k, n in counts.items())
            main = max(counts, key=lambda k: DTYPE_BYTES[k] * counts[k])
            dtype = TORCH_NAMES.get(main, main.lower())
    elif isinstance(gguf.get("total"), int):
        parameters = gguf["total"]
        names = _ggufs(files or [])
        quant = gguf_quantization(names[0]) if len(names) == 1 else None
        weights = _gguf_bytes(parameters, quant) if parameters and quant else None
    if files is not None and verdict.engine and (listed := _listed_bytes(model, verdict, files)):
        weights = listed
    if not verdict.runnable or not weights:
        return parameters, None
    info = ModelInfo(path="", format="gguf" if verdict.engine == "llama_cpp" else "safetensors",
                     engine=verdict.engine, parameters=parameters, dtype=dtype, quantization=quant)
    return parameters, memory.with_defaults(info, MemoryEstimate(0, 0, weight_bytes=weights)).cpu_bytes


def describe(model: Any, installed: Callable[[str], bool] = _installed) -> HubModel:
    """One listed model as corral shows it."""
    verdict = judge(model, installed)
    parameters, memory_bytes = estimate(model, verdict)
    modified = getattr(model, "last_modified", None)
    return HubModel(
        id=str(model.id), task=getattr(model, "pipeline_tag", None), library=getattr(model, "library_name", None),
        downloads=getattr(model, "downloads", None), likes=getattr(model, "likes", None),
        last_modified=modified.isoformat() if modified is not None else None,
        gated=getattr(model, "gated", None) or False, private=bool(getattr(model, "private", False)),
        runnable=verdict.runnable, engine=verdict.engine, tasks=verdict.tasks, note=verdict.note,
        parameters=parameters, memory_bytes=memory_bytes)


def check_query(query: SearchQuery) -> None:
    if query.sort not in SORTS:
        raise UsageError(f"cannot sort by {query.sort!r}", f"use one of: {', '.join(SORTS)}")
    if not 1 <= query.limit <= MAX_LIMIT:
        raise UsageError(f"--limit {query.limit} is out of range", f"ask for 1 to {MAX_LIMIT} models")


def search_hub(query: SearchQuery, environ: Mapping[str, str] = os.environ) -> list[HubModel]:
    """The hub's models matching ``query`` (HF_ENDPOINT and HF_HUB_OFFLINE read from ``environ``)."""
    check_query(query)
    endpoint = hub_endpoint(environ)
    if offline_mode(environ):
        raise offline_error("searching the hub")
    from huggingface_hub import HfApi, get_session

    api = HfApi(endpoint=endpoint)
    try:
        # one quick request first: with no network, list_models retries for about 25 s (its backoff) before failing
        get_session().head(hub_site(endpoint), timeout=PROBE_TIMEOUT)
        found = list(api.list_models(search=query.text or None, pipeline_tag=query.task or None,
                                     filter=query.library or None, sort=SORTS[query.sort],  # type: ignore[arg-type]
                                     limit=query.limit, expand=EXPAND))  # type: ignore[arg-type]
    except Exception as exc:
        raise hub_failure(exc, "the search", endpoint) from None
    return [describe(m) for m in found]
