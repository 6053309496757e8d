#!/usr/bin/env bash
# Build the console's one-folder bundle with PyInstaller: dist/mimir/mimir
#   packaging/build-console.sh            (uses .venv/bin/python when present)
# Then: dist/mimir/mimir            the console
#       dist/mimir/mimir --smoke    open, start a local cluster, exit 0
#       dist/mimir/mimir server|worker|cluster ...   headless
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "${DIST_DIR:-dist}" --workpath "${WORK_DIR:-build/pyinstaller}" mimir.spec
du -sh "${DIST_DIR:-dist}/mimir" | awk '{print "bundle: " $2 " (" $1 ")"}'
