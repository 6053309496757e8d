#!/usr/bin/env bash
# Start, scale and stop the distributed Mimir cluster: a thin wrapper over `mimir cluster`.
#   ./start-distributed.sh up|start        start redis, backend and $WORKERS workers (default 2)
#   ./start-distributed.sh down|stop       remove the containers (volumes are kept)
#   ./start-distributed.sh restart [SVC]   restart a service (default: backend)
#   ./start-distributed.sh logs [SVC]      follow the logs (all services by default)
#   ./start-distributed.sh ps|status       show the services
#   ./start-distributed.sh scale N         run N workers
#   ./start-distributed.sh build           build the images
#   ./start-distributed.sh clean           remove containers and volumes (data is lost)
# Environment: WORKERS, BACKEND (docker|local, default docker), PROJECT (mimir), MIMIR_PORT.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ -n ${MIMIR:-} ]]; then mimir=("$MIMIR")
elif [[ -x $here/../.venv/bin/mimir ]]; then mimir=("$here/../.venv/bin/mimir")
else mimir=(mimir); fi
common=(--backend "${BACKEND:-docker}" --project "${PROJECT:-mimir}")
command=${1:-help}
shift || true
case $command in
  up|start)     exec "${mimir[@]}" cluster up "${common[@]}" --workers "${WORKERS:-2}" "$@" ;;
  down|stop)    exec "${mimir[@]}" cluster down "${common[@]}" "$@" ;;
  restart)      exec "${mimir[@]}" cluster restart "${1:-backend}" "${common[@]}" ;;
  logs)         exec "${mimir[@]}" cluster logs "$@" -f "${common[@]}" ;;
  ps|status)    exec "${mimir[@]}" cluster status "${common[@]}" "$@" ;;
  scale)        [[ $# -ge 1 ]] || { echo "usage: $0 scale N" >&2; exit 2; }
                exec "${mimir[@]}" cluster scale "$1" "${common[@]}" ;;
  build)        exec "$here/build-distributed.sh" "$@" ;;
  clean)        exec "${mimir[@]}" cluster clean "${common[@]}" "$@" ;;
  help|-h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)            echo "unknown command '$command' (try: $0 help)" >&2; exit 2 ;;
esac
