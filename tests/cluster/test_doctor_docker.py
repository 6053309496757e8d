"""``mimir doctor`` against a real Docker cluster: healthy, then a worker container with a
small memory limit running a step that allocates past it (the kernel OOM-kills it).

Uses the engine ``scripts/system-deps.sh`` starts and the images ``DockerBackend.build``
makes from the base image ``mimir/base:bookworm``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from mimir.app.cluster.docker_backend import DockerBackend
from mimir.app.cluster.selection import docker_engine_answers
from mimir.app.doctor_cli import main as doctor_main
from mimir.app.services.api import ApiClient
from mimir.app.services.doctor import Report, diagnose
from tests.helpers import free_port, wait_until

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers"),
]

PROJECT = "mimirdoctor"
#: Small enough that a worker (about 45 MB idle) fits and the step below does not.
WORKER_MEMORY = "160m"


def run_doctor(backend: DockerBackend) -> Report:
    async def go() -> Report:
        api = ApiClient(backend.api_url)
        try:
            return await diagnose(api, backend)
        finally:
            await api.aclose()

    return asyncio.run(go())


def describe(report: Report) -> str:
    return "\n".join(f"{f.severity} {f.check} [{f.subject}] {f.seen}" for f in report.findings)


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerBackend]:
    asyncio.run(DockerBackend(PROJECT).build())  # the images of this checkout
    cluster = DockerBackend(
        PROJECT,
        api_port=free_port(),
        worker_concurrency=1,
        grace=5,
        start_timeout=120,
        resources={"worker_memory": WORKER_MEMORY},
    )
    asyncio.run(cluster.clean())  # leftovers of an interrupted run
    asyncio.run(cluster.up(1))
    try:
        yield cluster
    finally:
        asyncio.run(cluster.clean())
        cluster.close()


def test_a_healthy_docker_cluster_reports_nothing(
    backend: DockerBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_doctor(backend)
    assert report.findings == [], describe(report)
    assert "containers.oom" in report.checks
    snapshot = report.snapshot
    assert snapshot is not None and len(snapshot["workers"]) == 1
    # The CLI finds the same cluster by its project and exits 0.
    code = doctor_main(["--project", PROJECT, "--backend", "docker", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert json.loads(out)["findings"] == []


def test_a_worker_container_killed_for_memory_is_found(backend: DockerBackend) -> None:
    # A step that allocates past the container's limit: ~2.5 M empty lists (~64 bytes each)
    # parsed from a 7.5 MB JSON text that arrives in the job's context.
    blob = "[" + "[]," * 2_500_000 + "[]]"
    pipeline = {
        "name": "hog",
        "steps": [
            {
                "name": "parse",
                "plugin": "Input.json",
                "config": {"json_string": "{{ blob }}"},
                "output": "rows",
            }
        ],
    }
    with httpx.Client(base_url=backend.api_url, timeout=60.0) as http:
        answer = http.post(
            "/api/v1/queue/pipelines/enqueue",
            json={"pipeline": pipeline, "context": {"blob": blob}, "max_retries": 0},
        )
        assert answer.status_code == 202, answer.text

    def killed() -> bool:
        instances = asyncio.run(backend.instances())
        events = asyncio.run(backend.oom_events(3600))
        return any(i.oom_killed for i in instances) or bool(events)

    wait_until(killed, timeout=120, interval=1.0, message="the worker container OOM-killed")
    report = run_doctor(backend)
    oom = [f for f in report.findings if f.check == "containers.oom"]
    assert len(oom) == 1, describe(report)
    assert oom[0].severity == "error" and oom[0].subject.startswith(f"{PROJECT}")
    assert "worker" in oom[0].subject
    assert "OOM" in oom[0].seen
    assert "raise the limit" in oom[0].action
    assert report.exit_code == 2
