"""Backup while jobs flow, restore into a fresh project: local processes, end to end.

Two real local clusters (redis-server, server, workers) run side by side. Each job calls a
counter on 127.0.0.1 before it naps; the counter's port comes from the cluster's own
environment (``${MARK_PORT}``), so the test counts each job's executions per cluster: the
source runs each of its 200 jobs once, and the restored cluster runs each job that was
queued or running at backup time once more, no job twice.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from mimir.app.cluster.backup import (
    BackupRefused,
    default_backup_dir,
    list_backups,
    restore_cluster,
    take_backup,
)
from mimir.app.cluster.local import LocalBackend
from mimir.core.backup.archive import read_manifest, verify_archive
from mimir.core.settings import Settings
from tests.cluster.conftest import ClusterAPI
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "ontologies"
FLOWING = 200


class Counter:
    """Counts GET /hit/<mark> per mark, in a thread."""

    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    hits[self.path.rsplit("/", 1)[-1]] += 1
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _pipeline() -> dict[str, Any]:
    return {
        "name": "marked-nap",
        "steps": [
            {
                "name": "mark",
                "plugin": "Input.api",
                "config": {"url": "http://127.0.0.1:${MARK_PORT}/hit/{{ mark }}"},
                "output": "marked",
            },
            {"name": "nap", "plugin": "Debug.sleep", "config": {"seconds": "{{ nap }}"}},
        ],
    }


def _settings(root: Path) -> Settings:
    # No MIMIR_DATA_DIR: each project keeps its own data under <state_dir>/<project>/.
    return Settings.from_env({"MIMIR_STATE_DIR": str(root / "state"), "WORKER_CONCURRENCY": "2"})


def _tree(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _run_fields(run: dict[str, Any]) -> tuple[Any, ...]:
    return (run["status"], run["started_at"], run["finished_at"], len(run["steps"]))


@pytest.fixture
def counters() -> Iterator[tuple[Counter, Counter]]:
    source, target = Counter(), Counter()
    yield source, target
    source.close()
    target.close()


def _up(
    backend: LocalBackend, workers: int, mark_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARK_PORT", str(mark_port))
    asyncio.run(backend.up(workers))


def test_backup_while_jobs_flow_then_restore_into_a_fresh_project(
    tmp_path: Path, counters: tuple[Counter, Counter], monkeypatch: pytest.MonkeyPatch
) -> None:
    source_counter, target_counter = counters
    settings = _settings(tmp_path)
    source = LocalBackend("bsrc", settings, api_port=free_port(), grace=15, start_timeout=90)
    fresh = LocalBackend("bfresh", settings, api_port=free_port(), grace=15, start_timeout=90)
    _up(source, 3, source_counter.port, monkeypatch)
    api = ClusterAPI(source.api_url)
    try:
        # What the archive must carry: pipelines, an ontology, a twin, finished runs.
        for name in ("alpha", "beta"):
            answer = api.client.put(
                f"/api/v1/pipelines/{name}", json={"yaml": yaml.safe_dump(_pipeline())}
            )
            assert answer.status_code in (200, 201), answer.text
        uploaded = api.client.post(
            "/api/v1/ontologies?name=supply-chain",
            content=(RESOURCES / "supply_chain.ttl").read_bytes(),
            headers={"Content-Type": "text/turtle"},
        )
        assert uploaded.status_code == 201, uploaded.text
        twin = api.client.post(
            "/api/v1/twins", json={"name": "supply-chain", "ontology_id": "supply-chain"}
        )
        assert twin.status_code == 201, twin.text
        query = "SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } }"
        before_query = api.client.get("/api/v1/kg/sparql", params={"query": query})
        assert before_query.status_code == 200, before_query.text

        rng = random.Random(18)
        marks: dict[str, str] = {}
        ids: list[str] = []
        for number in range(FLOWING):
            mark = f"m{number}"
            answer = api.client.post(
                "/api/v1/queue/pipelines/enqueue",
                json={
                    "pipeline": _pipeline(),
                    "context": {"mark": mark, "nap": round(rng.uniform(0.05, 0.5), 3)},
                },
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["job_id"])
            marks[answer.json()["job_id"]] = mark
        # Some have run, most are queued or running: take the backup now.
        wait_until(lambda: sum(source_counter.hits.values()) >= 20, timeout=60)
        result = asyncio.run(take_backup(source, tmp_path / "backups"))
        manifest = result.manifest
        in_flight = manifest.counts.get("jobs_queued", 0) + manifest.counts.get("jobs_running", 0)
        assert in_flight > 0, manifest.counts

        # The source served throughout: each of its jobs succeeded, each ran once.
        records = api.wait_finished(ids, timeout=180)
        assert {r["status"] for r in records.values()} == {"succeeded"}
        assert all(source_counter.hits[marks[i]] == 1 for i in ids)

        # Restore into a project that has never run.
        monkeypatch.setenv("MARK_PORT", str(target_counter.port))
        said: list[str] = []
        status = asyncio.run(
            restore_cluster(fresh, result.path, workers=3, progress=lambda s, m: said.append(m))
        )
        settled = next(m for m in said if "queued again" in m)
        assert settled.startswith(tuple(f"{n} job(s)" for n in range(1, in_flight + 1))), settled
        assert status.running
        restored = ClusterAPI(fresh.api_url)
        try:
            after = restored.wait_finished(ids, timeout=180)
            assert {r["status"] for r in after.values()} == {"succeeded"}
            executions = [target_counter.hits[marks[i]] for i in ids]
            assert max(executions) == 1, "a job ran twice after the restore"
            assert sum(executions) >= 1
            # Pipelines byte for byte, the ontology and its answer, the twin, the runs.
            assert _tree(fresh.pipelines_dir) == _tree(source.pipelines_dir)
            after_query = restored.client.get("/api/v1/kg/sparql", params={"query": query})
            assert after_query.json() == before_query.json()
            twins = restored.client.get("/api/v1/twins").json()["twins"]
            assert [t["name"] for t in twins] == ["supply-chain"]
            # A job that did not run again got its run from the archive: the same row.
            for job_id in ids:
                run = restored.client.get(f"/api/v1/runs/{job_id}")
                assert run.status_code == 200, run.text
                if target_counter.hits[marks[job_id]] == 0:
                    assert _run_fields(run.json()) == _run_fields(
                        api.client.get(f"/api/v1/runs/{job_id}").json()
                    )
        finally:
            restored.close()

        # A second restore over data is refused without --force and changes nothing.
        before = _tree(fresh.pipelines_dir)
        with pytest.raises(BackupRefused, match="has data"):
            asyncio.run(restore_cluster(fresh, result.path))
        assert _tree(fresh.pipelines_dir) == before
        listed = list_backups(tmp_path / "backups")
        assert [e.path for e in listed] == [result.path]
        assert read_manifest(result.path).project == "bsrc"

        # With --force the running target is backed up first, then replaced.
        monkeypatch.setenv("MARK_PORT", str(target_counter.port))
        (fresh.pipelines_dir / "only-in-fresh.yaml").write_text(
            yaml.safe_dump({"name": "only-in-fresh", "steps": []})
        )
        status = asyncio.run(restore_cluster(fresh, result.path, force=True, workers=1))
        assert status.running
        assert _tree(fresh.pipelines_dir) == _tree(source.pipelines_dir)
        kept = [e for e in list_backups(default_backup_dir(fresh)) if "pre-restore" in e.path.name]
        assert len(kept) == 1 and kept[0].manifest is not None, kept
        assert kept[0].manifest.project == "bfresh"
        assert kept[0].manifest.counts["runs"] >= FLOWING
        replaced = verify_archive(kept[0].path, tmp_path / "replaced")
        assert replaced.project == "bfresh"
        assert (tmp_path / "replaced" / "pipelines" / "only-in-fresh.yaml").is_file()
    finally:
        api.close()
        asyncio.run(source.clean())
        asyncio.run(fresh.clean())
