"""Ontologies and the knowledge graph over HTTP, on a real ``mimir server`` process."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
import rdflib
from rdflib.compare import isomorphic
from rdflib.plugins.stores.sparqlstore import SPARQLStore

from tests.helpers import RedisServer, ServerProcess, WorkerProcess
from tests.ontology.conftest import SC

STORE_CLASS = rdflib.URIRef(SC + "Store")


@pytest.fixture
def loaded(api_client: httpx.Client, supply_chain_ttl: str) -> httpx.Client:
    answer = api_client.post(
        "/api/v1/ontologies", json={"name": "supply-chain", "content": supply_chain_ttl}
    )
    assert answer.status_code == 201, answer.text
    return api_client


def test_upload_list_get_stats_export_delete(loaded: httpx.Client, supply_chain_ttl: str) -> None:
    client = loaded
    # The raw document as the body, its media type giving the format.
    raw = client.post(
        "/api/v1/ontologies",
        params={"name": "supply-chain", "version": "2"},
        content=rdflib.Graph().parse(data=supply_chain_ttl).serialize(format="xml"),
        headers={"Content-Type": "application/rdf+xml"},
    )
    assert raw.status_code == 201, raw.text
    assert raw.json()["format"] == "rdfxml"
    listed = client.get("/api/v1/ontologies").json()["ontologies"]
    assert [o["id"] for o in listed] == ["supply-chain@1", "supply-chain@2"]
    assert client.get("/api/v1/ontologies/supply-chain").json()["id"] == "supply-chain@2"
    stats = client.get("/api/v1/ontologies/supply-chain@1/stats").json()
    assert stats["classes"] == 5 and stats["individuals"] == 7
    exported = client.get("/api/v1/ontologies/supply-chain@1/export", params={"format": "ntriples"})
    assert exported.headers["content-type"].startswith("application/n-triples")
    assert 'filename="supply-chain-1.nt"' in exported.headers["content-disposition"]
    assert isomorphic(
        rdflib.Graph().parse(data=exported.text, format="nt"),
        rdflib.Graph().parse(data=supply_chain_ttl, format="turtle"),
    )
    assert client.delete("/api/v1/ontologies/supply-chain@2").status_code == 200
    missing = client.get("/api/v1/ontologies/supply-chain@2")
    assert missing.status_code == 404 and "no ontology" in missing.json()["error"]


def test_upload_errors_are_clear_4xx(loaded: httpx.Client, supply_chain_ttl: str) -> None:
    client = loaded
    taken = client.post(
        "/api/v1/ontologies", json={"name": "supply-chain", "content": supply_chain_ttl}
    )
    assert taken.status_code == 409 and "exists" in taken.json()["error"]
    broken = client.post(
        "/api/v1/ontologies",
        json={"name": "broken", "content": "@prefix ex: <http://e/> .\n\nex:a ex:b .\n"},
    )
    assert broken.status_code == 422
    assert broken.json()["detail"]["line"] == 3
    assert "line 3" in broken.json()["error"]
    assert client.post("/api/v1/ontologies", json={"content": "x"}).status_code == 422
    bad_format = client.post(
        "/api/v1/ontologies", json={"name": "x", "format": "yaml", "content": "a: b"}
    )
    assert bad_format.status_code == 415
    nameless = client.post("/api/v1/ontologies", content=b"<a> <b> <c> .",
                           headers={"Content-Type": "text/turtle"})  # fmt: skip
    assert nameless.status_code == 422 and "name" in nameless.json()["error"]
    assert client.get("/api/v1/ontologies/x/export", params={"format": "png"}).status_code == 404


def test_query_and_update_through_the_api(loaded: httpx.Client) -> None:
    client = loaded
    query = f"SELECT ?s WHERE {{ ?s a <{STORE_CLASS}> }} ORDER BY ?s"
    answer = client.post("/api/v1/kg/query", json={"query": query}).json()
    assert answer["head"]["vars"] == ["s"]
    assert len(answer["results"]["bindings"]) == 3 and answer["truncated"] is False
    updated = client.post(
        "/api/v1/kg/update",
        json={
            "update": f"INSERT DATA {{ GRAPH <urn:extra> {{ <{SC}Outlet> a <{STORE_CLASS}> }} }}"
        },
    )
    assert updated.status_code == 200, updated.text
    after = client.post("/api/v1/kg/query", json={"query": query}).json()
    assert f"{SC}Outlet" in [b["s"]["value"] for b in after["results"]["bindings"]]
    scoped = client.post(
        "/api/v1/kg/query", json={"query": query, "ontology": "supply-chain"}
    ).json()
    assert len(scoped["results"]["bindings"]) == 3  # the update went to another graph
    ask = client.post("/api/v1/kg/query", json={"query": f"ASK {{ <{SC}Outlet> ?p ?o }}"})
    assert ask.json()["boolean"] is True
    refused = client.post("/api/v1/kg/query", json={"query": "DELETE WHERE { ?s ?p ?o }"})
    assert refused.status_code == 400 and "read-only" in refused.json()["error"]
    malformed = client.post("/api/v1/kg/query", json={"query": "SELECT WHERE {"})
    assert malformed.status_code == 400 and "invalid SPARQL" in malformed.json()["error"]


def test_row_and_time_limits_hold(loaded: httpx.Client) -> None:
    client = loaded
    limited = client.post(
        "/api/v1/kg/query", json={"query": "SELECT * WHERE { ?s ?p ?o }", "limit": 5}
    ).json()
    assert len(limited["results"]["bindings"]) == 5 and limited["truncated"] is True
    cross = "SELECT * WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }"
    slow = client.post("/api/v1/kg/query", json={"query": cross, "timeout": 0.5, "limit": 100_000})
    assert slow.status_code == 504 and "time limit" in slow.json()["error"]
    too_many = client.post("/api/v1/kg/query", json={"query": cross, "limit": 10**7})
    assert too_many.status_code == 422
    # The server is still responsive after the stopped query.
    assert client.get("/health").status_code == 200


def test_subgraph(loaded: httpx.Client) -> None:
    view = loaded.get(
        "/api/v1/kg/subgraph", params={"root_uri": f"{SC}MainFactory", "depth": 1}
    ).json()
    labels = {n["label"] for n in view["nodes"]}
    assert {"Main factory", "SteelCo", "PlastiCorp", "North DC"} <= labels
    assert (
        loaded.get("/api/v1/kg/subgraph", params={"root_uri": "x", "depth": 9}).status_code == 422
    )


def test_sparql_protocol_content_negotiation(loaded: httpx.Client) -> None:
    client = loaded
    select = f"SELECT ?s ?cap WHERE {{ ?s <{SC}capacity> ?cap }} ORDER BY ?s"
    as_csv = client.get("/api/v1/kg/sparql", params={"query": select},
                        headers={"Accept": "text/csv"})  # fmt: skip
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert rows[0] == ["s", "cap"] and [f"{SC}MainFactory", "600"] in rows
    as_tsv = client.post("/api/v1/kg/sparql", data={"query": select},
                         headers={"Accept": "text/tab-separated-values"})  # fmt: skip
    assert as_tsv.text.splitlines()[0] == "?s\t?cap"
    assert f"<{SC}MainFactory>\t600" in as_tsv.text or f'<{SC}MainFactory>\t"600"' in as_tsv.text
    as_xml = client.post(
        "/api/v1/kg/sparql",
        content=select,
        headers={"Content-Type": "application/sparql-query",
                 "Accept": "application/sparql-results+xml"},
    )  # fmt: skip
    tree = ElementTree.fromstring(as_xml.content)
    assert len(tree.findall(".//{http://www.w3.org/2005/sparql-results#}result")) == 7
    as_json = client.get("/api/v1/kg/sparql", params={"query": select})
    assert as_json.headers["content-type"].startswith("application/sparql-results+json")
    construct = f"CONSTRUCT WHERE {{ ?s <{SC}supplies> ?o }}"
    turtle = client.get("/api/v1/kg/sparql", params={"query": construct},
                        headers={"Accept": "text/turtle"})  # fmt: skip
    assert len(rdflib.Graph().parse(data=turtle.text, format="turtle")) == 6
    refused = client.get("/api/v1/kg/sparql", params={"query": construct},
                         headers={"Accept": "image/png"})  # fmt: skip
    assert refused.status_code == 406
    assert client.get("/api/v1/kg/sparql").status_code == 400
    update = client.post("/api/v1/kg/sparql", data={"update": "INSERT DATA { <urn:a> <urn:b> 1 }"})
    assert update.status_code == 204
    assert client.get("/api/v1/kg/sparql", params={"update": "CLEAR ALL"}).status_code == 405


def test_rdflib_sparqlstore_queries_mimir(loaded: httpx.Client, api_server: ServerProcess) -> None:
    # An unmodified rdflib client, as it would query Fuseki.
    for method in ("GET", "POST"):
        graph = rdflib.Graph(SPARQLStore(f"{api_server.base_url}/api/v1/kg/sparql", method=method))
        stores = sorted(str(s) for s in graph.subjects(rdflib.RDF.type, STORE_CLASS))
        assert stores == [f"{SC}StoreLancaster", f"{SC}StoreLiverpool", f"{SC}StoreYork"]
        answer = graph.query(f"ASK {{ <{SC}NorthDC> <{SC}supplies> <{SC}StoreYork> }}")
        assert answer.askAnswer is True
        built = graph.query(f"CONSTRUCT WHERE {{ ?s <{SC}supplies> ?o }}")
        assert len(built.graph) == 6


def test_data_survives_a_server_restart(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, supply_chain_ttl: str
) -> None:
    first = make_server(redis_url=redis_server.url).start()
    with httpx.Client(base_url=first.base_url, timeout=30) as client:
        assert (
            client.post(
                "/api/v1/ontologies", json={"name": "sc", "content": supply_chain_ttl}
            ).status_code
            == 201
        )
        # The default graph is the union of the named graphs: write to one.
        client.post(
            "/api/v1/kg/update",
            json={"update": "INSERT DATA { GRAPH <urn:g> { <urn:a> <urn:b> <urn:c> } }"},
        )
    first.stop()
    second = make_server(redis_url=redis_server.url).start()
    with httpx.Client(base_url=second.base_url, timeout=30) as client:
        assert client.get("/api/v1/ontologies/sc/stats").json()["individuals"] == 7
        ask = client.post("/api/v1/kg/query", json={"query": "ASK { <urn:a> <urn:b> <urn:c> }"})
        assert ask.json()["boolean"] is True


def test_writes_need_the_token(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = make_server(redis_url=redis_server.url, MIMIR_API_TOKEN="s3cret").start()
    update = {"update": "INSERT DATA { <urn:a> <urn:b> <urn:c> }"}
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.post("/api/v1/kg/update", json=update).status_code == 401
        assert client.post("/api/v1/kg/sparql", data=update).status_code == 401
        authorised = client.post(
            "/api/v1/kg/update", json=update, headers={"Authorization": "Bearer s3cret"}
        )
        assert authorised.status_code == 200


def test_a_worker_beside_the_server_reaches_the_store_through_it(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    data_dir: Path,
    tmp_path: Path,
    supply_chain_ttl: str,
) -> None:
    # The server holds the on-disk store; a worker on the same data directory runs the
    # Ontology plugins through the server's SPARQL endpoint (MIMIR_API_URL).
    server = make_server(redis_url=redis_server.url, MIMIR_API_TOKEN="tok").start()
    auth = {"Authorization": "Bearer tok"}
    worker = WorkerProcess(
        {
            "REDIS_URL": redis_server.url,
            "MIMIR_DATA_DIR": str(data_dir),
            "MIMIR_API_URL": server.base_url,
            "MIMIR_API_TOKEN": "tok",
        },
        concurrency=1,
        log_path=tmp_path / "worker.log",
    ).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=30, headers=auth) as client:
            assert (
                client.post(
                    "/api/v1/ontologies", json={"name": "supply-chain", "content": supply_chain_ttl}
                ).status_code
                == 201
            )
            pipeline = {
                "name": "kg-on-worker",
                "steps": [
                    {"name": "load", "plugin": "Ontology.load", "output": "loaded", "config": {
                        "ontology": "supply-chain", "input": "{{ stores }}",
                        "subject": SC + "{key}", "type": str(STORE_CLASS), "label": "name",
                        "properties": {SC + "capacity": "capacity"}}},
                    {"name": "find", "plugin": "Ontology.query", "output": "big", "config": {
                        "query": f"SELECT ?s WHERE {{ ?s a <{STORE_CLASS}> ; <{SC}capacity> ?c"
                                 " FILTER(?c >= $min) } ORDER BY ?s",
                        "params": {"min": 200}}},
                ],
            }  # fmt: skip
            stores = [{"key": "StoreBolton", "name": "Store Bolton", "capacity": 250}]
            accepted = client.post(
                "/api/v1/queue/pipelines/enqueue",
                json={"pipeline": pipeline, "context": {"stores": stores}},
            )
            assert accepted.status_code == 202, accepted.text
            job = client.get(
                f"/api/v1/queue/jobs/{accepted.json()['job_id']}/wait", params={"timeout": "60s"}
            ).json()
            assert job["status"] == "succeeded", (job, worker.output())
            found = [row["s"] for row in job["result"]["context"]["big"]]
            assert found == [SC + "StoreBolton", SC + "StoreLiverpool", SC + "StoreYork"]
            stats = client.get("/api/v1/ontologies/supply-chain/stats").json()
            assert stats["individuals"] == 8  # the worker's triples are in the server's graph
    finally:
        worker.stop()
