"""Offline wheels for a fresh venv: each installed distribution an export pins, packed back into a
wheel from its installed files (its RECORD) and its own WHEEL tag. With ``pip install --no-index
--find-links DIR`` a fresh venv installs exactly the versions of this environment without any index,
which is how the export tests prove the written requirements are complete."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import zipfile
from importlib.metadata import Distribution, distribution
from pathlib import Path

SKIP_META = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def _tag(dist: Distribution) -> str:
    wheel = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    if not tags:
        raise RuntimeError(f"{dist.metadata['Name']} was not installed from a wheel: no tag to repack it with")
    parts = [list(dict.fromkeys(t.split("-")[i] for t in tags)) for i in range(3)]
    return "-".join(".".join(p) for p in parts)  # py2-none-any + py3-none-any -> py2.py3-none-any


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def repack(name: str, dest: Path) -> Path:
    """The installed distribution ``name`` as a wheel in ``dest`` (files outside site-packages, such as
    console scripts, are left out: pip writes its own)."""
    dist = distribution(name)
    base = Path(str(dist.locate_file("")))
    safe = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    info_dir = f"{safe}-{dist.version}.dist-info"
    target = dest / f"{safe}-{dist.version}-{_tag(dist)}.whl"
    records = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as whl:
        for item in dist.files or ():
            parts = Path(str(item)).parts
            if ".." in parts or "__pycache__" in parts:
                continue
            if parts[0].endswith(".dist-info"):
                if parts[-1] in SKIP_META:
                    continue
                arc = "/".join((info_dir, *parts[1:]))
            else:
                arc = Path(str(item)).as_posix()
            source = base / str(item)
            if not source.is_file():
                continue
            data = source.read_bytes()
            whl.writestr(arc, data)
            records.append(_record_line(arc, data))
        records.append(f"{info_dir}/RECORD,,")
        whl.writestr(f"{info_dir}/RECORD", "\n".join(records) + "\n")
    return target


def pinned_names(*requirement_files: Path) -> list[str]:
    names = []
    for path in requirement_files:
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                names.append(line.split("==", 1)[0])
    return names


def fresh_venv(folder: Path, wheels: Path, *requirements: Path, no_deps: Path | None = None) -> Path:
    """A venv at ``folder`` (no system site-packages) with ``requirements`` installed from ``wheels``
    only; ``no_deps``: a requirements file installed without dependencies. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)  # pip from ensurepip's bundled wheel
    python = folder / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--no-cache-dir",
           "--disable-pip-version-check", "--quiet"]
    args = [a for r in requirements for a in ("-r", str(r))]
    _pip([*pip, *args])
    if no_deps is not None:
        _pip([*pip, "--no-deps", "-r", str(no_deps)])
    return python


def _pip(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=_pip_env())
    if done.returncode != 0:
        raise RuntimeError(f"pip failed ({done.returncode}): {done.stderr[-3000:]}")


def _pip_env() -> dict[str, str]:
    import os

    # pip's own config here (find-links, extra index, a global constraints file) must not reach the venv
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1"}
