"""Piper voices: ``NAME.onnx`` beside its ``NAME.onnx.json`` (as Piper ships and downloads them),
given as the .onnx file or as a folder holding one voice. Inspection reads the JSON config only
(bounded): sample rate, language, quality, speakers; the weights are not opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corral.errors import InvalidModelFileError
from corral.models.info import MemoryEstimate, ModelInfo
from corral.tasks import Task

CONFIG_SUFFIX = ".json"  # NAME.onnx -> NAME.onnx.json


def config_of(onnx: Path) -> Path:
    return onnx.with_name(onnx.name + CONFIG_SUFFIX)


def is_voice_file(path: Path) -> bool:
    return path.suffix.lower() == ".onnx" and path.is_file() and config_of(path).is_file()


def voices_in(folder: Path) -> list[Path]:
    """The Piper voices directly in ``folder``."""
    return sorted(p for p in folder.glob("*.onnx") if is_voice_file(p))


def voice_file(path: Path) -> Path:
    """The one voice ``path`` names: the .onnx file itself, or the only voice in a folder."""
    if path.is_file():
        return path
    found = voices_in(path)
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise InvalidModelFileError(f"{path} should hold one Piper voice (NAME.onnx + NAME.onnx.json); "
                                    f"it holds: {names}", "point corral at one of the .onnx files")
    return found[0]


def speakers(config: dict[str, Any]) -> tuple[list[str], str]:
    """(the voice's speaker names, the default one); a single-speaker voice has the one "default"."""
    names = config.get("speaker_id_map") or {}
    if not isinstance(names, dict) or int(config.get("num_speakers") or 1) <= 1 or not names:
        return ["default"], "default"
    by_id = {v: k for k, v in names.items() if isinstance(v, int)}
    default = by_id.get(int(config.get("default_speaker_id") or 0), next(iter(names)))
    return [str(k) for k in names], str(default)


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def inspect_voice(onnx: Path) -> ModelInfo:
    from corral.models import memory
    from corral.models.inspect import read_json, requirements

    config = read_json(config_of(onnx))
    audio = _section(config, "audio")
    rate = audio.get("sample_rate")
    if not isinstance(rate, int) or rate <= 0 or not isinstance(config.get("phoneme_id_map"), dict):
        raise InvalidModelFileError(f"{config_of(onnx).name} is not a Piper voice config (no audio.sample_rate or "
                                    "phoneme_id_map)")
    language, espeak = _section(config, "language"), _section(config, "espeak")
    names, default = speakers(config)
    info = ModelInfo(path=str(onnx), format="onnx", architecture="piper (VITS, ONNX)", model_type="piper",
                     tasks=[Task.SPEAK.value], engine="piper", size_bytes=onnx.stat().st_size,
                     sources=[onnx.name, config_of(onnx).name], name_hint=onnx.name[: -len(".onnx")])
    lang = language.get("code") or espeak.get("voice") or "?"
    info.notes.append(f"Piper voice: {lang}, {audio.get('quality') or '?'} quality, {rate} Hz, "
                      f"piper {config.get('piper_version') or '?'}")
    if len(names) > 1:
        info.notes.append(f"{len(names)} speakers: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''} "
                          f"(default {default})")
    info.memory = memory.with_defaults(info, MemoryEstimate(0, 0, weight_bytes=info.size_bytes))
    info.requirements = requirements(info.engine)
    return info
