#!/usr/bin/env bash
# Installs corral with every engine and everything the tests need, on CPU.
# torch goes first and alone: asked for by another package, pip would take a CUDA build.
# Set TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) where the CPU wheel
# is not on the default index.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if ! "$PY" -c 'import torch' 2>/dev/null; then
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        "$PY" -m pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
    else
        "$PY" -m pip install torch==2.13.0
    fi
fi
"$PY" -m pip install -e '.[dev]'
