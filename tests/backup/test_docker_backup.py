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
import re
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import yaml

from mimir.app.cluster import docker_images
from mimir.app.cluster.backup import (
    BackupRefused,
    restore_cluster,
    take_backup,
)
from mimir.app.cluster.docker_backend import DockerBackend
from mimir.app.cluster.selection import docker_engine_answers
from mimir.app.cluster.topology import IMAGES
from mimir.core.settings import Settings
from tests.backup import scenario
from tests.cluster.conftest import ClusterAPI
from tests.helpers import free_port, wait_until

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers"),
]

SOURCE, FRESH = "bkdsrc", "bkdfresh"
#: ``marker`` is the counter's alias on each cluster's own network.
PIPELINE = scenario.marked_pipeline("http://marker:8000")

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
                client.containers.get(leftover).remove(force=True, v=True)
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
            self.container.remove(force=True, v=True)
        with contextlib.suppress(docker.errors.DockerException):
            self.network.remove()


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
        query_answer = scenario.seed(api, PIPELINE)
        ids, marks = scenario.enqueue_flowing(api, PIPELINE, (0.1, 0.6))
        # Some have run, the held ones run, most are queued: take the backup now.
        wait_until(
            lambda: scenario.time_to_back_up(source_counter.hits()), timeout=60, interval=0.2
        )
        result = asyncio.run(take_backup(source, tmp_path / "backups"))
        assert result.manifest.project == SOURCE
        flying = scenario.in_flight(result.manifest)
        scenario.check_source(api, ids, marks, source_counter.hits)

        # Restore into a project that has never run.
        said: list[str] = []
        status = asyncio.run(
            restore_cluster(fresh, result.path, workers=3, progress=lambda s, m: said.append(m))
        )
        assert status.running
        scenario.check_settled(said, flying)
        helpers = engine.containers.list(all=True, filters={"label": "io.mimir.role=helper"})
        assert helpers == []
        restored = ClusterAPI(fresh.api_url)
        try:
            scenario.check_restored(restored, api, ids, marks, target_counter.hits, query_answer)
            assert _volume_tree(engine, f"{FRESH}_backend_pipelines") == _volume_tree(
                engine, f"{SOURCE}_backend_pipelines"
            )
            # Something only the restored cluster has, for the --force restore below.
            answer = restored.client.put(
                "/api/v1/pipelines/only-in-fresh",
                json={"yaml": yaml.safe_dump({**PIPELINE, "name": "only-in-fresh"})},
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
        scenario.check_pre_restore(fresh, tmp_path / "replaced")

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
        damaged = scenario.damaged_copy(result.path, tmp_path / "damaged.tar.gz")
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
