#!/usr/bin/env bash
# The fast suite's core, queue, worker and server tests on the other Pythons the project
# supports (default 3.12 and 3.13; `make test-pythons PYTHONS="3.12"` to choose). For each,
# a venv in build/py<version> with the console, embedded and dev extras (remade when
# pyproject.toml changes), then pytest on that subset. The interpreter is python<version>
# on PATH if it runs, else pyenv's newest <version>.* (these machines have pyenv); a missing
# one fails.
#
# Why a subset: the whole suite takes ~47 min on one Python; the Python-version-sensitive
# code (pipeline engine, plugins, queue Lua and client, worker, server and its
# subprocesses) is in these folders, ~16 min per Python on a 2-core machine, and the
# console's Qt tests depend on PySide6's build for that Python more than on ours.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -gt 0 ]] || set -- 3.12 3.13
# The extras `make venv` installs (tracing: the OpenTelemetry SDK and the OTLP proto the trace
# test decodes with); in the stamp, so that a change of them makes the venv again.
extras=console,embedded,tracing,dev
stamp_id=$( (cat pyproject.toml; echo "$extras") | sha256sum | cut -c1-16)

find_python() {  # the first candidate that runs and is that version (a pyenv shim may not)
    local version=$1 candidate
    for candidate in "$(command -v "python$version" || true)" \
        $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python 2>/dev/null \
            | sort -V -r); do
        if [[ -n $candidate ]] && "$candidate" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$version'" 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    return 1
}

for version in "$@"; do
    if ! python=$(find_python "$version"); then
        echo "test-pythons: no Python $version (python$version on PATH, or pyenv install $version)" >&2
        exit 1
    fi
    venv=build/py$version
    if [[ ! -f $venv/.installed-$stamp_id ]]; then
        echo "test-pythons: making $venv with $python"
        rm -rf "$venv"
        "$python" -m venv "$venv"
        "$venv/bin/pip" install -q --upgrade pip
        "$venv/bin/pip" install -q -e ".[$extras]"
        touch "$venv/.installed-$stamp_id"
    fi
    echo "test-pythons: $("$venv/bin/python" -V)"
    # The schemathesis fuzz (~3.5 min) checks the API's schema, which no Python changes; the
    # failover and cluster tests (marker ha) run once, in make test.
    "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not docker and not bundle and not wheel and not ha" \
        --ignore=tests/server/test_openapi_fuzz.py tests/core tests/queue tests/worker tests/server
done
