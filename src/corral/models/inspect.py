"""Inspection: learn what a model is and needs from its files, without loading weights."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from corral.engines.table import engine_packages
from corral.errors import InvalidModelFileError, ModelNotFoundError
from corral.models import detect, memory, pipeline_sizes, piper_voice
from corral.models import inspect_speech as speech
from corral.models.gguf_reader import quantization as gguf_quantization
from corral.models.gguf_reader import read_gguf_header
from corral.models.info import MemoryEstimate, ModelInfo, Requirement
from corral.models.safetensors_header import TORCH_NAMES, read_safetensors_header
from corral.models.system import inspect_program
from corral.tasks import Task

MAX_JSON = 16 * 1024 * 1024
MAX_FILES = 20_000
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
UNQUANTIZED = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
SPACY_FILES = ("meta.json", "config.cfg")  # a trained spaCy pipeline's folder (nlp.to_disk)
SPACY_FLOAT_BYTES = 4  # thinc stores its weights as float32
# DETR-style configs whose backbone is a timm model unless they name another (use_timm_backbone: true by default)
TIMM_BY_DEFAULT = frozenset({"detr", "conditional_detr", "dab-detr", "deformable_detr", "table-transformer"})
_PIPELINE_TAG = re.compile(r"^pipeline_tag:\s*['\"]?([\w-]+)", re.MULTILINE)


def read_json(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_JSON:
        raise InvalidModelFileError(f"{path.name} is larger than {MAX_JSON} bytes; refusing to parse it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, an integer of over 4300 digits, too deep
        raise InvalidModelFileError(f"{path.name} is not valid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise InvalidModelFileError(f"{path.name} does not hold a JSON object")
    return data


def requirements(engine: str | None, *more: str) -> list[Requirement]:
    """The engine's packages and ``more`` (a model's own needs), each with whether it is installed."""
    return [Requirement(package, is_installed(package)) for package in (*engine_packages(engine), *more)]


def is_installed(package: str) -> bool:
    try:
        metadata.version(package)
        return True
    except metadata.PackageNotFoundError:
        return False


def inspect_path(path: Path) -> ModelInfo:
    """Inspect a model folder, a single .gguf file, a Piper voice (.onnx + .onnx.json) or a system
    model's program (espeak-ng)."""
    if not path.exists():
        raise ModelNotFoundError(f"no such file or folder: {path}")
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return inspect_gguf(path)
        if piper_voice.is_voice_file(path):
            return piper_voice.inspect_voice(path)
        program = inspect_program(path)
        if program is not None:
            return program
        raise InvalidModelFileError(
            f"{path.name} is not a model corral can read on its own",
            "give a .gguf file, a Piper voice's .onnx (beside its .onnx.json), or the folder that holds "
            "config.json and the weights")
    files = _list_files(path)
    if (path / "model_index.json").is_file():
        return _inspect_diffusers(path, files)
    if not (path / "config.json").is_file() and piper_voice.voices_in(path):
        return piper_voice.inspect_voice(piper_voice.voice_file(path))
    if all((path / name).is_file() for name in SPACY_FILES):
        return _inspect_spacy(path, files)
    if (ct2 := speech.ct2_config(path, read_json)) is not None:
        return speech.inspect_ctranslate2(path, ct2, requirements)
    if (sphinx := speech.sphinx_files(path)) is not None:
        return speech.inspect_sphinx(path, sphinx, requirements)
    ggufs = [f for f in files if f.suffix.lower() == ".gguf" and f.parent == path]
    if ggufs and not (path / "config.json").is_file():
        if len(ggufs) > 1:
            names = ", ".join(sorted(f.name for f in ggufs))
            raise InvalidModelFileError(f"{path} holds several GGUF files ({names})",
                                        "point corral at one of the files")
        return inspect_gguf(ggufs[0])
    return _inspect_transformers(path, files)


def _list_files(root: Path) -> list[Path]:
    out: list[Path] = []
    for p in root.rglob("*"):
        if len(out) >= MAX_FILES:
            raise InvalidModelFileError(f"{root} holds more than {MAX_FILES} files; not a model folder")
        if p.is_file() and ".git" not in p.relative_to(root).parts:
            out.append(p)
    return out


def _weights_facts(info: ModelInfo, files: list[Path], root: Path) -> None:
    """Fill format, parameters, dtype and size from weight files."""
    safetensors = [f for f in files if f.suffix == ".safetensors"]
    pickles = [f for f in files if f.suffix in PICKLE_SUFFIXES]
    onnx = [f for f in files if f.suffix == ".onnx"]
    if safetensors:
        info.format = "safetensors"
        seen: set[tuple[str, str]] = set()
        dtype_bytes: dict[str, int] = {}
        params = total = 0
        for f in safetensors:
            for t in read_safetensors_header(f):
                key = (str(f.parent.relative_to(root)), t.name)
                if key in seen:
                    continue
                seen.add(key)
                params += t.elements
                total += t.nbytes
                dtype_bytes[t.dtype] = dtype_bytes.get(t.dtype, 0) + t.nbytes
            info.sources.append(str(f.relative_to(root)))
        info.parameters = params
        info.size_bytes = sum(f.stat().st_size for f in safetensors)
        if dtype_bytes:
            main = max(dtype_bytes, key=lambda k: dtype_bytes[k])
            info.dtype = TORCH_NAMES.get(main, main.lower())
        return
    if onnx:
        info.format = "onnx"
        info.size_bytes = sum(f.stat().st_size for f in onnx)
    elif pickles:
        info.format = "pickle"
        info.needs_pickle = True
        info.size_bytes = sum(f.stat().st_size for f in pickles)
        info.notes.append("weights are only in a pickle-based format, which can run code when loaded")
    else:
        info.format = "unknown"
        info.notes.append("no weight files found")


def card_front_matter(root: Path) -> str | None:
    """The YAML front matter of the folder's model card (README.md), read with a bound; None without one."""
    readme = root / "README.md"
    if not readme.is_file():
        return None
    with readme.open("r", encoding="utf-8", errors="replace") as fh:
        head = fh.read(64 * 1024)
    if not head.startswith("---"):
        return None
    end = head.find("\n---", 3)
    return head[: end if end > 0 else len(head)]


def _readme_pipeline_tag(root: Path) -> str | None:
    front = card_front_matter(root)
    match = _PIPELINE_TAG.search(front) if front else None
    return match.group(1) if match else None


def _chat_template(root: Path) -> bool:
    if (root / "chat_template.jinja").is_file() or (root / "chat_template.json").is_file():
        return True
    tok = root / "tokenizer_config.json"
    return tok.is_file() and bool(read_json(tok).get("chat_template"))


def _context_length(cfg: dict[str, Any]) -> int | None:
    """The model's context, from its config or (image-text models) its text model's config."""
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        v = cfg.get(key)
        if isinstance(v, int) and v > 0:
            return v
    text = cfg.get("text_config")
    return _context_length(text) if isinstance(text, dict) and text is not cfg else None


def _vocab_entries(root: Path) -> int | None:
    """Tokens + merges of the folder's tokenizer (tokenizer.json, else vocab.txt), for its memory."""
    tok = root / "tokenizer.json"
    if tok.is_file():
        try:
            model = read_json(tok).get("model")
        except InvalidModelFileError:  # too large to parse here: its memory goes unestimated
            return None
        if isinstance(model, dict):
            vocab, merges = model.get("vocab"), model.get("merges")
            tokens = len(vocab) if isinstance(vocab, dict | list) else 0
            return tokens + (len(merges) if isinstance(merges, list) else 0)
    vocab_txt = root / "vocab.txt"
    if vocab_txt.is_file() and vocab_txt.stat().st_size <= MAX_JSON:
        with vocab_txt.open("rb") as fh:
            return sum(1 for _ in fh)
    return None


def _array_length(meta: dict[str, Any], lengths: dict[str, int], key: str) -> int:
    value = meta.get(key)
    return len(value) if isinstance(value, list) else lengths.get(key, 0)


def _num_labels(cfg: dict[str, Any]) -> int | None:
    """A classifier head's label count: ``num_labels`` when saved, else the size of ``id2label``."""
    if isinstance(cfg.get("num_labels"), int):
        return int(cfg["num_labels"])
    labels = cfg.get("id2label")
    return len(labels) if isinstance(labels, dict) and labels else None


def _engine_and_tasks(root: Path, cfg: dict[str, Any], info: ModelInfo, tag: str | None) -> None:
    """A CrossEncoder that gives one score per pair reranks on sentence-transformers (with its own
    activation); another sentence-transformers folder embeds; the rest is transformers' by its config."""
    st_file = root / "config_sentence_transformers.json"
    st_cfg = read_json(st_file) if st_file.is_file() else {}
    cross = detect.is_cross_encoder(cfg, st_cfg)
    if cross and detect.scores_pairs(info.architecture, _num_labels(cfg)):
        info.engine, info.tasks = "sentence_transformers", [Task.RERANK.value]
        if st_cfg:
            info.sources.append(st_file.name)
    elif (root / "modules.json").is_file() and not cross:
        info.engine = "sentence_transformers"
        info.sources.append("modules.json")
        tagged = [Task(t) for t in detect.tasks_for_config(None, None, tag, False) if t != Task.RERANK.value]
        info.tasks = detect.dedupe([*tagged, Task.EMBED])
    else:
        info.engine = "transformers" if cfg else None
        info.tasks = detect.tasks_for_config(info.architecture, info.model_type, tag, info.chat_template,
                                             _num_labels(cfg))


def _timm_backbone(cfg: dict[str, Any]) -> bool:
    """Whether a vision model's backbone comes from timm (DETR-style configs: ``use_timm_backbone``,
    true when left out, or a ``timm_backbone`` backbone config)."""
    backbone = cfg.get("backbone_config")
    if isinstance(backbone, dict):
        return backbone.get("model_type") == "timm_backbone"
    return cfg.get("model_type") in TIMM_BY_DEFAULT and cfg.get("use_timm_backbone", True) is not False


def _inspect_transformers(root: Path, files: list[Path]) -> ModelInfo:
    info = ModelInfo(path=str(root), format="unknown")
    _weights_facts(info, files, root)
    cfg: dict[str, Any] = {}
    if (root / "config.json").is_file():
        cfg = read_json(root / "config.json")
        info.sources.append("config.json")
    archs = cfg.get("architectures")
    info.architecture = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    info.model_type = cfg.get("model_type") if isinstance(cfg.get("model_type"), str) else None
    if info.dtype is None:
        d = cfg.get("dtype") or cfg.get("torch_dtype")
        info.dtype = d if isinstance(d, str) else None
    info.context_length = _context_length(cfg)
    if isinstance(cfg.get("_name_or_path"), str) and cfg["_name_or_path"].strip("/"):
        info.name_hint = cfg["_name_or_path"].rstrip("/").rsplit("/", 1)[-1]
    tok_cfg = root / "tokenizer_config.json"
    if "auto_map" in cfg or (tok_cfg.is_file() and "auto_map" in read_json(tok_cfg)):
        info.needs_remote_code = True
        info.notes.append("the model ships its own Python code (auto_map); it runs only with --trust-remote-code")
    if _timm_backbone(cfg):
        info.notes.append("the backbone is a timm model (use_timm_backbone): loading it needs the timm package, "
                          "which corral does not install")
    info.chat_template = _chat_template(root)
    tag = _readme_pipeline_tag(root)
    if tag:
        info.sources.append("README.md")
    _engine_and_tasks(root, cfg, info, tag)
    if (root / "preprocessor_config.json").is_file():
        info.sources.append("preprocessor_config.json")
    if not cfg and info.format == "unknown":
        raise InvalidModelFileError(f"{root} has no config.json, GGUF file or weights",
                                    "point corral at a model folder or a .gguf file")
    kv = memory.kv_values_from_config(cfg) if Task.COMPLETE.value in info.tasks else None
    facts = MemoryEstimate(0, 0, weight_bytes=info.size_bytes, kv_values_per_token=kv,
                           vocab_entries=_vocab_entries(root))
    info.memory = memory.with_defaults(info, facts)
    more = (*detect.MODEL_NEEDS.get(info.model_type or "", ()), *(("timm",) if _timm_backbone(cfg) else ()))
    info.requirements = requirements(info.engine, *more)
    return info


# libraries a diffusers pipeline's components come from without running the model's own code: diffusers,
# transformers, and diffusers' own pipeline modules (old files name the safety checker's "stable_diffusion")
DIFFUSERS_LIBRARIES = frozenset({"diffusers", "transformers", "stable_diffusion", "stable_diffusion_xl"})


def _inspect_diffusers(root: Path, files: list[Path]) -> ModelInfo:
    index = read_json(root / "model_index.json")
    info = ModelInfo(path=str(root), format="unknown", engine="diffusers", sources=["model_index.json"])
    _weights_facts(info, files, root)
    class_name = index.get("_class_name")
    info.architecture = class_name if isinstance(class_name, str) else None
    info.model_type = "diffusers"
    info.tasks = detect.tasks_for_diffusers(info.architecture or "")
    if info.architecture and not info.tasks:
        info.notes.append(f"{info.architecture} does not make images or video from a text prompt alone; "
                          "corral runs text-to-image and text-to-video pipelines")
    custom = [part for part, value in index.items() if not part.startswith("_") and isinstance(value, list)
              and len(value) == 2 and isinstance(value[0], str) and value[0] not in DIFFUSERS_LIBRARIES]
    if not isinstance(class_name, str) or custom:
        info.needs_remote_code = True
        info.notes.append("the pipeline names code outside diffusers and transformers "
                          f"({', '.join(custom) or 'its pipeline class'}); it runs only with --trust-remote-code")
    info.size_multiple = pipeline_sizes.size_multiple(root, read_json) if info.tasks else None
    info.memory = memory.with_defaults(info, MemoryEstimate(0, 0, weight_bytes=info.size_bytes))
    info.requirements = requirements(info.engine)
    return info


def _short_text(meta: dict[str, Any], key: str, limit: int = 100) -> str:
    value = meta.get(key)
    return value[:limit] if isinstance(value, str) else "?"


def _inspect_spacy(root: Path, files: list[Path]) -> ModelInfo:
    """A spaCy pipeline: what meta.json says (name, version, language, components), sizes from the
    files. spaCy names no parameter count; it is estimated from the components' weight files."""
    meta = read_json(root / "meta.json")
    pipeline = meta.get("pipeline")
    components = [c[:100] for c in pipeline[:50] if isinstance(c, str)] if isinstance(pipeline, list) else []
    lang, name, version = (_short_text(meta, k) for k in ("lang", "name", "version"))
    info = ModelInfo(path=str(root), format="spacy", engine="spacy", model_type="spacy",
                     architecture=f"spacy ({', '.join(components)})" if components else "spacy",
                     sources=list(SPACY_FILES), name_hint=f"{lang}_{name}")
    info.size_bytes = sum(f.stat().st_size for f in files)
    weights = sum(f.stat().st_size for f in files if f.name == "model" and f.parent.parent == root)
    info.parameters = weights // SPACY_FLOAT_BYTES or None
    info.notes.append(f"spaCy pipeline {lang}_{name} {version}, spaCy {_short_text(meta, 'spacy_version')}")
    info.notes.append("parameters estimated from the components' weight files (float32)")
    if "ner" in components:
        info.tasks = [Task.CLASSIFY_TOKENS.value]
    else:
        info.notes.append("no ner component: corral serves a spaCy pipeline's named entities only")
    info.memory = memory.with_defaults(info, MemoryEstimate(0, 0, weight_bytes=info.size_bytes))
    info.requirements = requirements(info.engine)
    return info


def inspect_gguf(path: Path) -> ModelInfo:
    header = read_gguf_header(path)
    meta = header.metadata
    arch = meta.get("general.architecture")
    arch = arch if isinstance(arch, str) else "unknown"
    template = meta.get("tokenizer.chat_template")
    ctx = meta.get(f"{arch}.context_length")
    info = ModelInfo(
        path=str(path), format="gguf", architecture=arch, model_type=arch, engine="llama_cpp",
        parameters=sum(t.elements for t in header.tensors), quantization=gguf_quantization(header),
        context_length=ctx if isinstance(ctx, int) else None, size_bytes=header.file_size,
        chat_template=isinstance(template, str) and bool(template), sources=[path.name],
    )
    if info.quantization in UNQUANTIZED:
        info.dtype, info.quantization = UNQUANTIZED[info.quantization], None
    info.tasks = detect.tasks_for_gguf(arch, info.chat_template)
    vocab = sum(_array_length(meta, header.array_lengths, f"tokenizer.ggml.{k}") for k in ("tokens", "merges"))
    facts = MemoryEstimate(0, 0, weight_bytes=header.file_size,
                           kv_values_per_token=memory.kv_values_from_gguf(meta, arch), vocab_entries=vocab or None)
    info.memory = memory.with_defaults(info, facts)
    info.requirements = requirements(info.engine)
    name = meta.get("general.name")
    if isinstance(name, str):
        info.notes.append(f"general.name: {name}")
        info.name_hint = name
    return info
