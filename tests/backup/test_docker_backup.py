"""Backup while jobs flow, restore into a fresh project: the Docker backend, end to end.

Two real Docker clusters (Redis, server, workers in containers) run side by side, built
from the current code. Each job calls ``http://marker:8000/hit/<mark>`` before it naps:
``marker`` is a network alias of a counter container on the cluster's own network, so the
same job reaches the source's counter in the source and the restored cluster's counter in
the restored one, and the test counts each job's executions per cluster (from the counter's
log): the source runs each of its 200 jobs once, the restored cluster runs each job that
was queued or running at backup time once more, no job twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import yaml

from mimir.app.cluster import docker_images
from mimir.app.cluster.backup import (
    BackupRefused,
    default_backup_dir,
    list_backups,
    restore_cluster,
    take_backup,
)
from mimir.app.cluster.docker_backend import DockerBackend
from mimir.app.cluster.selection import docker_engine_answers
from mimir.app.cluster.topology import IMAGES
from mimir.core.backup.archive import verify_archive
from mimir.core.settings import Settings
from tests.cluster.conftest import ClusterAPI
from tests.helpers import free_port, wait_until

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers"),
]

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "ontologies"
FLOWING = 200
SOURCE, FRESH = "bkdsrc", "bkdfresh"

#: The counter: one log line per hit, ``HIT <mark>``.
_COUNTER = r"""
import http.server, sys, threading
lock = threading.Lock()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with lock:  # one whole line per hit, whatever the threads do
            sys.stdout.write("HIT " + self.path.rsplit("/", 1)[-1] + "\n")
            sys.stdout.flush()
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler)
print("READY", flush=True)
server.serve_forever()
"""


class Counter:
    """A counter container reachable as ``marker`` on one project's network. The network
    is made here, before the cluster's ``up`` or restore (which take it as it is), so that
    the counter answers before the first worker starts; it carries no project label, so
    the cluster's ``down`` leaves it, and :meth:`close` removes it."""

    def __init__(self, client: docker.DockerClient, project: str) -> None:
        self.network_name = f"{project}_mimir-network"
        self.name = f"{project}-test-counter"
        for leftover in (self.name,):
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(leftover).remove(force=True)
        found = [n for n in client.networks.list(names=[self.network_name])]
        network = found[0] if found else client.networks.create(self.network_name, driver="bridge")
        self.network = network
        self.container = client.containers.create(
            IMAGES["backend"],
            ["python3", "-u", "-c", _COUNTER],
            name=self.name,
            detach=True,
        )
        network.connect(self.container, aliases=["marker"])
        self.container.start()
        wait_until(lambda: b"READY" in self.container.logs(), timeout=30)

    def hits(self) -> collections.Counter[str]:
        text = self.container.logs().decode("utf-8", "replace")
        return collections.Counter(re.findall(r"^HIT (\S+)$", text, re.MULTILINE))

    def close(self) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            self.container.remove(force=True)
        with contextlib.suppress(docker.errors.DockerException):
            self.network.remove()


def _pipeline() -> dict[str, Any]:
    return {
        "name": "marked-nap",
        "steps": [
            {
                "name": "mark",
                "plugin": "Input.api",
                "config": {"url": "http://marker:8000/hit/{{ mark }}"},
                "output": "marked",
            },
            {"name": "nap", "plugin": "Debug.sleep", "config": {"seconds": "{{ nap }}"}},
        ],
    }


def _volume_tree(client: docker.DockerClient, volume: str) -> dict[str, str]:
    """SHA-256 of each file in a volume, read by a throwaway container."""
    output = client.containers.run(
        IMAGES["backend"],
        ["sh", "-c", "cd /v && find . -type f -exec sha256sum {} +"],
        remove=True,
        user="0",
        network_mode="none",
        volumes={volume: {"bind": "/v", "mode": "ro"}},
    )
    tree = {}
    for line in output.decode().splitlines():
        digest, name = line.split(maxsplit=1)
        tree[name] = digest
    return dict(sorted(tree.items()))


def _run_fields(run: dict[str, Any]) -> tuple[Any, ...]:
    return (run["status"], run["started_at"], run["finished_at"], len(run["steps"]))


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    # The images carry the current code (the same build as tests/cluster/test_docker.py).
    # The wheelhouse is built once per process: forget this one, so that test_docker.py's
    # own build (which checks that it builds one) still does.
    built_before = set(docker_images._WHEELHOUSES_BUILT)
    try:
        asyncio.run(DockerBackend(SOURCE).build())
    finally:
        docker_images._WHEELHOUSES_BUILT.intersection_update(built_before)
    client = docker.from_env()
    yield client
    client.close()


def _backend(project: str, root: Path) -> DockerBackend:
    settings = Settings.from_env({"MIMIR_STATE_DIR": str(root / "state")})
    return DockerBackend(
        project,
        settings,
        api_port=free_port(),
        worker_concurrency=2,
        grace=10,
        start_timeout=120,
    )


@pytest.mark.timeout(900)
def test_backup_while_jobs_flow_then_restore_into_a_fresh_project(
    tmp_path: Path, engine: docker.DockerClient
) -> None:
    source, fresh = _backend(SOURCE, tmp_path), _backend(FRESH, tmp_path)
    for cluster in (source, fresh):
        asyncio.run(cluster.clean())  # leftovers of an interrupted run
    counters: list[Counter] = []
    api: ClusterAPI | None = None
    try:
        source_counter = Counter(engine, SOURCE)
        counters.append(source_counter)
        target_counter = Counter(engine, FRESH)
        counters.append(target_counter)
        asyncio.run(source.up(3))
        api = ClusterAPI(source.api_url)
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
                    "context": {"mark": mark, "nap": round(rng.uniform(0.1, 0.6), 3)},
                },
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["job_id"])
            marks[answer.json()["job_id"]] = mark
        # Some have run, most are queued or running: take the backup now.
        wait_until(lambda: sum(source_counter.hits().values()) >= 20, timeout=60, interval=0.2)
        result = asyncio.run(take_backup(source, tmp_path / "backups"))
        manifest = result.manifest
        assert manifest.project == SOURCE
        in_flight = manifest.counts.get("jobs_queued", 0) + manifest.counts.get("jobs_running", 0)
        assert in_flight > 0, manifest.counts

        # The source served throughout: each of its jobs succeeded, each ran once.
        records = api.wait_finished(ids, timeout=180)
        assert {r["status"] for r in records.values()} == {"succeeded"}
        source_hits = source_counter.hits()
        assert [source_hits[marks[i]] for i in ids] == [1] * FLOWING

        # Restore into a project that has never run.
        said: list[str] = []
        status = asyncio.run(
            restore_cluster(fresh, result.path, workers=3, progress=lambda s, m: said.append(m))
        )
        settled = next(m for m in said if "queued again" in m)
        assert settled.startswith(tuple(f"{n} job(s)" for n in range(1, in_flight + 1))), settled
        assert status.running
        helpers = engine.containers.list(all=True, filters={"label": "io.mimir.role=helper"})
        assert helpers == []
        restored = ClusterAPI(fresh.api_url)
        try:
            after = restored.wait_finished(ids, timeout=180)
            assert {r["status"] for r in after.values()} == {"succeeded"}
            target_hits = target_counter.hits()
            executions = [target_hits[marks[i]] for i in ids]
            assert max(executions) == 1, "a job ran twice after the restore"
            assert sum(executions) >= 1
            # Pipelines byte for byte, the ontology and its answer, the twin, the runs.
            assert _volume_tree(engine, f"{FRESH}_backend_pipelines") == _volume_tree(
                engine, f"{SOURCE}_backend_pipelines"
            )
            after_query = restored.client.get("/api/v1/kg/sparql", params={"query": query})
            assert after_query.json() == before_query.json()
            twins = restored.client.get("/api/v1/twins").json()["twins"]
            assert [t["name"] for t in twins] == ["supply-chain"]
            # A job that did not run again got its run from the archive: the same row.
            for job_id in ids:
                run = restored.client.get(f"/api/v1/runs/{job_id}")
                assert run.status_code == 200, run.text
                if target_hits[marks[job_id]] == 0:
                    assert _run_fields(run.json()) == _run_fields(
                        api.client.get(f"/api/v1/runs/{job_id}").json()
                    )
            # Something only the restored cluster has, for the --force restore below.
            answer = restored.client.put(
                "/api/v1/pipelines/only-in-fresh",
                json={"yaml": yaml.safe_dump({**_pipeline(), "name": "only-in-fresh"})},
            )
            assert answer.status_code in (200, 201), answer.text
        finally:
            restored.close()

        # A second restore over data is refused without --force and changes nothing.
        before = _volume_tree(engine, f"{FRESH}_backend_pipelines")
        with pytest.raises(BackupRefused, match="has data"):
            asyncio.run(restore_cluster(fresh, result.path))
        assert _volume_tree(engine, f"{FRESH}_backend_pipelines") == before

        # With --force the running target is backed up first, then replaced.
        status = asyncio.run(restore_cluster(fresh, result.path, force=True, workers=1))
        assert status.running
        assert _volume_tree(engine, f"{FRESH}_backend_pipelines") == _volume_tree(
            engine, f"{SOURCE}_backend_pipelines"
        )
        kept = [e for e in list_backups(default_backup_dir(fresh)) if "pre-restore" in e.path.name]
        assert len(kept) == 1 and kept[0].manifest is not None, kept
        assert kept[0].manifest.project == FRESH
        assert kept[0].manifest.counts["runs"] >= FLOWING
        replaced = verify_archive(kept[0].path, tmp_path / "replaced")
        assert replaced.project == FRESH
        assert (tmp_path / "replaced" / "pipelines" / "only-in-fresh.yaml").is_file()

        # A helper a crashed restore left behind goes with `down`.
        helper_labels = {"io.mimir.project": FRESH, "io.mimir.role": "helper"}
        engine.containers.run(
            IMAGES["backend"], ["sleep", "infinity"], detach=True, labels=helper_labels,
            name=f"{FRESH}-restore-helper", network_mode="none",
        )  # fmt: skip
        asyncio.run(fresh.down())
        stale = engine.containers.list(all=True, filters={"label": f"io.mimir.project={FRESH}"})
        assert stale == []

        # A damaged archive is refused before anything is touched, even with --force.
        volumes = [f"{FRESH}_{v}" for v in ("backend_data", "backend_pipelines", "redis_data")]
        untouched = {v: _volume_tree(engine, v) for v in volumes}
        damaged = tmp_path / "damaged.tar.gz"
        data = bytearray(result.path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        damaged.write_bytes(bytes(data))
        with pytest.raises(BackupRefused):
            asyncio.run(restore_cluster(fresh, damaged, force=True))
        assert {v: _volume_tree(engine, v) for v in volumes} == untouched
        assert not asyncio.run(fresh.status()).running
    finally:
        if api is not None:
            api.close()
        for cluster in (source, fresh):
            asyncio.run(cluster.clean())
            cluster.close()
        for counter in counters:
            counter.close()
