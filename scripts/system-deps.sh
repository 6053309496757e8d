#!/usr/bin/env bash
# Install the Debian packages the tests need and start the services they use.
# Idempotent: a package already there is not installed again. Needs root (CI runs as root).
set -euo pipefail

PACKAGES=(
  redis-server                       # the real Redis the queue tests run against
  libglib2.0-0                       # Qt's core needs it: without it pytest-qt aborts every run
  libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 fonts-dejavu-core
  xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0 libxcb-render-util0
  libxcb-shape0 libxcb-randr0 libxcb-xinerama0 libxcb-xkb1   # Qt under Xvfb (xvfb-run needs xauth)
  binutils                           # objdump, which PyInstaller needs for the bundle test
  systemd strace                     # systemd-analyze verify of packaging/systemd; strace checks
                                     # the units' SystemCallFilter (not in a minbase install)
  faketime                           # libfaketime: a worker with a shifted clock (doctor tests)
  age                                # the reference tool the backup encryption interoperates with
  openssh-client                     # ssh:// Docker engines: the tunnel, ssh-keyscan, ssh-keygen
  prometheus                         # `cluster up --monitoring` on the local backend runs it;
                                     # promtool checks the generated scrape configuration
  postgresql                         # the run store's tests start throwaway clusters with its
                                     # initdb/pg_ctl (tests/pg.py); Debian's default cluster
                                     # on 5432 that the package starts is not used
)
# PyInstaller (the bundle test) needs the shared libpython of Debian's own Python, which a
# minimal install lacks; a Python built elsewhere (pyenv) carries its own.
py=${PYTHON:-python3}
if pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
    && [[ $(command -v "$py") == /usr/bin/* ]]; then
  PACKAGES+=("libpython$pyver")
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "system-deps: missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "system-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The project's own tests start redis-server on free ports; the distribution's
# default instance on 6379 is not needed.

# --- Docker (cluster tests): Debian's engine, started by hand, and a local base image ---
# No registry image can be pulled here, so the base image is built with debootstrap and
# cached in the engine (and as a tarball, so a wiped engine re-imports it in seconds).
# Set MIMIR_SKIP_DOCKER=1 to skip this section.
if [[ ${MIMIR_SKIP_DOCKER:-0} != 1 && $(id -u) -eq 0 ]]; then
  docker_missing=()
  for pkg in docker.io docker-compose debootstrap iptables; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || docker_missing+=("$pkg")
  done
  if ((${#docker_missing[@]})); then
    echo "system-deps: installing ${docker_missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${docker_missing[@]}" >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    echo "system-deps: starting dockerd (log: /var/log/dockerd.log)"
    (setsid nohup dockerd >/var/log/dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { echo "system-deps: dockerd did not start:" >&2; tail -20 /var/log/dockerd.log >&2; exit 1; }
  fi
  BASE_IMAGE=${MIMIR_BASE_IMAGE:-mimir/base:bookworm}
  BASE_CACHE=${MIMIR_BASE_CACHE:-/var/cache/mimir/base-bookworm.tar}
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if [[ ! -s $BASE_CACHE ]]; then
      echo "system-deps: building $BASE_IMAGE with debootstrap (once; cached in $BASE_CACHE)"
      rootfs=$(mktemp -d /tmp/mimir-rootfs.XXXXXX)
      debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian >/tmp/mimir-debootstrap.log 2>&1 \
        || { echo "system-deps: debootstrap failed:" >&2; tail -20 /tmp/mimir-debootstrap.log >&2; exit 1; }
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
      mkdir -p "$(dirname "$BASE_CACHE")"
      tar -C "$rootfs" -cf "$BASE_CACHE.tmp" . && mv "$BASE_CACHE.tmp" "$BASE_CACHE"
      rm -rf "$rootfs"
    fi
    docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
      "$BASE_CACHE" "$BASE_IMAGE" >/dev/null
    echo "system-deps: imported $BASE_IMAGE"
  fi
fi
echo "system-deps: ok"
