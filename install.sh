#!/usr/bin/env bash
# Installs corral with every engine and everything the tests need, on CPU, at the versions the
# suite last passed with (constraints.txt; refresh with scripts/refresh-pins.sh).
#
# - torch goes first and alone: asked for by another package, pip would take a CUDA build. Set
#   TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) where the CPU wheel is not on the
#   default index.
# - llama-cpp-python compiles from source. corral uses its llama.cpp library only, so the
#   multimodal library (mtmd/llava) is not built; CMAKE_ARGS of your own are kept. pip's wheel
#   cache keeps the built wheel: a second install (any venv, same machine) does not compile.
# - System packages later features and the tests use (espeak-ng, chromium) are installed with
#   apt when this runs as root on Debian/Ubuntu; otherwise the command to run is printed.
#   CORRAL_SKIP_SYSTEM=1 skips that step.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
CONSTRAINTS=(-c constraints.txt)
SYSTEM_PACKAGES=(espeak-ng chromium)

system_packages() {
    local missing=()
    for pkg in "${SYSTEM_PACKAGES[@]}"; do
        command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "install.sh: installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "install.sh: some features and tests need: ${missing[*]}. Install them with:" >&2
        echo "    sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    fi
}

[ "${CORRAL_SKIP_SYSTEM:-0}" = 1 ] || system_packages

if ! "$PY" -c 'import torch' 2>/dev/null; then
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        "$PY" -m pip install "${CONSTRAINTS[@]}" --index-url "$TORCH_INDEX_URL" torch
    else
        "$PY" -m pip install "${CONSTRAINTS[@]}" torch
    fi
fi
export CMAKE_ARGS="-DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}"
"$PY" -m pip install "${CONSTRAINTS[@]}" -e '.[dev]'
