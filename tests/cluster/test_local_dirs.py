"""Where a local cluster keeps its data and pipelines (no process is started)."""

from __future__ import annotations

from pathlib import Path

from mimir.app.cluster.local import LocalBackend
from mimir.core.settings import Settings, default_data_dir, default_pipelines_dir


def test_each_project_but_the_default_one_has_its_own_directories(tmp_path: Path) -> None:
    settings = Settings.from_env({"MIMIR_STATE_DIR": str(tmp_path)})
    one, other = LocalBackend("one", settings), LocalBackend("other", settings)
    assert one.data_dir == tmp_path / "one" / "data"
    assert one.pipelines_dir == tmp_path / "one" / "pipelines"
    assert other.data_dir == tmp_path / "other" / "data" != one.data_dir
    assert one.redis_dir == tmp_path / "one" / "redis"
    # The default project keeps the per-user directories it always had.
    default = LocalBackend("mimir", settings)
    assert (default.data_dir, default.pipelines_dir) == (
        default_data_dir(),
        default_pipelines_dir(),
    )


def test_directories_the_operator_names_are_used_by_every_project(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "MIMIR_STATE_DIR": str(tmp_path / "state"),
            "MIMIR_DATA_DIR": str(tmp_path / "data"),
            "MIMIR_PIPELINES_DIR": str(tmp_path / "pipes"),
        }
    )
    backend = LocalBackend("one", settings)
    assert (backend.data_dir, backend.pipelines_dir) == (tmp_path / "data", tmp_path / "pipes")
