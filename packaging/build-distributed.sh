#!/usr/bin/env bash
# Build the Mimir images (backend, worker; Redis when it cannot be pulled): a thin wrapper
# over `mimir cluster build`, which first builds the Python wheelhouse on this host
# (packaging/build/wheels) so that the images need no package index.
#   ./build-distributed.sh [--unified]      also build the one-container image
# Environment: BASE_IMAGE (default python:3.11-slim, else mimir/base:bookworm if present),
#              REDIS_IMAGE (default redis:7-alpine), DOCKER_HOST.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ -n ${MIMIR:-} ]]; then mimir=("$MIMIR")
elif [[ -x $here/../.venv/bin/mimir ]]; then mimir=("$here/../.venv/bin/mimir")
else mimir=(mimir); fi
args=(--backend docker --project "${PROJECT:-mimir}")
[[ -n ${BASE_IMAGE:-} ]] && args+=(--base-image "$BASE_IMAGE")
[[ -n ${REDIS_IMAGE:-} ]] && args+=(--redis-image "$REDIS_IMAGE")
exec "${mimir[@]}" cluster build "${args[@]}" "$@"
