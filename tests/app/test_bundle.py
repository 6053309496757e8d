"""The PyInstaller bundle: build it from mimir.spec, then run its console with --smoke.

Slow (minutes): marked ``bundle`` so it runs apart from the fast suite (``-m bundle``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bundle, pytest.mark.slow]


@pytest.mark.timeout(1800)
def test_bundle_builds_and_smoke_runs_offscreen(tmp_path: Path) -> None:
    # Both come with `make test` (the dev extra and scripts/system-deps.sh): a missing one
    # is a broken setup, reported as a failure rather than hidden as a skip.
    import PyInstaller  # noqa: F401

    assert shutil.which("redis-server"), "the smoke run's local cluster needs redis-server on PATH"
    dist, work = tmp_path / "dist", tmp_path / "work"
    env = {**os.environ, "DIST_DIR": str(dist), "WORK_DIR": str(work), "PYTHON": sys.executable}
    build = subprocess.run(
        [str(ROOT / "packaging" / "build-console.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    program = dist / "mimir" / "mimir"
    assert program.is_file()

    run_env = {
        k: v for k, v in os.environ.items() if not k.startswith("MIMIR_") and k != "REDIS_URL"
    }
    run_env.update(
        QT_QPA_PLATFORM="offscreen",
        MIMIR_STATE_DIR=str(tmp_path / "state"),
        MIMIR_DATA_DIR=str(tmp_path / "data"),
        MIMIR_PIPELINES_DIR=str(tmp_path / "pipelines"),
    )
    smoke = subprocess.run(
        [str(program), "--smoke"],
        env=run_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = smoke.stdout + smoke.stderr
    assert smoke.returncode == 0, output[-4000:]
    assert "smoke: window shown, cluster up" in output

    # The headless commands ride along in the same bundle.
    for command in (["worker", "--help"], ["server", "--help"], ["cluster", "--help"]):
        answer = subprocess.run(
            [str(program), *command], env=run_env, capture_output=True, text=True, timeout=120
        )
        assert answer.returncode == 0, (command, answer.stdout[-2000:], answer.stderr[-2000:])
