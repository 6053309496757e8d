"""Fixtures of the twin tests: the API server fixtures of ``tests/server``, the sample
supply-chain twin on that server, and a real worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import RedisServer, WorkerProcess
from tests.server.conftest import api_client, api_server, make_server  # noqa: F401 - fixtures

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "ontologies"


@pytest.fixture
def twin(api_client: httpx.Client) -> dict[str, str]:  # noqa: F811 - the fixture above
    """The supply-chain ontology uploaded, its twin built and the example scenario stored."""
    uploaded = api_client.post(
        "/api/v1/ontologies?name=supply-chain",
        content=(RESOURCES / "supply_chain.ttl").read_bytes(),
        headers={"Content-Type": "text/turtle"},
    )
    assert uploaded.status_code == 201, uploaded.text
    created = api_client.post(
        "/api/v1/twins", json={"name": "supply-chain", "ontology_id": "supply-chain"}
    )
    assert created.status_code == 201, created.text
    twin_id = created.json()["id"]
    scenario = yaml.safe_load((RESOURCES / "supply_chain_scenario.yaml").read_text())
    stored = api_client.post(f"/api/v1/twins/{twin_id}/scenarios", json=scenario)
    assert stored.status_code == 201, stored.text
    return {"twin_id": twin_id, "scenario_id": stored.json()["id"]}


@pytest.fixture
def worker(redis_server: RedisServer, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real worker with its own data directory (it shares nothing with the server but Redis)."""
    process = WorkerProcess(
        {"REDIS_URL": redis_server.url, "MIMIR_DATA_DIR": str(tmp_path / "worker-data")},
        concurrency=2,
        log_path=tmp_path / "worker.log",
    ).start()
    yield process
    process.stop()
