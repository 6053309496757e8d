"""Where a local cluster keeps its data and pipelines (no process is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_a_cluster_recorded_before_redis_passwords_keeps_its_password_less_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mimir.app.cluster.local_state import LocalState

    monkeypatch.setenv("MIMIR_REDIS_PASSWORD_FILE", "/elsewhere/another-redis")
    backend = LocalBackend("old", Settings.from_env({"MIMIR_STATE_DIR": str(tmp_path)}))
    old = LocalState.from_json(
        {"project": "old", "api_port": 8080, "redis_port": 6400,
         "redis_url": "redis://127.0.0.1:6400/0", "own_redis": True}
    )  # fmt: skip
    assert old.redis_auth is False
    # Its running Redis has no password: the clients started now get none (not even one
    # inherited for another Redis), and Redis is started again without one until `down`.
    assert "MIMIR_REDIS_PASSWORD_FILE" not in backend._child_env(old)
    new = LocalState("new", 8080, 6401, "redis://127.0.0.1:6401/0", redis_auth=True)
    assert backend._child_env(new)["MIMIR_REDIS_PASSWORD_FILE"] == str(
        tmp_path / "old" / "secrets" / "redis-password"
    )
    # An external Redis: the operator's own variable stays.
    external = LocalState("ext", 8080, None, "redis://db:6379/0", own_redis=False)
    assert backend._child_env(external)["MIMIR_REDIS_PASSWORD_FILE"] == "/elsewhere/another-redis"
