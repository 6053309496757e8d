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
from tests.helpers import free_port, wait_until
from tests.server.conftest import api_client, api_server, make_server  # noqa: F401 - fixtures

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
