#!/usr/bin/env bash
# Build the console's one-folder bundle with PyInstaller: dist/mimir/mimir
#   packaging/build-console.sh
# It builds from its own venv, build/bundle-venv (made on first use, remade when
# pyproject.toml changes): the project with its console and embedded extras and PyInstaller,
# none of the dev extra (a venv with it would ship mypy, pytest, pygments ...).
# PYTHON=/path/to/python builds from that interpreter's environment as it is instead.
# Then: dist/mimir/mimir            the console
#       dist/mimir/mimir --smoke    open, start a local cluster, exit 0
#       dist/mimir/mimir server|worker|cluster ...   headless
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${PYTHON:-} ]]; then
    venv=${BUNDLE_VENV:-build/bundle-venv}
    stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
    if [[ ! -f $stamp ]]; then
        rm -rf "$venv"
        "${BASE_PYTHON:-python3}" -m venv "$venv"
        # Editable: the dist-info (entry points) without building the project in-tree.
        "$venv/bin/pip" install -q -e '.[console,embedded]' 'pyinstaller>=6.0'
        touch "$stamp"
    fi
    PYTHON=$venv/bin/python
fi
dist="${DIST_DIR:-dist}"
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$dist" --workpath "${WORK_DIR:-build/pyinstaller}" mimir.spec
# Debug symbols out of what carries them (libpython, lib-dynload, extension modules:
# ~50 MB). Not the auditwheel-patched libraries of *.libs/ folders, which strip can break.
find "$dist/mimir/_internal" -type f \( -name '*.so' -o -name '*.so.*' \) -not -path '*.libs/*' \
    -print0 | while IFS= read -r -d '' library; do
        if readelf -S "$library" 2>/dev/null | grep ' \.symtab' >/dev/null; then
            strip --strip-unneeded "$library"
        fi
    done
# Links to libraries the spec left out (PyInstaller makes them for every Qt library).
find "$dist/mimir/_internal" -xtype l -delete
du -sh "$dist/mimir" | awk '{print "bundle: " $2 " (" $1 ")"}'
