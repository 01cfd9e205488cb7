"""Files written whole or not at all: a temporary file in the same folder, synced, then renamed over
the target, so a crash or a kill leaves the old file or the new one, never a part."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_atomically(target: Path, parts: Iterable[bytes], *, suffix: str = ".part") -> Path:
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}-", suffix=suffix, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.writelines(parts)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target
