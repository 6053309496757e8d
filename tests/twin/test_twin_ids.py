"""Scenario ids belong to their twin: a duplicate within a twin is 409, never a 500, and
a database written with the old schema (global scenario ids) is migrated in place."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mimir.core.twin import (
    RunRecord,
    Scenario,
    ScenarioExistsError,
    Twin,
    TwinExistsError,
    TwinNotFoundError,
    TwinStore,
)
from mimir.core.twin.store import SCHEMA_VERSION
from tests.helpers import RedisServer, ServerProcess

ENTITIES = [{"id": "http://e/a", "label": "a"}, {"id": "http://e/b", "label": "b"}]

#: The schema as it was before scenario ids were scoped to their twin (user_version 0).
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS twins (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scenarios (
    id TEXT PRIMARY KEY, twin_id TEXT NOT NULL REFERENCES twins(id) ON DELETE CASCADE,
    name TEXT NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, twin_id TEXT NOT NULL REFERENCES twins(id) ON DELETE CASCADE,
    scenario_id TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scenarios_twin ON scenarios (twin_id, created_at);
CREATE INDEX IF NOT EXISTS runs_twin ON runs (twin_id, created_at);
"""


def _old_database(path: Path) -> None:
    """A twins.sqlite3 as the old code wrote it: two twins, a scenario each, a run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    for twin_id, scenario_id, created in (("t1", "s1", "2024-01-01"), ("t2", "s2", "2024-01-02")):
        twin = Twin(id=twin_id, name=twin_id, created_at=created)
        db.execute(
            "INSERT INTO twins VALUES (?, ?, ?, ?)",
            (twin.id, twin.name, created, twin.model_dump_json()),
        )
        scenario = Scenario(id=scenario_id, twin_id=twin_id, name=scenario_id, created_at=created)
        db.execute(
            "INSERT INTO scenarios VALUES (?, ?, ?, ?, ?)",
            (scenario_id, twin_id, scenario.name, created, scenario.model_dump_json()),
        )
    run = RunRecord(id="r1", twin_id="t1", scenario_id="s1", created_at="2024-01-03")
    db.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
        ("r1", "t1", "s1", run.status, run.created_at, run.model_dump_json()),
    )
    db.commit()
    db.close()


def _scenario_key(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("PRAGMA table_info(scenarios)").fetchall()
    return [name for pk, name in sorted((row[5], row[1]) for row in rows) if pk]


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


# -- over HTTP --------------------------------------------------------------------------


def test_duplicate_scenario_id_is_409_and_ids_are_per_twin(api_client: httpx.Client) -> None:
    first, second = (
        api_client.post("/api/v1/twins", json={"name": name, "entities": ENTITIES}).json()["id"]
        for name in ("one", "two")
    )
    scenario = {"id": "baseline", "name": "quiet"}
    created = api_client.post(f"/api/v1/twins/{first}/scenarios", json=scenario)
    assert created.status_code == 201, created.text

    again = api_client.post(f"/api/v1/twins/{first}/scenarios", json={**scenario, "name": "x"})
    assert again.status_code == 409, again.text
    assert again.json()["error"] == f"twin {first!r} already has a scenario with id 'baseline'"

    other = api_client.post(f"/api/v1/twins/{second}/scenarios", json={**scenario, "name": "loud"})
    assert other.status_code == 201, other.text
    assert other.json()["twin_id"] == second

    # Each twin keeps its own: the 409 changed nothing, the second twin's did not clobber.
    assert api_client.get(f"/api/v1/twins/{first}/scenarios/baseline").json()["name"] == "quiet"
    assert api_client.get(f"/api/v1/twins/{second}/scenarios/baseline").json()["name"] == "loud"
    assert [
        s["name"] for s in api_client.get(f"/api/v1/twins/{first}/scenarios").json()["scenarios"]
    ] == ["quiet"]

    # A run of each uses its own twin's scenario; deleting a twin with runs is fine.
    for twin_id in (first, second):
        run = api_client.post(
            f"/api/v1/twins/{twin_id}/runs", json={"scenario_id": "baseline", "wait": True}
        )
        assert run.status_code == 201, run.text
    assert api_client.delete(f"/api/v1/twins/{first}").status_code == 204
    assert api_client.get(f"/api/v1/twins/{first}/scenarios/baseline").status_code == 404
    assert api_client.get(f"/api/v1/twins/{second}/scenarios/baseline").status_code == 200
    # The id is free again once its twin is gone; a scenario on a missing twin is a 404.
    assert api_client.post(f"/api/v1/twins/{first}/scenarios", json=scenario).status_code == 404
    # An id must be usable in a URL.
    for bad in ("a/b", "../x", "x" * 129, "a\nb"):
        refused = api_client.post(
            f"/api/v1/twins/{second}/scenarios", json={"id": bad, "name": "n"}
        )
        assert refused.status_code == 422 and "id" in refused.json()["error"], refused.text


def test_server_migrates_an_old_database(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, data_dir: Path
) -> None:
    path = data_dir / "twins.sqlite3"
    _old_database(path)
    server = make_server(redis_url=redis_server.url).start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert [t["id"] for t in client.get("/api/v1/twins").json()["twins"]] == ["t1", "t2"]
        # s1 belongs to t1; under the old global key t2 could not have had one.
        reused = client.post("/api/v1/twins/t2/scenarios", json={"id": "s1", "name": "again"})
        assert reused.status_code == 201, (reused.text, server.output())
        duplicate = client.post("/api/v1/twins/t1/scenarios", json={"id": "s1", "name": "x"})
        assert duplicate.status_code == 409, duplicate.text
        assert client.get("/api/v1/twins/t1/scenarios/s1").json()["name"] == "s1"
        assert client.get("/api/v1/twins/t1/runs/r1").json()["scenario_id"] == "s1"
    assert _user_version(path) == SCHEMA_VERSION
    assert _scenario_key(path) == ["twin_id", "id"]


# -- the store ---------------------------------------------------------------------------


def test_migration_keeps_every_row_and_the_cascade(tmp_path: Path) -> None:
    path = tmp_path / "twins.sqlite3"
    _old_database(path)
    assert _scenario_key(path) == ["id"] and _user_version(path) == 0

    store = TwinStore(path)
    assert _scenario_key(path) == ["twin_id", "id"] and _user_version(path) == SCHEMA_VERSION
    assert [t.id for t in store.list_twins()] == ["t1", "t2"]
    assert [s.id for s in store.list_scenarios("t1")] == ["s1"]
    assert store.get_scenario("t2", "s2").name == "s2"
    assert store.get_run("r1", "t1").scenario_id == "s1"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        indexes = {row[1] for row in db.execute("PRAGMA index_list(scenarios)")}
        assert "scenarios_twin" in indexes
        assert db.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'scenarios_v1'"
        ).fetchone() == (0,)

    store.add_scenario("t2", Scenario(id="s1", name="t2's s1"))
    with pytest.raises(ScenarioExistsError):
        store.add_scenario("t1", Scenario(id="s1", name="x"))
    store.delete_twin("t1")  # the cascade still reaches scenarios and runs
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT twin_id, id FROM scenarios ORDER BY id").fetchall() == [
            ("t2", "s1"),
            ("t2", "s2"),
        ]
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (0,)

    TwinStore(path)  # opening again changes nothing
    assert [s.id for s in TwinStore(path).list_scenarios("t2")] == ["s2", "s1"]


def test_concurrent_openers_migrate_once(tmp_path: Path) -> None:
    """The server and workers may open an old file at the same moment."""
    path = tmp_path / "twins.sqlite3"
    _old_database(path)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def open_store() -> None:
        try:
            start.wait(timeout=10)
            TwinStore(path)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert _scenario_key(path) == ["twin_id", "id"]
    assert [s.id for s in TwinStore(path).list_scenarios("t1")] == ["s1"]


def test_store_conflicts_are_errors_not_integrity_errors(tmp_path: Path) -> None:
    store = TwinStore(tmp_path / "twins.sqlite3")
    twin = store.add_twin(Twin(name="a"))
    with pytest.raises(TwinExistsError, match="already exists"):
        store.add_twin(Twin(id=twin.id, name="b"))
    with pytest.raises(TwinNotFoundError):
        store.add_run(RunRecord(id="r", twin_id="gone", scenario_id="s"))
