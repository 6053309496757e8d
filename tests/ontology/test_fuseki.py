"""The ``FUSEKI_URL`` path: the same operations against a real SPARQL 1.1 server
(``oxigraph serve``) over the SPARQL Protocol and the Graph Store Protocol."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import rdflib
from rdflib.compare import isomorphic

from mimir.core.ontology import (
    FORMATS,
    OntologyStore,
    QueryTimeoutError,
    RdfParseError,
    SparqlError,
    close_ontology_stores,
    open_ontology_store,
)
from mimir.core.ontology.triplestores import SparqlEndpointStore
from mimir.core.settings import Settings
from tests.helpers import RedisServer, ServerProcess
from tests.ontology.conftest import SC, OxigraphServer

RDFLIB_NAMES = {"turtle": "turtle", "rdfxml": "xml", "ntriples": "nt", "jsonld": "json-ld"}


@pytest.fixture
def remote_store(tmp_path: Path, oxigraph_server: OxigraphServer) -> OntologyStore:
    store = open_ontology_store(
        Settings(data_dir=tmp_path / "data", fuseki_url=oxigraph_server.url)
    )
    assert isinstance(store.triples, SparqlEndpointStore)
    yield store
    close_ontology_stores()


def test_upload_stats_export_delete_over_the_protocol(
    remote_store: OntologyStore, oxigraph_server: OxigraphServer, supply_chain_ttl: str
) -> None:
    info = remote_store.upload("sc", supply_chain_ttl)
    # The triples are in the endpoint's named graph, seen by the endpoint itself.
    answer = httpx.post(
        oxigraph_server.url + "/query",
        data={
            "query": f"SELECT (COUNT(*) AS ?n) WHERE {{ GRAPH <{info.graph_uri}> {{ ?s ?p ?o }} }}"
        },
        headers={"Accept": "application/sparql-results+json"},
    ).json()
    assert int(answer["results"]["bindings"][0]["n"]["value"]) == info.triples
    stats = remote_store.stats("sc")
    assert (stats.classes, stats.properties, stats.individuals) == (5, 7, 7)
    original = rdflib.Graph().parse(data=supply_chain_ttl, format="turtle")
    for fmt in FORMATS:
        body, _ = remote_store.export("sc", fmt)
        assert isomorphic(rdflib.Graph().parse(data=body, format=RDFLIB_NAMES[fmt]), original)
    remote_store.delete("sc")
    assert remote_store.triples.graph_triples(info.graph_uri) == []


def test_queries_updates_and_limits_over_the_protocol(
    remote_store: OntologyStore, supply_chain_ttl: str
) -> None:
    info = remote_store.upload("sc", supply_chain_ttl)
    remote_store.upload("other", "<http://e/a> <http://e/b> <http://e/c> .", fmt="ntriples")
    # Without a union default graph on the server, Mimir names its graphs itself.
    rows = remote_store.query(f"SELECT ?s WHERE {{ ?s a <{SC}Store> }}", row_limit=2)
    assert len(rows.rows) == 2 and rows.truncated
    assert remote_store.query("ASK { <http://e/a> ?p ?o }").boolean is True
    assert remote_store.query("ASK { <http://e/a> ?p ?o }", ontology="sc").boolean is False
    graph = remote_store.query(f"CONSTRUCT WHERE {{ ?s <{SC}supplies> ?o }}")
    assert graph.kind == "graph" and len(graph.triples) == 6
    remote_store.update(
        f"INSERT DATA {{ GRAPH <{info.graph_uri}> {{ <{SC}Extra> a <{SC}Store> }} }}"
    )
    assert remote_store.stats("sc").individuals == 8
    with pytest.raises(SparqlError, match="refused the query"):
        remote_store.query("SELECT WHERE {")
    with pytest.raises(RdfParseError, match="line 2"):
        remote_store.upload("bad", "<http://a> <http://b> <http://c> .\n<http://a> .", fmt="nt")


def test_a_slow_endpoint_answer_is_a_timeout(
    remote_store: OntologyStore, supply_chain_ttl: str
) -> None:
    remote_store.upload("sc", supply_chain_ttl)
    cross = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }"
    with pytest.raises(QueryTimeoutError):
        remote_store.query(cross, timeout=0.3)


def test_an_unreachable_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    from mimir.core.ontology import EndpointError
    from tests.helpers import free_port

    store = open_ontology_store(
        Settings(data_dir=tmp_path / "d", fuseki_url=f"http://127.0.0.1:{free_port()}")
    )
    try:
        with pytest.raises(EndpointError, match="unreachable"):
            store.upload("sc", "<http://e/a> <http://e/b> <http://e/c> .", fmt="nt")
    finally:
        close_ontology_stores()


def test_the_api_server_uses_fuseki_url(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    oxigraph_server: OxigraphServer,
    supply_chain_ttl: str,
) -> None:
    server = make_server(redis_url=redis_server.url, FUSEKI_URL=oxigraph_server.url).start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        created = client.post(
            "/api/v1/ontologies", json={"name": "supply-chain", "content": supply_chain_ttl}
        )
        assert created.status_code == 201, created.text
        answer = client.post(
            "/api/v1/kg/query",
            json={"query": f"SELECT ?s WHERE {{ ?s a <{SC}Supplier> }} ORDER BY ?s"},
        ).json()
        assert [b["s"]["value"] for b in answer["results"]["bindings"]] == [
            f"{SC}PlastiCorp",
            f"{SC}SteelCo",
        ]
    # The triples live in the endpoint, not in Mimir's data directory.
    direct = httpx.post(
        oxigraph_server.url + "/query",
        data={"query": f"ASK {{ GRAPH ?g {{ <{SC}SteelCo> ?p ?o }} }}"},
        headers={"Accept": "application/sparql-results+json"},
    ).json()
    assert direct["boolean"] is True
