"""Fixtures and an API helper for the cluster tests (local processes and Docker)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    """A failed Docker test carries the last log lines of every Mimir container still up
    (a job stuck ``running`` is explained by its worker's log, gone once torn down)."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or item.get_closest_marker("docker") is None:
        return
    docker = shutil.which("docker")
    if docker is None:
        return
    names = subprocess.run(
        [docker, "ps", "-a", "--filter", "label=io.mimir.project", "--format", "{{.Names}}"],
        capture_output=True, text=True, timeout=30, check=False,
    ).stdout.split()  # fmt: skip
    for name in names:
        logs = subprocess.run(
            [docker, "logs", "--tail", "80", "--timestamps", name],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        report.sections.append((f"docker logs {name}", logs.stdout + logs.stderr))


#: A job that takes a moment, so that some are in flight while the cluster scales.
def sleep_pipeline(seconds: float) -> dict[str, Any]:
    return {
        "name": "cluster-test",
        "steps": [
            {
                "name": "nap",
                "plugin": "Debug.sleep",
                "config": {"seconds": seconds},
                "output": "nap",
            }
        ],
    }


@dataclass
class ClusterAPI:
    """The cluster's REST API as the tests use it (enqueue, wait, list workers)."""

    base_url: str
    token: str | None = None
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.client = httpx.Client(base_url=self.base_url, timeout=10.0, headers=headers)

    def close(self) -> None:
        self.client.close()

    def enqueue(self, count: int, seconds: float = 0.05) -> list[str]:
        ids = []
        for _ in range(count):
            response = self.client.post(
                "/api/v1/queue/pipelines/enqueue",
                json={"pipeline": sleep_pipeline(seconds), "context": {}},
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["job_id"])
        return ids

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/queue/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def cancel(self, job_id: str) -> None:
        response = self.client.post(f"/api/v1/queue/jobs/{job_id}/cancel")
        assert response.status_code in (200, 409), response.text  # 409: it had ended

    def wait_finished(self, ids: list[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """Poll until every job has ended; return the records by id."""
        deadline = time.monotonic() + timeout
        done: dict[str, dict[str, Any]] = {}
        while True:
            for job_id in ids:
                if job_id not in done:
                    record = self.job(job_id)
                    if record["status"] in ("succeeded", "failed", "cancelled", "dead"):
                        done[job_id] = record
            if len(done) == len(ids):
                return done
            if time.monotonic() > deadline:
                pending = {i: self.job(i)["status"] for i in ids if i not in done}
                raise AssertionError(
                    f"{len(pending)} job(s) unfinished after {timeout}s: {pending}"
                )
            time.sleep(0.1)

    def workers(self) -> list[dict[str, Any]]:
        response = self.client.get("/api/v1/workers")
        assert response.status_code == 200, response.text
        return list(response.json()["workers"])


def cluster_env(root: Path, *, concurrency: int | None = 2) -> dict[str, str]:
    """The settings of a local test cluster under ``root`` (its own data, pipelines and
    state directories, made here), as environment variables."""
    for name in ("data", "pipelines", "state"):
        (root / name).mkdir(parents=True, exist_ok=True)
    env = {
        "MIMIR_DATA_DIR": str(root / "data"),
        "MIMIR_PIPELINES_DIR": str(root / "pipelines"),
        "MIMIR_STATE_DIR": str(root / "state"),
    }
    if concurrency is not None:
        env["WORKER_CONCURRENCY"] = str(concurrency)
    return env


@pytest.fixture(scope="module")
def api(backend: Any) -> Iterator[ClusterAPI]:
    """The REST API of the module's ``backend`` cluster."""
    client = ClusterAPI(backend.api_url)
    yield client
    client.close()
