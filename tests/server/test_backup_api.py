"""Backups over the API against a real server process with a real Redis.

The server holds pipelines (the shipped examples and one in a sub-folder), an ontology,
a twin, a webhook trigger, runs in its SQLite run store and queued jobs; a backup taken
through ``POST /api/v1/admin/backups`` is followed to its end, downloaded and verified
with :func:`mimir.core.backup.archive.verify_archive`, and its parts compared with what
the server holds. Then: one backup at a time (409, also when another server holds the
lease), the refused requests (422), names that are not archives, and an encrypted
archive with the secrets that needs its passphrase.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from mimir.core.backup.archive import verify_archive
from mimir.core.backup.manifest import BackupError
from mimir.core.backup.stores import (
    REDACTED,
    insert_trigger_rows,
    load_nquads,
    pg_restore,
    runstore_counts,
    sqlite_count,
)
from mimir.core.runstore.db import head_revision, make_engine
from mimir.core.runstore.models import RunIn
from mimir.core.runstore.runs import RunStore
from mimir.core.runstore.schedules import TriggerStore
from tests.helpers import RedisServer, ServerProcess
from tests.pg import create_database, drop_database

TURTLE = """@prefix ex: <http://example.org/plant#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
ex:Machine a owl:Class ; rdfs:label "Machine" .
ex:press a ex:Machine ; rdfs:label "Press" ; ex:capacity 120 .
ex:oven a ex:Machine ; rdfs:label "Oven" ; ex:capacity 80 .
"""
PASSPHRASE = "correct horse battery"
SMTP_PASSWORD = "smtp-password-never-archived"
RUNS = 25


@pytest.fixture
def server(make_server: Callable[..., ServerProcess], redis_server: RedisServer) -> ServerProcess:
    # An SMTP password, to show that the archive's settings leave it out.
    return make_server(
        redis_url=redis_server.url, MIMIR_SMTP_URL=f"smtp://alerts:{SMTP_PASSWORD}@127.0.0.1:2525"
    ).start(wait_for_redis=True)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60.0) as http:
        yield http


def _runs(data_dir: Path, url: str | None = None) -> None:
    engine = make_engine(url or f"sqlite:///{data_dir / 'mimir.db'}")
    try:
        now = datetime.now(UTC)
        RunStore(engine).upsert(
            [
                RunIn(
                    job_id=f"job{n:04d}",
                    pipeline="etl",
                    status="succeeded",
                    queue="default",
                    enqueued_at=now,
                    started_at=now,
                    finished_at=now,
                    duration_ms=10.0,
                )
                for n in range(RUNS)
            ]
        )
    finally:
        engine.dispose()


def _fill(client: httpx.Client, data_dir: Path, pipelines_dir: Path) -> dict[str, Any]:
    (pipelines_dir / "team").mkdir(exist_ok=True)
    (pipelines_dir / "team" / "nested.yaml").write_bytes(b"name: nested\nsteps: []\n# \xc3\xa9\n")
    (data_dir / "out").mkdir(exist_ok=True)
    (data_dir / "out" / "report.csv").write_text("a,b\n1,2\n")
    ontology = client.post(
        "/api/v1/ontologies", json={"name": "plant", "format": "turtle", "content": TURTLE}
    )
    assert ontology.status_code == 201, ontology.text
    twin = client.post(
        "/api/v1/twins",
        json={"name": "plant", "entities": [{"id": "press"}, {"id": "oven"}]},
    )
    assert twin.status_code == 201, twin.text
    trigger = client.post("/api/v1/triggers", json={"name": "hook", "pipeline_name": "etl"})
    if trigger.status_code == 404:  # no pipeline of that name among the examples
        name = sorted(p.stem for p in pipelines_dir.glob("*.yaml"))[0]
        trigger = client.post("/api/v1/triggers", json={"name": "hook", "pipeline_name": name})
    assert trigger.status_code == 201, trigger.text
    job = client.post(
        "/api/v1/queue/pipelines/enqueue",
        json={"pipeline": {"name": "q", "steps": []}},
    )
    _runs(data_dir)
    stats = client.get(f"/api/v1/ontologies/{ontology.json()['id']}/stats")
    assert stats.status_code == 200, stats.text
    return {
        "triples": stats.json()["triples"],
        "secret": trigger.json()["secret"],
        "queued": job.status_code == 202,
    }


def _wait(client: httpx.Client, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    steps: list[str] = []
    while True:
        answer = client.get(f"/api/v1/admin/backups/tasks/{task_id}")
        assert answer.status_code == 200, answer.text
        task: dict[str, Any] = answer.json()
        if not steps or steps[-1] != task["step"]:
            steps.append(task["step"])
        if task["state"] != "running":
            task["steps_seen"] = steps
            return task
        assert time.monotonic() < deadline, f"backup still running after {timeout}s: {task}"
        time.sleep(0.05)


def _start(client: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = client.post("/api/v1/admin/backups", json=body)
    assert answer.status_code == 202, answer.text
    started: dict[str, Any] = answer.json()
    return started


def _download(client: httpx.Client, name: str, target: Path) -> Path:
    with client.stream("GET", f"/api/v1/admin/backups/{name}") as answer:
        assert answer.status_code == 200, answer.read()
        with target.open("wb") as out:
            for chunk in answer.iter_bytes():
                out.write(chunk)
    return target


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_a_backup_holds_every_store(
    client: httpx.Client, server: ServerProcess, data_dir: Path, pipelines_dir: Path, tmp_path: Path
) -> None:
    held = _fill(client, data_dir, pipelines_dir)

    started = _start(client)
    assert started["name"].startswith("mimir-") and started["name"].endswith(".tar.gz")
    task = _wait(client, started["id"])
    assert task["state"] == "succeeded", (task, server.output(60))
    assert task["name"] == started["name"] and task["error"] is None
    manifest = task["manifest"]
    assert not manifest["encrypted"] and not manifest["includes_secrets"]
    assert manifest["counts"]["runs"] == RUNS
    assert manifest["counts"]["twins"] == 1
    assert manifest["counts"]["triggers"] == 1
    assert manifest["counts"]["quads"] == held["triples"] > 0
    if held["queued"]:
        assert manifest["counts"]["jobs_queued"] >= 1
    assert manifest["schemas"]["runstore"] == {
        "engine": "sqlite",
        "alembic_revision": head_revision(),
    }
    assert manifest["schemas"]["twins"]["user_version"] >= 1
    assert manifest["schemas"]["queue"]["rdb_version"] >= 9
    assert manifest["redis_snapshot_at"] > 0
    assert "secrets" in manifest["excluded"]
    assert "logs" in manifest["excluded"]

    listed = client.get("/api/v1/admin/backups").json()["backups"]
    assert [(b["name"], b["encrypted"]) for b in listed] == [(started["name"], False)]
    assert listed[0]["counts"]["runs"] == RUNS

    archive = _download(client, started["name"], tmp_path / started["name"])
    into = tmp_path / "verified"
    verified = verify_archive(archive, into)
    assert verified.counts == manifest["counts"]

    # Pipelines byte for byte, every file of the pipelines directory.
    assert _files(into / "pipelines") == _files(pipelines_dir)
    assert "team/nested.yaml" in _files(into / "pipelines")
    # The other files of the data directory, not the stores nor the staging area.
    kept = _files(into / "files")
    assert kept["out/report.csv"] == b"a,b\n1,2\n"
    assert not any(
        name.startswith(("mimir.db", "twins.sqlite3", "ontologies/", ".backup-staging", "backups/"))
        for name in kept
    )
    # The server's settings as a record, without a secret.
    settings_text = (into / "config" / "settings.json").read_text()
    recorded = json.loads(settings_text)
    assert recorded["key_prefix"] == "mimir:" and recorded["redis_url"].startswith("redis://")
    assert recorded["smtp_url"] == "smtp://alerts:***@127.0.0.1:2525"
    assert SMTP_PASSWORD not in settings_text and "api_token" not in recorded
    # The stores.
    assert (into / "redis" / "dump.rdb").read_bytes().startswith(b"REDIS")
    assert sqlite_count(into / "runstore" / "mimir.db", "runs") == RUNS
    secrets = sqlite3.connect(into / "runstore" / "mimir.db").execute("SELECT secret FROM triggers")
    assert [row[0] for row in secrets] == [REDACTED]
    assert held["secret"].encode() not in (into / "runstore" / "mimir.db").read_bytes()
    assert sqlite_count(into / "twins" / "twins.sqlite3", "twins") == 1
    assert sqlite_count(into / "ontologies" / "catalog.sqlite3", "ontologies") == 1
    assert load_nquads(into / "ontologies" / "dataset.nq", tmp_path / "ox") == held["triples"]
    # No staging left behind.
    assert not any((data_dir / ".backup-staging").glob("*"))

    assert client.delete(f"/api/v1/admin/backups/{started['name']}").status_code == 204
    assert client.get(f"/api/v1/admin/backups/{started['name']}").status_code == 404
    assert client.get("/api/v1/admin/backups").json() == {"backups": []}


def test_one_backup_at_a_time(
    client: httpx.Client, redis_server: RedisServer, data_dir: Path
) -> None:
    # Another server of the cluster holds the lease.
    other = redis.Redis.from_url(redis_server.url)
    try:
        other.set("mimir:backup:lock", "another-server", px=60_000)
        refused = client.post("/api/v1/admin/backups", json={})
        assert refused.status_code == 409, refused.text
        assert "already being taken" in refused.json()["error"]
        other.delete("mimir:backup:lock")

        # A file that takes the archive a while to compress: the first backup still runs
        # when the second is asked for.
        (data_dir / "big.bin").write_bytes(os.urandom(32 * 1024 * 1024))
        first = _start(client)
        second = client.post("/api/v1/admin/backups", json={})
        assert second.status_code == 409, second.text
        # Its archive is named from the start but refused (409) until it is written.
        task = f"/api/v1/admin/backups/tasks/{first['id']}"
        before = client.get(task).json()["state"]
        early = [client.get(f"/api/v1/admin/backups/{first['name']}"),
                 client.delete(f"/api/v1/admin/backups/{first['name']}")]  # fmt: skip
        if before == "running" and client.get(task).json()["state"] == "running":
            assert [a.status_code for a in early] == [409, 409], [a.text for a in early]
            assert "still being written" in early[1].json()["error"]
        assert _wait(client, first["id"])["state"] == "succeeded"
        assert other.get("mimir:backup:lock") is None  # released at the end
        third = _start(client)  # free again
        assert _wait(client, third["id"])["state"] == "succeeded"
        assert third["name"] != first["name"]
    finally:
        other.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"include_secrets": True}, "body"),
        ({"include_secrets": True, "passphrase": None}, "body"),
        ({"passphrase": "short"}, "passphrase"),
        ({"include_secrets": True, "passphrase": "1234567"}, "passphrase"),
        ({"include_secrets": "maybe"}, "include_secrets"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_refused_requests(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    answer = client.post("/api/v1/admin/backups", json=body)
    assert answer.status_code == 422, answer.text
    assert any(problem["field"] == field for problem in answer.json()["detail"]), answer.text
    assert "1234567" not in answer.text and "short" not in answer.text.replace("shorter", "")
    assert client.get("/api/v1/admin/backups").json() == {"backups": []}


def test_only_archive_names_are_served(
    client: httpx.Client, data_dir: Path, tmp_path: Path
) -> None:
    backups = data_dir / "backups"
    backups.mkdir()
    (backups / "notes.txt").write_text("not an archive")
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (backups / "mimir-20260101T000000Z.tar.gz").symlink_to(outside)
    for name in ("notes.txt", "..", "mimir.db", "..%2Fmimir.db", "%2Fetc%2Fpasswd"):
        for method in ("GET", "DELETE"):
            answer = client.request(method, f"/api/v1/admin/backups/{name}")
            assert answer.status_code in (404, 405, 422), (method, name, answer.text)
            assert "secret" not in answer.text
    for method in ("GET", "DELETE"):
        missing = client.request(method, "/api/v1/admin/backups/mimir-20260102T000000Z.tar.gz")
        assert missing.status_code == 404, missing.text
        link = client.request(method, "/api/v1/admin/backups/mimir-20260101T000000Z.tar.gz")
        assert link.status_code == 404, link.text
    assert (backups / "notes.txt").exists() and outside.exists()
    assert client.get("/api/v1/admin/backups").json() == {"backups": []}
    assert client.get("/api/v1/admin/backups/tasks/nope").status_code == 404


def test_secrets_only_in_an_encrypted_archive(
    client: httpx.Client,
    server: ServerProcess,
    data_dir: Path,
    pipelines_dir: Path,
    tmp_path: Path,
) -> None:
    held = _fill(client, data_dir, pipelines_dir)
    started = _start(client, include_secrets=True, passphrase=PASSPHRASE)
    assert started["name"].endswith(".tar.gz.age")
    task = _wait(client, started["id"])
    assert task["state"] == "succeeded", task
    assert task["manifest"]["encrypted"] and task["manifest"]["includes_secrets"]
    assert not any("secrets" in item for item in task["manifest"]["excluded"])

    listed = client.get("/api/v1/admin/backups").json()["backups"]
    assert len(listed) == 1 and listed[0]["encrypted"] and listed[0]["includes_secrets"]
    assert listed[0]["counts"]["runs"] == RUNS  # from the clear sidecar

    archive = _download(client, started["name"], tmp_path / started["name"])
    assert held["secret"].encode() not in archive.read_bytes()
    with pytest.raises(BackupError):
        verify_archive(archive, tmp_path / "no-passphrase")
    with pytest.raises(BackupError):
        verify_archive(archive, tmp_path / "wrong", passphrase="not the passphrase")
    assert not (tmp_path / "wrong").exists()
    into = tmp_path / "verified"
    verify_archive(archive, into, passphrase=PASSPHRASE)
    secrets = sqlite3.connect(into / "runstore" / "mimir.db").execute("SELECT secret FROM triggers")
    assert [row[0] for row in secrets] == [held["secret"]]

    # Encrypted without the secrets: the passphrase alone is allowed.
    plain = _start(client, passphrase=PASSPHRASE)
    task = _wait(client, plain["id"])
    assert task["state"] == "succeeded" and task["manifest"]["encrypted"]
    assert not task["manifest"]["includes_secrets"]

    assert client.delete(f"/api/v1/admin/backups/{started['name']}").status_code == 204
    assert not (data_dir / "backups" / (started["name"] + ".meta.json")).exists()
    # The passphrase is in no log line, no audit entry, no answer.
    assert PASSPHRASE not in server.output(2000)
    deadline = time.monotonic() + 30
    while True:  # the audit log is written in the background
        audit = client.get("/api/v1/audit", params={"action": "admin.backups.create"})
        assert audit.status_code == 200, audit.text
        if len(audit.json()["entries"]) >= 2:
            break
        assert time.monotonic() < deadline, audit.text
        time.sleep(0.05)
    assert PASSPHRASE not in audit.text


@pytest.fixture
def pg_databases(postgres_url: str) -> Iterator[tuple[str, str]]:
    first, second = create_database(postgres_url), create_database(postgres_url)
    try:
        yield first, second
    finally:
        drop_database(first)
        drop_database(second)


def test_a_postgresql_run_store_is_dumped_without_its_secrets(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    pg_databases: tuple[str, str],
    data_dir: Path,
    tmp_path: Path,
) -> None:
    database, restored_url = pg_databases
    server = make_server(redis_url=redis_server.url, MIMIR_DATABASE_URL=database).start()
    with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
        trigger = client.post(
            "/api/v1/triggers", json={"name": "hook", "pipeline_name": "test_pipeline"}
        )
        assert trigger.status_code == 201, trigger.text
        secret = trigger.json()["secret"]
        _runs(data_dir, database)
        started = _start(client)
        task = _wait(client, started["id"])
        assert task["state"] == "succeeded", (task, server.output(60))
        manifest = task["manifest"]
        assert manifest["schemas"]["runstore"]["engine"] == "postgresql"
        assert manifest["counts"]["runs"] == RUNS and manifest["counts"]["triggers"] == 1
        archive = _download(client, started["name"], tmp_path / started["name"])
    into = tmp_path / "verified"
    verify_archive(archive, into)
    assert not (into / "runstore" / "mimir.db").exists()
    dump = into / "runstore" / "pg.dump"
    assert dump.read_bytes().startswith(b"PGDMP")
    assert secret.encode() not in dump.read_bytes()
    rows = json.loads((into / "runstore" / "triggers.json").read_text())
    assert [(row["name"], row["secret"]) for row in rows] == [("hook", REDACTED)]
    assert not any(name.startswith("mimir.db") for name in _files(into / "files"))

    pg_restore(restored_url, dump)
    engine = make_engine(restored_url)
    try:
        assert runstore_counts(engine) == {"runs": RUNS, "schedules": 0, "triggers": 0}
        # The rows carried apart go back in, their secret still redacted.
        assert insert_trigger_rows(restored_url, rows) == 1
        assert [(t.spec.name, t.secret) for t in TriggerStore(engine).list()] == [
            ("hook", REDACTED)
        ]
    finally:
        engine.dispose()
