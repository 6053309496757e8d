"""The default ontology store (Oxigraph on disk), in process."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import rdflib
from rdflib.compare import isomorphic

from mimir.core.ontology import (
    FORMATS,
    OntologyError,
    OntologyExistsError,
    OntologyNotFoundError,
    OntologyStore,
    QueryTimeoutError,
    RdfParseError,
    SparqlError,
    UnsupportedFormatError,
    close_ontology_stores,
    open_ontology_store,
)
from mimir.core.settings import Settings
from tests.helpers import async_wait_until
from tests.ontology.conftest import SC

#: A blank node and a language tag make the round trip less trivial.
EXTRA = """
@prefix sc: <http://mimir-aip.local/ontology/supply-chain#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
sc:NorthDC sc:address [ sc:street "1 Dock Road" ; sc:postcode "PR1" ] ;
    rdfs:comment "Centre de distribution"@fr .
"""

RDFLIB_NAMES = {"turtle": "turtle", "rdfxml": "xml", "ntriples": "nt", "jsonld": "json-ld"}


def _source(supply_chain_ttl: str) -> rdflib.Graph:
    return rdflib.Graph().parse(data=supply_chain_ttl + EXTRA, format="turtle")


@pytest.mark.parametrize("upload_format", sorted(FORMATS))
def test_every_format_round_trips(
    store: OntologyStore, supply_chain_ttl: str, upload_format: str
) -> None:
    # The document is written by rdflib (not by us) and the answers are read by rdflib.
    original = _source(supply_chain_ttl)
    document = original.serialize(format=RDFLIB_NAMES[upload_format])
    info = store.upload("sc", document, fmt=upload_format)
    assert info.triples == len(original)
    assert info.format == upload_format
    for export_format in FORMATS:
        body, media = store.export("sc", export_format)
        assert media == FORMATS[export_format].media_type
        back = rdflib.Graph().parse(data=body, format=RDFLIB_NAMES[export_format])
        assert isomorphic(back, original), f"{upload_format} -> {export_format} changed the graph"


@pytest.mark.parametrize(
    ("fmt", "document", "line"),
    [
        ("turtle", '@prefix ex: <http://e/> .\nex:a ex:b ex:c .\nex:a ex:b "open .\n', 3),
        ("turtle", "@prefix ex: <http://e/> .\n\n\nex:a ex:b .\n", 4),
        ("ntriples", "<http://a> <http://b> <http://c> .\n<http://a> <http://b> .\n", 2),
        (
            "rdfxml",
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
            '<rdf:Description rdf:about="http://e/a">\n</rdf:RDF>\n',
            3,
        ),
        ("jsonld", '{"@id": "http://e/a",\n "http://e/p": [1,\n }', 3),
    ],
)
def test_a_parse_error_names_its_line(
    store: OntologyStore, fmt: str, document: str, line: int
) -> None:
    with pytest.raises(RdfParseError) as caught:
        store.upload("broken", document, fmt=fmt)
    assert caught.value.line == line
    assert f"line {line}" in str(caught.value)
    assert store.list() == []  # nothing recorded for a refused document


def test_stats_count_classes_properties_individuals(
    store: OntologyStore, supply_chain_ttl: str
) -> None:
    store.upload("supply-chain", supply_chain_ttl)
    stats = store.stats("supply-chain")
    assert stats.triples == len(rdflib.Graph().parse(data=supply_chain_ttl, format="turtle"))
    assert (stats.classes, stats.properties, stats.individuals) == (5, 7, 7)


def test_versions_are_separate_graphs(store: OntologyStore, supply_chain_ttl: str) -> None:
    v1 = store.upload("sc", supply_chain_ttl, version="1")
    v2 = store.upload("sc", "<http://e/a> <http://e/b> <http://e/c> .", version="2", fmt="nt")
    assert v1.graph_uri.endswith("/ontology/sc/1") and v2.graph_uri.endswith("/ontology/sc/2")
    assert store.get("sc").id == "sc@2"  # the bare name is the newest version
    with pytest.raises(OntologyExistsError):
        store.upload("sc", supply_chain_ttl, version="1")
    store.delete("sc@2")
    assert [i.id for i in store.list()] == ["sc@1"]
    assert store.stats("sc@1").individuals == 7
    with pytest.raises(OntologyNotFoundError):
        store.stats("sc@2")
    rows = store.query("SELECT ?s WHERE { <http://e/a> ?p ?o }").rows
    assert rows == []  # the dropped graph is gone from queries too


def test_streamed_uploads_in_batches_keep_blank_nodes_to_their_document(
    store: OntologyStore,
) -> None:
    # More triples than one write batch, then an append whose _:b names another node.
    lines = [f"<http://e/s{i}> <http://e/p> _:b{i % 3} ." for i in range(120_000)]
    lines += ['_:b0 <http://e/label> "first" .']
    first = io.BytesIO("\n".join(lines).encode())
    info = store.upload_stream("big", first, fmt="nt")
    assert info.triples == 120_001
    store.upload_stream("big", io.BytesIO(b'_:b0 <http://e/label> "second" .'), fmt="nt",
                        append=True)  # fmt: skip
    rows = store.query("SELECT (COUNT(DISTINCT ?b) AS ?n) WHERE { ?b <http://e/label> ?l }").rows
    assert rows[0]["n"]["value"] == "2"  # two documents, two blank nodes
    assert store.get("big").triples == 120_002


def test_bad_names_and_formats_are_refused(store: OntologyStore) -> None:
    with pytest.raises(UnsupportedFormatError, match="unknown RDF format 'yaml'"):
        store.upload("x", "a", fmt="yaml")
    with pytest.raises(OntologyError, match=r"ontology name '\.\./etc'"):
        store.upload("../etc", "")


def test_query_kinds_and_row_limit(store: OntologyStore, supply_chain_ttl: str) -> None:
    store.upload("sc", supply_chain_ttl)
    select = store.query(f"SELECT ?s WHERE {{ ?s a <{SC}Store> }} ORDER BY ?s", row_limit=2)
    assert [r["s"]["value"] for r in select.rows] == [f"{SC}StoreLancaster", f"{SC}StoreLiverpool"]
    assert select.truncated is True
    full = store.query(f"SELECT ?s WHERE {{ ?s a <{SC}Store> }}", row_limit=3)
    assert len(full.rows) == 3 and full.truncated is False
    assert store.query(f"ASK {{ <{SC}NorthDC> <{SC}supplies> <{SC}StoreYork> }}").boolean is True
    graph = store.query(f"CONSTRUCT {{ ?s <{SC}supplies> ?o }} WHERE {{ ?s <{SC}supplies> ?o }}")
    assert graph.kind == "graph" and len(graph.triples) == 6
    scoped = store.query("SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }", ontology="sc")
    assert scoped.rows[0]["n"]["value"] == str(store.get("sc").triples)


def test_queries_are_read_only_and_updates_work(
    store: OntologyStore, supply_chain_ttl: str
) -> None:
    info = store.upload("sc", supply_chain_ttl)
    with pytest.raises(SparqlError, match="read-only"):
        store.query("PREFIX x: <http://e/>\nDELETE WHERE { ?s ?p ?o }")
    with pytest.raises(SparqlError, match="invalid SPARQL"):
        store.query("SELECT WHERE {")
    store.update(f"INSERT DATA {{ GRAPH <{info.graph_uri}> {{ <{SC}Extra> a <{SC}Store> }} }}")
    assert store.stats("sc").individuals == 8
    with pytest.raises(SparqlError):
        store.update("INSERT NONSENSE")


def test_a_query_past_its_time_limit_is_stopped(
    store: OntologyStore, supply_chain_ttl: str
) -> None:
    store.upload("sc", supply_chain_ttl)
    # ~81^4 = 43 million rows: far more than a quarter second's work.
    cross = "SELECT * WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }"
    with pytest.raises(QueryTimeoutError, match=r"time limit of 0\.25 s"):
        store.query(cross, timeout=0.25, row_limit=10**9)


def test_subgraph_walks_both_directions(store: OntologyStore, supply_chain_ttl: str) -> None:
    store.upload("sc", supply_chain_ttl)
    view = store.subgraph(f"{SC}NorthDC", depth=1)
    ids = {n["id"] for n in view.nodes}
    assert {f"{SC}MainFactory", f"{SC}StoreYork", f"{SC}DistributionCentre"} <= ids
    assert f"{SC}SteelCo" not in ids  # two hops away
    root = next(n for n in view.nodes if n["id"] == f"{SC}NorthDC")
    assert root["label"] == "North DC" and root["properties"]["capacity"] == "500"
    edges = {(e["source"], e["label"], e["target"]) for e in view.edges}
    assert (f"{SC}MainFactory", "supplies", f"{SC}NorthDC") in edges
    deeper = store.subgraph(f"{SC}NorthDC", depth=2)
    assert f"{SC}SteelCo" in {n["id"] for n in deeper.nodes}
    capped = store.subgraph(f"{SC}NorthDC", depth=2, max_nodes=3)
    assert len(capped.nodes) == 3 and capped.truncated
    with pytest.raises(SparqlError):
        store.subgraph("http://e/> } DROP ALL {", 1)


def test_the_store_persists_on_disk(tmp_path: Path, supply_chain_ttl: str) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    open_ontology_store(settings).upload("sc", supply_chain_ttl)
    close_ontology_stores()
    reopened = open_ontology_store(settings)
    try:
        assert reopened.stats("sc").individuals == 7
        assert (tmp_path / "data" / "ontologies" / "catalog.sqlite3").exists()
    finally:
        close_ontology_stores()


def test_remote_documents_are_never_fetched(store: OntologyStore) -> None:
    import http.server
    import threading

    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/ld+json")
            self.end_headers()
            self.wfile.write(b'{"@context": {"name": "http://e/name"}}')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        jsonld = f'{{"@context": "{url}/ctx.jsonld", "@id": "http://e/a", "name": "x"}}'
        with pytest.raises(RdfParseError, match="remote context"):
            store.upload("remote", jsonld, fmt="jsonld")
        rdfxml = (
            f'<?xml version="1.0"?>\n<!DOCTYPE r SYSTEM "{url}/x.dtd">\n'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n</rdf:RDF>\n'
        )
        store.upload("dtd", rdfxml, fmt="rdfxml")  # the DTD is ignored, not fetched
    finally:
        server.shutdown()
        server.server_close()
    assert hits == []


def test_runaway_queries_are_bounded(store: OntologyStore) -> None:
    import asyncio

    from mimir.core.ontology.store import MAX_CONCURRENT_QUERIES

    lines = "".join(f'<http://e/s{i}> <http://e/p> "{i}" .\n' for i in range(50))
    store.upload("small", lines, fmt="ntriples")
    # An aggregate computes before its first row, where no deadline check can stop it:
    # 50^4 = 6.25 million joined rows keep each thread busy for seconds.
    count = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }"

    async def scenario() -> str:
        results = await asyncio.gather(
            *(store.run_query(count, timeout=0.05) for _ in range(MAX_CONCURRENT_QUERIES)),
            return_exceptions=True,
        )
        assert all(isinstance(r, QueryTimeoutError) for r in results), results
        with pytest.raises(QueryTimeoutError) as caught:
            await store.run_query("ASK { ?s ?p ?o }", timeout=0.2)

        async def answered() -> bool:
            try:
                return (await store.run_query("ASK { ?s ?p ?o }", timeout=0.5)).boolean is True
            except QueryTimeoutError:
                return False

        # The slots come back as the runaway threads end.
        await async_wait_until(answered, timeout=120, interval=0.2, message="a free slot")
        return str(caught.value)

    assert "no query slot" in asyncio.run(scenario())
