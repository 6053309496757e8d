"""What the console's throw-away runs leave behind: nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PySide6")


_CONSOLE = "import sys; from mimir.app.cli import main; raise SystemExit(main(sys.argv[1:]))"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMIR_") and k != "REDIS_URL"}
    for name in ("tmp", "state", "data", "pipelines"):
        (tmp_path / name).mkdir()
    env.update(
        TMPDIR=str(tmp_path / "tmp"),
        MIMIR_STATE_DIR=str(tmp_path / "state"),
        MIMIR_DATA_DIR=str(tmp_path / "data"),
        MIMIR_PIPELINES_DIR=str(tmp_path / "pipelines"),
        QT_QPA_PLATFORM="offscreen",
    )
    return env


def test_smoke_run_leaves_no_scratch_or_state_directory(tmp_path: Path) -> None:
    """Issue 13: ``--smoke`` left ``mimir-smoke-*`` in the temp directory and
    ``smoke-<pid>/`` in the state directory."""
    env = _env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _CONSOLE, "--smoke", "--smoke-timeout", "120"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "smoke: window shown" in done.stdout
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "state").iterdir()) == []


def test_screenshot_tool_leaves_no_scratch_directory(tmp_path: Path) -> None:
    """Issue 13: the screenshot tool left ``mimir-shots-*`` (data, pipelines, the
    cluster's state) in the temp directory."""
    env = _env(tmp_path)
    out = tmp_path / "shots"
    done = subprocess.run(
        [sys.executable, "-m", "mimir.app.screenshots", str(out), "--seconds", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    shots = {path.name for path in out.iterdir()}
    assert {"cluster.png", "dashboard.png", "jobs.png", "dead_letter.png"} <= shots, shots
    assert list((tmp_path / "tmp").iterdir()) == []
