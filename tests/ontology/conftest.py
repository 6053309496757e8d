"""Fixtures of the ontology tests: the sample ontology, a store on disk, and a real
``oxigraph serve`` SPARQL 1.1 server standing in for Fuseki."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mimir.core.ontology import OntologyStore, close_ontology_stores, open_ontology_store
from mimir.core.settings import Settings
from tests.helpers import RedisServer, ServerProcess, free_port, wait_until
from tests.server.conftest import api_client, api_server, make_server, server_env  # noqa: F401 - fixtures

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "ontologies"
SUPPLY_CHAIN = RESOURCES / "supply_chain.ttl"
SC = "http://mimir-aip.local/ontology/supply-chain#"


@pytest.fixture
def supply_chain_ttl() -> str:
    return SUPPLY_CHAIN.read_text()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OntologyStore]:
    """The default store (Oxigraph on disk) of a fresh data directory."""
    yield open_ontology_store(Settings(data_dir=tmp_path / "data"))
    close_ontology_stores()


def oxigraph_binary() -> str | None:
    """``oxigraph`` from the venv of this interpreter, else from PATH."""
    beside = Path(sys.executable).parent / "oxigraph"
    return str(beside) if beside.exists() else shutil.which("oxigraph")


class OxigraphServer:
    """A real ``oxigraph serve`` on 127.0.0.1 (the pip package ``oxigraph``)."""

    def __init__(self, location: Path, log: Path) -> None:
        binary = oxigraph_binary()
        if binary is None:
            pytest.fail("the `oxigraph` server is not installed (pip install oxigraph: dev extra)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [binary, "serve", "--location", str(location), "--bind", f"127.0.0.1:{self.port}"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"oxigraph exited: {log.read_text(errors='replace')}")
            try:
                return httpx.get(self.url + "/query?query=ASK%7B%7D", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=20, message="oxigraph serve to answer")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self._log.close()


@pytest.fixture
def oxigraph_server(tmp_path: Path) -> Iterator[OxigraphServer]:
    server = OxigraphServer(tmp_path / "oxigraph-db", tmp_path / "oxigraph.log")
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["builtin", "fuseki"])
def endpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """A real server for a whole test module, with the built-in store or with FUSEKI_URL
    pointing at a real ``oxigraph serve`` (the W3C conformance runners)."""
    base = tmp_path_factory.mktemp(f"w3c-{request.param}")
    redis = RedisServer(free_port(), base / "redis").start()
    extra: dict[str, str] = {}
    oxigraph = None
    if request.param == "fuseki":
        oxigraph = OxigraphServer(base / "oxigraph-db", base / "oxigraph.log")
        extra["FUSEKI_URL"] = oxigraph.url
    server = ServerProcess(
        free_port(),
        server_env(
            data_dir=base / "data",
            pipelines_dir=base / "pipelines",
            state_dir=base / "state",
            redis_url=redis.url,
            **extra,
        ),
        None,
        log_path=base / "server.log",
    ).start()
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client
    server.stop()
    if oxigraph is not None:
        oxigraph.stop()
    redis.stop()
