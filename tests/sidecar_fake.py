"""``python -m tests.sidecar_fake [--max-line-bytes N]``: corral's real sidecar loop over a runtime whose
engine table has the fake engine's row (tests/fake_engine.py), reading the manifest CORRAL_HOME points at.
The tests register fake models there first; everything else is corral's own code."""

from __future__ import annotations

import argparse

from tests.fake_engine import FAKE_ENGINES

from corral.config import load_settings
from corral.runtime.runtime import build_runtime
from corral.sidecar.server import run_sidecar


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-line-bytes", type=int, default=16 * 1024 * 1024)
    args = parser.parse_args()
    return run_sidecar(build_runtime(load_settings(None, {}), engines=FAKE_ENGINES), max_line=args.max_line_bytes)


if __name__ == "__main__":
    raise SystemExit(main())
