"""The README's first command: ``make demo`` runs ``python -m mimir.core.demo``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.slow


def test_demo_runs_examples_and_drains_queued_jobs_on_the_embedded_default(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.update(
        MIMIR_DATA_DIR=str(tmp_path / "data"),
        MIMIR_PIPELINES_DIR=str(tmp_path / "pipelines"),
        MIMIR_STATE_DIR=str(tmp_path / "state"),
    )
    command = [
        sys.executable,
        "-m",
        "mimir.core.demo",
        "--once",
        "--jobs",
        "10",
        "--port",
        str(free_port()),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "10 succeeded" in done.stdout, output
    # The examples were seeded into the user's directories, and their outputs written there.
    assert (tmp_path / "pipelines" / "test_pipeline.yaml").is_file()
    assert any((tmp_path / "data").rglob("*.json")), output
