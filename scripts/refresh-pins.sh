#!/usr/bin/env bash
# Re-resolves every dependency to the newest versions the package index has today, runs ruff, mypy and the whole
# suite against them in a fresh venv, and only if it passes rewrites constraints.txt (which
# install.sh installs from). Prints which versions moved, for the commit message and the note.
#
#   bash scripts/refresh-pins.sh && git commit -am "pins: refresh" constraints.txt
#
# torch stays at its pinned version (a CPU build; see install.sh) unless TORCH_VERSION names another.
# Takes as long as a fresh install plus the suite (pip's wheel cache makes the install quick on a
# machine that built llama-cpp-python before). KEEP_VENV=1 keeps the venv for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=$(mktemp -d /tmp/corral-pins.XXXXXX)
[ "${KEEP_VENV:-0}" = 1 ] || trap 'rm -rf "$venv"' EXIT
"$PY" -m venv "$venv"
vpy="$venv/bin/python"
"$vpy" -m pip install -q --upgrade pip
torch_version=${TORCH_VERSION:-$(sed -n 's/^torch==//p' constraints.txt)}
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$vpy" -m pip install -q --index-url "$TORCH_INDEX_URL" "torch==$torch_version"
else
    "$vpy" -m pip install -q "torch==$torch_version"
fi
CMAKE_ARGS="-DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}" "$vpy" -m pip install -q -e '.[dev]'
new=$(mktemp)
{
    echo "# Every package the suite last passed with; install.sh installs from this file."
    echo "# Made by scripts/refresh-pins.sh on $(date -u +%Y-%m-%d), $("$vpy" -c 'import platform; print("Python", platform.python_version(), platform.system(), platform.machine())')."
    echo "# Local version labels (+cpu) are dropped: ==X also matches X+cpu."
    "$vpy" -m pip freeze --exclude-editable --all | grep -viE '^(pip|corral)==' | sed -E 's/\+[A-Za-z0-9.]+$//' | LC_ALL=C sort -f
} > "$new"
old=$(mktemp)
cp constraints.txt "$old" 2>/dev/null || : > "$old"
cp "$new" constraints.txt
if ! { "$vpy" -m ruff check src tests benchmarks && "$vpy" -m mypy && "$vpy" -m pytest -q; }; then
    cp "$old" constraints.txt
    echo "The checks failed with the newest versions; constraints.txt is unchanged." >&2
    exit 1
fi
echo "Versions that moved:"
diff <(grep -v '^#' "$old") <(grep -v '^#' constraints.txt) | grep '^[<>]' || echo "  none"
echo "constraints.txt rewritten; ruff, mypy and the suite passed with it."
