"""Inspection of the speech model layouts that are not transformers folders: CTranslate2 Whisper
folders (``model.bin`` + a CTranslate2 ``config.json``, which names no ``architectures`` or
``model_type``, + ``tokenizer.json``; the faster_whisper engine) and CMU Sphinx model folders (an
acoustic model folder with ``mdef``, ``means``, ``variances``, ``transition_matrices``, a
language model ``*.lm.bin`` and a pronunciation dictionary ``*.dict``; the pocketsphinx engine).
File reading is bounded: the CTranslate2 header (:mod:`corral.models.ct2_header`), sizes, names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import InvalidModelFileError
from corral.models import memory
from corral.models.ct2_header import read_ct2_header
from corral.models.info import MemoryEstimate, ModelInfo, Requirement
from corral.tasks import Task

CT2_VOCABULARIES = ("tokenizer.json", "vocabulary.txt", "vocabulary.json", "shared_vocabulary.txt",
                    "shared_vocabulary.json")
CT2_SPECS: dict[str, tuple[Task, ...]] = {"WhisperSpec": (Task.TRANSCRIBE,)}  # spec name -> tasks
CT2_ENGINES: dict[str, str] = {"WhisperSpec": "faster_whisper"}
ACOUSTIC_FILES = ("mdef", "means", "variances", "transition_matrices")  # a Sphinx acoustic model folder
SPHINX_LANGUAGE = {"en-us": "en"}  # acoustic model folder name -> language code


def ct2_config(root: Path, read_json: Callable[[Path], dict[str, Any]]) -> dict[str, Any] | None:
    """The folder's CTranslate2 config when it is a CTranslate2 model folder, else None: ``model.bin``,
    a ``config.json`` that is not a transformers config, and a vocabulary."""
    config = root / "config.json"
    if not ((root / "model.bin").is_file() and config.is_file()):
        return None
    cfg = read_json(config)
    if cfg.get("architectures") or cfg.get("model_type"):
        return None  # a transformers folder (model.bin would be a pickle there)
    return cfg if any((root / name).is_file() for name in CT2_VOCABULARIES) else None


Requirements = Callable[..., list[Requirement]]


def inspect_ctranslate2(root: Path, cfg: dict[str, Any], requirements: Requirements) -> ModelInfo:
    header = read_ct2_header(root / "model.bin")
    info = ModelInfo(path=str(root), format="ctranslate2", architecture=header.spec, model_type="ctranslate2",
                     parameters=header.parameters, dtype=header.dtype, size_bytes=header.file_size,
                     sources=["model.bin", "config.json"])
    info.tasks = [t.value for t in CT2_SPECS.get(header.spec, ())]
    info.engine = CT2_ENGINES.get(header.spec)
    if info.engine is None:
        info.notes.append(f"a CTranslate2 {header.spec} model: corral runs CTranslate2 Whisper models only")
    if info.engine == "faster_whisper":
        if not (root / "tokenizer.json").is_file():
            info.notes.append("no tokenizer.json: faster-whisper would download one, which corral never lets it do")
        else:
            info.sources.append("tokenizer.json")
        langs = cfg.get("lang_ids")
        info.notes.append("multilingual: transcribes and translates into English" if isinstance(langs, list)
                          and len(langs) > 1 else "English only")
    joined = read_record(root)
    if joined is not None:
        info.notes.append(f"{joined.get('file')} joined by corral from {len(joined.get('parts') or [])} parts: "
                          f"{joined.get('size')} bytes, sha256 {joined.get('sha256')}")
    # the tokenizer is in the engine's overhead (measured with it): no per-entry share here
    info.memory = memory.with_defaults(info, MemoryEstimate(0, 0, weight_bytes=header.file_size))
    info.requirements = requirements(info.engine)
    return info


def read_record(root: Path) -> dict[str, Any] | None:
    from corral.models.parts import read_record as read

    return read(root)


@dataclass(frozen=True)
class SphinxFiles:
    acoustic: Path  # the acoustic model folder (-hmm)
    language_model: Path  # *.lm.bin (-lm)
    dictionary: Path  # *.dict (-dict)

    @property
    def language(self) -> str:
        return SPHINX_LANGUAGE.get(self.acoustic.name.lower(), self.acoustic.name.split("-")[0].lower())


def sphinx_files(root: Path) -> SphinxFiles | None:
    """The parts of a Sphinx model folder, or None when ``root`` is not one. Of several language
    models, the one named like the acoustic model (``en-us.lm.bin`` beside ``en-us/``) wins over a
    phonetic one (``*-phone.lm.bin``)."""
    if not root.is_dir():
        return None
    acoustic = sorted(d for d in root.iterdir() if d.is_dir() and all((d / f).is_file() for f in ACOUSTIC_FILES))
    models = sorted(f for f in root.glob("*.lm.bin") if f.is_file())
    dictionaries = sorted(f for f in root.glob("*.dict") if f.is_file())
    if len(acoustic) != 1 or not models or len(dictionaries) != 1:
        return None
    named = [m for m in models if m.name == f"{acoustic[0].name}.lm.bin"]
    words = [m for m in models if "phone" not in m.name]
    chosen = named or words or models
    return SphinxFiles(acoustic[0], chosen[0], dictionaries[0])


def inspect_sphinx(root: Path, files: SphinxFiles, requirements: Requirements) -> ModelInfo:
    parts = [files.acoustic, files.language_model, files.dictionary]
    size = sum(f.stat().st_size for f in files.acoustic.iterdir() if f.is_file())
    size += files.language_model.stat().st_size + files.dictionary.stat().st_size
    info = ModelInfo(path=str(root), format="sphinx", architecture=f"pocketsphinx ({files.acoustic.name})",
                     model_type="sphinx", engine="pocketsphinx", tasks=[Task.TRANSCRIBE.value], size_bytes=size,
                     sources=[str(p.relative_to(root)) for p in parts])
    info.notes.append(f"CMU Sphinx acoustic model {files.acoustic.name}, language {files.language}; "
                      f"16 kHz audio; no translation, no prompt")
    if size == 0:
        raise InvalidModelFileError(f"{root}: the Sphinx model files are empty")
    info.memory = memory.with_defaults(info, MemoryEstimate(0, 0, weight_bytes=size))
    info.requirements = requirements(info.engine)
    return info
