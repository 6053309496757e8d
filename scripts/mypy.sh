#!/usr/bin/env bash
# mypy over the four packages under the names they install as (mimir.core, mimir.server,
# mimir.worker, mimir.app). Run from the repository root: `bash scripts/mypy.sh [MYPY]`.
#
# Why not `mypy core server worker app`: the folders install as mimir.* through
# setuptools' package-dir, and the editable install maps them with an import hook that
# mypy cannot see. Checked as `core/...`, every `from mimir.core... import` inside them
# was unresolved, and `ignore_missing_imports` turned it into `Any` without a word.
# So lay the package out as it installs (symlinks, kept in the venv) and check that;
# error paths are printed relative to the root again (`core/x.py`, not `mimir/core/x.py`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mypy="${1:-$root/.venv/bin/mypy}"
# Absolute, since the check runs from inside the tree (make passes .venv/bin/mypy).
[[ $mypy == /* ]] || mypy="$PWD/$mypy"
tree="$root/.venv/mypy-tree"
packages=(core server worker app)

mkdir -p "$tree/mimir"
args=()
for package in "${packages[@]}"; do
    ln -sfn "$root/$package" "$tree/mimir/$package"
    args+=(-p "mimir.$package")
done

cd "$tree"
MYPYPATH="$tree" "$mypy" --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" \
    "${args[@]}" | sed -E 's#^mimir/(core|server|worker|app)/#\1/#'
