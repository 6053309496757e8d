"""``mimir cluster up --monitoring``: Prometheus in the topology, its generated scrape
configuration, and a real Prometheus scraping a real cluster (local processes when the
``prometheus`` program is installed; Docker on the real engine), queried over its HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from mimir.app.cluster.base import ClusterError, ClusterStatus, LogLine, ServiceStatus
from mimir.app.cluster.cli import main as cluster_main
from mimir.app.cluster.monitoring import prometheus_config, prometheus_files
from mimir.app.cluster.selection import docker_engine_answers
from mimir.app.cluster.topology import build_topology
from mimir.core.settings import Settings
from tests.cluster.conftest import ClusterAPI, cluster_env, sleep_pipeline
from tests.helpers import free_port, wait_until

TOKEN = "prom-test-token-5f3a9c"


def _row(status: ClusterStatus, name: str) -> ServiceStatus:
    return next(s for s in status.services if s.name == name)


# ---------------------------------------------------------------- topology and configuration


def test_monitoring_adds_a_loopback_prometheus_with_its_volume() -> None:
    assert "prometheus" not in build_topology("demo").services
    topology = build_topology(
        "demo", monitoring=True, prometheus_port=19090, api_host="0.0.0.0", api_token=TOKEN
    )
    prometheus = topology.service("prometheus")
    assert topology.monitoring and prometheus.kind == "prometheus"
    # Published on loopback whatever the API's bind address: Prometheus has no auth.
    assert prometheus.ports == {9090: ("127.0.0.1", 19090)}
    assert "prometheus_data" in topology.volumes
    assert TOKEN not in str(prometheus.environment)
    assert not any(TOKEN in part for part in prometheus.command)
    with pytest.raises(ClusterError, match="invalid scrape interval"):
        build_topology("demo", monitoring=True, scrape_interval="often")


def test_the_scrape_configuration_is_generated_from_the_topology() -> None:
    topology = build_topology("demo", monitoring=True, api_token=TOKEN, scrape_interval="1s")
    text = prometheus_config(topology)
    assert TOKEN not in text
    document = yaml.safe_load(text)
    assert document["global"]["scrape_interval"] == "1s"
    assert document["global"]["scrape_timeout"] == "1s"  # never longer than the interval
    mimir, itself = document["scrape_configs"]
    assert mimir["static_configs"][0]["targets"] == ["backend:8080"]
    assert mimir["metrics_path"] == "/metrics"
    assert mimir["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/run/secrets/mimir_api_token",
    }
    assert itself["static_configs"][0]["targets"] == ["localhost:9090"]
    # The container reads the token's secret file: only the configuration is copied in.
    assert set(prometheus_files(topology)) == {"prometheus.yml"}
    assert topology.service("prometheus").secrets == ["mimir_api_token"]
    # Without a token: no authorization, no token file.
    open_api = build_topology("demo", monitoring=True, api_port=18080, prometheus_port=19090)
    document = yaml.safe_load(prometheus_config(open_api, on_host=True))
    mimir, itself = document["scrape_configs"]
    assert "authorization" not in mimir
    assert mimir["static_configs"][0]["targets"] == ["127.0.0.1:18080"]
    assert itself["static_configs"][0]["targets"] == ["127.0.0.1:19090"]
    assert document["global"]["scrape_timeout"] == "10s"
    assert set(prometheus_files(open_api)) == {"prometheus.yml"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus)")
def test_promtool_accepts_the_configuration(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    config = tmp_path / "prometheus.yml"
    topology = build_topology("demo", monitoring=True, api_token=TOKEN, scrape_interval="500ms")
    config.write_text(prometheus_config(topology, credentials_file=str(token)))
    result = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_local_monitoring_without_prometheus_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in cluster_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus there
    argv = ["up", "--backend", "local", "--project", "nomon", "--monitoring"]
    assert cluster_main([*argv, "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert "'prometheus' program, which is not on PATH" in err
    assert "apt-get install prometheus" in err
    assert not (tmp_path / "state" / "nomon" / "state.json").exists()  # nothing started


# ---------------------------------------------------------------- querying a real Prometheus


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5.0)
    answer.raise_for_status()
    body = answer.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _value(url: str, promql: str) -> float | None:
    """The single value of ``promql`` now, ``None`` while Prometheus has no sample."""
    result = _query(url, promql)
    return float(result[0]["value"][1]) if result else None


def _targets(url: str) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/targets", timeout=5.0)
    answer.raise_for_status()
    return {t["labels"]["job"]: t for t in answer.json()["data"]["activeTargets"]}


def _wait_for_value(url: str, promql: str, expected: float, timeout: float = 30.0) -> None:
    """Until a scrape after the jobs shows ``expected`` (the first may predate them)."""
    seen: list[float | None] = []

    def matches() -> bool:
        seen.append(_value(url, promql))
        return seen[-1] == expected

    try:
        wait_until(matches, timeout=timeout, interval=0.25, message=f"{promql} == {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last values {seen[-3:]}; targets {_targets(url)}") from None


def _enqueue(api: ClusterAPI, count: int, queue: str | None = None) -> list[str]:
    ids = []
    for _ in range(count):
        body: dict[str, Any] = {"pipeline": sleep_pipeline(0.01), "context": {}}
        if queue:
            body["queue"] = queue
        response = api.client.post("/api/v1/queue/pipelines/enqueue", json=body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["job_id"])
    return ids


def _check_scrapes(url: str, api: ClusterAPI) -> None:
    """Jobs run, jobs parked on a queue no pool serves; Prometheus's view matches them."""
    records = api.wait_finished(_enqueue(api, 4), timeout=60)
    assert {r["status"] for r in records.values()} == {"succeeded"}
    _enqueue(api, 3, queue="parked")
    _wait_for_value(url, 'sum(mimir_jobs_total{status="succeeded"})', 4.0)
    _wait_for_value(url, 'sum(mimir_queue_depth{queue="parked"})', 3.0)
    _wait_for_value(url, "sum(mimir_queue_depth)", 3.0)
    # The workers' own counts, which the server aggregates from Redis (with heartbeats).
    worker_jobs = 'mimir_worker_jobs_total{pool="default",queue="default",outcome="succeeded"}'
    _wait_for_value(url, worker_jobs, 4.0)
    _wait_for_value(url, 'mimir_workers_alive{pool="default"}', 1.0)
    # Both targets up (Prometheus's own scrape may not have run yet on a loaded machine:
    # its health is "unknown" until it has).
    targets = wait_until(
        lambda: (lambda t: all(t[j]["health"] == "up" for j in ("mimir", "prometheus")) and t)(
            _targets(url)
        ),
        timeout=30,
        message="both scrape targets up",
    )
    assert targets["mimir"]["health"] == "up", targets["mimir"]
    series = _query(url, "mimir_queue_depth")
    assert {s["metric"]["job"] for s in series} == {"mimir"}


# ---------------------------------------------------------------- local processes


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_local_cluster_with_prometheus(tmp_path: Path) -> None:
    from mimir.app.cluster.local import LocalBackend

    settings = Settings.from_env({**cluster_env(tmp_path), "MIMIR_API_TOKEN": TOKEN})
    port = free_port()
    backend = LocalBackend(
        "monlocal", settings, api_port=free_port(), grace=5, start_timeout=60,
        monitoring=True, prometheus_port=port, scrape_interval="1s",
    )  # fmt: skip
    api = ClusterAPI(backend.api_url, token=TOKEN)
    try:
        status = asyncio.run(backend.up(1))
        row = _row(status, "prometheus")
        assert (row.state, row.health, row.ports) == (
            "running",
            "healthy",
            {"9090/tcp": f"127.0.0.1:{port}"},
        )
        url = f"http://127.0.0.1:{port}"
        _check_scrapes(url, api)
        state = backend.load_state()
        assert state is not None and state.prometheus_port == port
        entry = state.entry("prometheus")
        assert entry is not None
        process = psutil.Process(entry.pid)
        assert TOKEN not in " ".join(process.cmdline())
        assert not any(TOKEN in value for value in process.environ().values())
        token_file = backend.prometheus_dir / "api-token"
        assert token_file.read_text() == TOKEN and token_file.stat().st_mode & 0o777 == 0o600

        async def logs() -> list[LogLine]:
            return [line async for line in backend.logs(["prometheus"], tail=50)]

        assert any("Server is ready" in line.line for line in asyncio.run(logs()))
    finally:
        api.close()
        asyncio.run(backend.clean())
    assert not backend.prometheus_dir.exists()


# ---------------------------------------------------------------- Docker


PROJECT = "mimirmon"


@pytest.fixture(scope="module")
def docker_backend() -> Iterator[Any]:
    from mimir.app.cluster.docker_backend import DockerBackend

    # Built here too (cached layers when test_docker built them): this checkout's images.
    asyncio.run(DockerBackend(PROJECT, monitoring=True).build())
    cluster = DockerBackend(
        PROJECT, api_port=free_port(), api_token=TOKEN, worker_concurrency=2, grace=5,
        start_timeout=120, monitoring=True, prometheus_port=free_port(), scrape_interval="1s",
    )  # fmt: skip
    asyncio.run(cluster.clean())  # leftovers of an interrupted run
    started = time.monotonic()
    asyncio.run(cluster.up(1))
    cluster.up_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    try:
        yield cluster
    finally:
        asyncio.run(cluster.clean())
        cluster.close()


@pytest.mark.docker
@pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers")
def test_docker_cluster_with_prometheus(docker_backend: Any) -> None:
    backend = docker_backend
    port = backend.prometheus_port
    status = asyncio.run(backend.status())
    row = _row(status, "prometheus")
    assert (row.state, row.kind, row.ports) == (
        "running",
        "prometheus",
        {"9090/tcp": f"127.0.0.1:{port}"},
    )
    url = f"http://127.0.0.1:{port}"
    api = ClusterAPI(backend.api_url, token=TOKEN)
    try:
        _check_scrapes(url, api)
    finally:
        api.close()
    # The token is a file in the container, readable by its user only: not in what the
    # engine shows of it (environment, command, labels), nor in its image.
    container = backend._connect().containers.get(f"{PROJECT}-prometheus")
    assert TOKEN not in json.dumps(container.attrs)
    assert TOKEN not in json.dumps(container.image.attrs)
    code, output = container.exec_run(["stat", "-c", "%a %u", "/run/secrets/mimir_api_token"])
    assert (code, output.decode().strip()) == (0, "400 10001")
    assert container.attrs["Config"]["User"] == "10001:10001"
    # A later `up` without the flag keeps it; `logs prometheus` reads it.
    from mimir.app.cluster.docker_backend import DockerBackend

    again = DockerBackend(PROJECT, api_token=TOKEN, start_timeout=60)
    assert _row(asyncio.run(again.up(1)), "prometheus").state == "running"
    assert again.prometheus_port == port
    assert again._containers("prometheus")[0].id == container.id

    async def logs() -> list[LogLine]:
        return [line async for line in again.logs(["prometheus"], tail=50)]

    assert {line.service for line in asyncio.run(logs())} == {"prometheus"}
    again.close()
    # down keeps the TSDB volume; clean removes it.
    asyncio.run(backend.down())
    volumes = {v.name for v in backend._project_volumes()}
    assert f"{PROJECT}_prometheus_data" in volumes
    assert not backend._containers()
    asyncio.run(backend.clean())
    assert not backend._project_volumes()
