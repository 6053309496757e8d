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
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from mimir.app.cluster.backup import BackupRefused, list_backups, restore_cluster, take_backup
from mimir.app.cluster.local import LocalBackend
from mimir.core.backup.archive import read_manifest
from mimir.core.settings import Settings
from tests.backup import scenario
from tests.cluster.conftest import ClusterAPI
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow

#: The counter's port comes from each cluster's own environment.
PIPELINE = scenario.marked_pipeline("http://127.0.0.1:${MARK_PORT}")


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


def _settings(root: Path) -> Settings:
    # No MIMIR_DATA_DIR: each project keeps its own data under <state_dir>/<project>/.
    return Settings.from_env({"MIMIR_STATE_DIR": str(root / "state"), "WORKER_CONCURRENCY": "2"})


def _tree(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def counters() -> Iterator[tuple[Counter, Counter]]:
    source, target = Counter(), Counter()
    yield source, target
    source.close()
    target.close()


def test_backup_while_jobs_flow_then_restore_into_a_fresh_project(
    tmp_path: Path, counters: tuple[Counter, Counter], monkeypatch: pytest.MonkeyPatch
) -> None:
    source_counter, target_counter = counters
    settings = _settings(tmp_path)
    source = LocalBackend("bsrc", settings, api_port=free_port(), grace=15, start_timeout=90)
    fresh = LocalBackend("bfresh", settings, api_port=free_port(), grace=15, start_timeout=90)
    monkeypatch.setenv("MARK_PORT", str(source_counter.port))
    asyncio.run(source.up(3))
    api = ClusterAPI(source.api_url)
    try:
        query_answer = scenario.seed(api, PIPELINE)
        ids, marks = scenario.enqueue_flowing(api, PIPELINE, (0.05, 0.5))
        # Some have run, the held ones run, most are queued: take the backup now.
        wait_until(lambda: scenario.time_to_back_up(source_counter.hits), timeout=60)
        result = asyncio.run(take_backup(source, tmp_path / "backups"))
        flying = scenario.in_flight(result.manifest)
        scenario.check_source(api, ids, marks, lambda: source_counter.hits)

        # Restore into a project that has never run (its processes count on the other
        # counter).
        monkeypatch.setenv("MARK_PORT", str(target_counter.port))
        said: list[str] = []
        status = asyncio.run(
            restore_cluster(fresh, result.path, workers=3, progress=lambda s, m: said.append(m))
        )
        assert status.running
        scenario.check_settled(said, flying)
        restored = ClusterAPI(fresh.api_url)
        try:
            scenario.check_restored(
                restored, api, ids, marks, lambda: target_counter.hits, query_answer
            )
            assert _tree(fresh.pipelines_dir) == _tree(source.pipelines_dir)
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
        (fresh.pipelines_dir / "only-in-fresh.yaml").write_text(
            yaml.safe_dump({"name": "only-in-fresh", "steps": []})
        )
        status = asyncio.run(restore_cluster(fresh, result.path, force=True, workers=1))
        assert status.running
        assert _tree(fresh.pipelines_dir) == _tree(source.pipelines_dir)
        scenario.check_pre_restore(fresh, tmp_path / "replaced")
    finally:
        api.close()
        asyncio.run(source.clean())
        asyncio.run(fresh.clean())
