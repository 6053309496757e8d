"""An archive from an older Mimir (its run store at an older schema revision) restores,
and the restored cluster's server migrates it forward to this Mimir's newest schema."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from alembic import command

from mimir.app.cluster.backup import fetch_backup, restore_cluster, server_backups
from mimir.app.cluster.local import LocalBackend
from mimir.core.backup.archive import read_manifest, write_archive
from mimir.core.backup.manifest import Manifest
from mimir.core.runstore.db import (
    _alembic_config,
    current_revision,
    head_revision,
    known_revisions,
    make_engine,
)
from mimir.core.runstore.schedules import ScheduleIn, ScheduleStore
from mimir.core.settings import Settings
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow

OLD = "0002_schedules"


def _old_run_store(path: Path) -> None:
    engine = make_engine(f"sqlite:///{path}")
    try:
        config = _alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, OLD)
        ScheduleStore(engine).create(
            ScheduleIn(name="nightly", pipeline_file="hello.yaml", cron="0 3 * * *")
        )
        assert current_revision(engine) == OLD
    finally:
        engine.dispose()


def test_an_older_run_store_is_migrated_forward_after_the_restore(tmp_path: Path) -> None:
    assert OLD in known_revisions() and head_revision() != OLD
    staging = tmp_path / "staging"
    (staging / "runstore").mkdir(parents=True)
    (staging / "pipelines").mkdir()
    (staging / "pipelines" / "hello.yaml").write_text("name: hello\nsteps: []\n")
    _old_run_store(staging / "runstore" / "mimir.db")
    manifest = Manifest(
        project="old",
        schemas={"runstore": {"engine": "sqlite", "alembic_revision": OLD}},
        counts={"schedules": 1},
    )
    archive = tmp_path / "old.tar.gz"
    write_archive(staging, archive, manifest)

    settings = Settings.from_env({"MIMIR_STATE_DIR": str(tmp_path / "state")})
    backend = LocalBackend("migrated", settings, api_port=free_port(), grace=5, start_timeout=90)
    try:
        status = asyncio.run(restore_cluster(backend, archive, workers=0))
        assert status.running
        engine = make_engine(f"sqlite:///{backend.data_dir / 'mimir.db'}")
        try:
            assert current_revision(engine) == head_revision()
        finally:
            engine.dispose()
        with httpx.Client(base_url=backend.api_url, timeout=10) as client:
            schedules = client.get("/api/v1/schedules").json()
            assert [s["name"] for s in schedules] == ["nightly"]
            assert client.get("/api/v1/alerts/rules").status_code == 200  # a newer table
            # An archive the server keeps (as a scheduled one is) is listed and fetched.
            name = client.post("/api/v1/admin/backups", json={}).json()["name"]
            wait_until(
                lambda: any(
                    b["name"] == name for b in client.get("/api/v1/admin/backups").json()["backups"]
                )
            )
        assert asyncio.run(server_backups(backend))[0]["name"] == name  # type: ignore[index]
        fetched = asyncio.run(fetch_backup(backend, name, tmp_path / "fetched"))
        assert fetched == tmp_path / "fetched" / name
        assert read_manifest(fetched).project == "migrated"
    finally:
        asyncio.run(backend.clean())
