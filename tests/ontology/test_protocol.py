"""The SPARQL 1.1 Protocol endpoint and uploads to the letter (issue 14), each defect's
regression test on a real ``mimir server`` with the built-in store and with ``FUSEKI_URL``
(a real ``oxigraph serve``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import RedisServer, ServerProcess
from tests.ontology.conftest import SC, OxigraphServer

SPARQL = "/api/v1/kg/sparql"
JSON = {"Accept": "application/sparql-results+json"}


@pytest.fixture(params=["builtin", "fuseki"])
def kg(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
) -> Iterator[httpx.Client]:
    """A server with the built-in store, or with FUSEKI_URL pointing at oxigraph serve."""
    env: dict[str, str] = {}
    oxigraph = None
    if request.param == "fuseki":
        oxigraph = OxigraphServer(tmp_path / "oxigraph-db", tmp_path / "oxigraph.log")
        env["FUSEKI_URL"] = oxigraph.url
    server = make_server(redis_url=redis_server.url, **env).start()
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client
    server.stop()
    if oxigraph is not None:
        oxigraph.stop()


def update(client: httpx.Client, text: str, **params: str | list[str]) -> httpx.Response:
    return client.post(
        SPARQL,
        params=params,
        content=text.encode(),
        headers={"Content-Type": "application/sparql-update"},
    )


def ask(client: httpx.Client, text: str, **params: str | list[str]) -> bool:
    answer = client.get(SPARQL, params={"query": text, **params}, headers=JSON)
    assert answer.status_code == 200, answer.text
    return bool(answer.json()["boolean"])


def test_named_graph_uri_and_default_graph_uri_make_the_dataset(kg: httpx.Client) -> None:
    """Defect 1: named-graph-uri was ignored; default-graph-uri alone kept every named
    graph visible."""
    assert (
        update(kg, "INSERT DATA { GRAPH <urn:g> { <urn:s> <urn:p> <urn:o> } }").status_code == 204
    )
    pattern = "ASK { GRAPH ?g { <urn:s> ?p ?o } }"
    assert ask(kg, pattern, **{"named-graph-uri": "urn:other"}) is False
    assert ask(kg, pattern, **{"named-graph-uri": "urn:g"}) is True
    # A default graph given alone leaves no named graphs (SPARQL 1.1 Protocol 2.1.4).
    assert ask(kg, pattern, **{"default-graph-uri": "urn:g"}) is False
    assert ask(kg, "ASK { <urn:s> ?p ?o }", **{"default-graph-uri": "urn:g"}) is True
    assert ask(kg, "ASK { <urn:s> ?p ?o }", **{"default-graph-uri": "urn:other"}) is False
    # POST form: the same parameters in the body.
    answer = kg.post(
        SPARQL,
        data={"query": pattern, "named-graph-uri": "urn:other"},
        headers=JSON,
    )
    assert answer.status_code == 200 and answer.json()["boolean"] is False


def test_graph_patterns_see_the_ontologies_on_both_stores(
    kg: httpx.Client, supply_chain_ttl: str
) -> None:
    """Defect 2: with FUSEKI_URL, GRAPH patterns saw nothing once an ontology existed."""
    created = kg.post("/api/v1/ontologies", json={"name": "sc", "content": supply_chain_ttl})
    assert created.status_code == 201, created.text
    graph = created.json()["graph_uri"]
    assert ask(kg, f"ASK {{ GRAPH ?g {{ <{SC}SteelCo> ?p ?o }} }}") is True
    assert ask(kg, f"ASK {{ GRAPH <{graph}> {{ <{SC}SteelCo> ?p ?o }} }}") is True
    assert ask(kg, f"ASK {{ <{SC}SteelCo> ?p ?o }}") is True  # the union default graph
    rows = kg.post("/api/v1/kg/query", json={"query": "SELECT ?g { GRAPH ?g { } }"}).json()
    assert graph in [b["g"]["value"] for b in rows["results"]["bindings"]]


def test_queries_and_updates_share_one_default_graph(kg: httpx.Client) -> None:
    """Defect 3: a query's default graph (union of the named graphs) found rows that an
    update's WHERE did not."""
    assert update(kg, "INSERT DATA { GRAPH <urn:g1> { <urn:x> a <urn:C> } }").status_code == 204
    answer = kg.get(SPARQL, params={"query": "SELECT ?s { ?s a <urn:C> }"}, headers=JSON)
    assert [b["s"]["value"] for b in answer.json()["results"]["bindings"]] == ["urn:x"]
    done = update(kg, "INSERT { GRAPH <urn:out> { ?s a <urn:Seen> } } WHERE { ?s a <urn:C> }")
    assert done.status_code == 204, done.text
    assert ask(kg, "ASK { GRAPH <urn:out> { <urn:x> a <urn:Seen> } }") is True
    # GRAPH ?g in an update's WHERE ranges over the named graphs too.
    update(
        kg, "INSERT { GRAPH <urn:where> { ?s <urn:in> ?g } } WHERE { GRAPH ?g { ?s a <urn:C> } }"
    )
    assert ask(kg, "ASK { GRAPH <urn:where> { <urn:x> <urn:in> <urn:g1> } }") is True
    # The same through the API's own update call.
    kg.post(
        "/api/v1/kg/update",
        json={"update": "DELETE { GRAPH <urn:g1> { ?s a <urn:C> } } WHERE { ?s a <urn:C> }"},
    )
    assert ask(kg, "ASK { ?s a <urn:C> }") is False


def test_triples_written_without_a_graph_stay_visible(kg: httpx.Client) -> None:
    """Defect 3, the writes' side: a write that names no graph went to the store's own
    unnamed default graph, outside the union every query sees, so ``INSERT DATA { <a> <b>
    <c> }`` then ``ASK { <a> <b> <c> }`` answered false (true on the built-in store before
    the dataset rule), and nothing could read those triples again."""
    assert update(kg, "INSERT DATA { <urn:a> <urn:b> <urn:c> }").status_code == 204
    assert ask(kg, "ASK { <urn:a> <urn:b> <urn:c> }") is True
    kg.post("/api/v1/kg/update", json={"update": "INSERT DATA { <urn:d> <urn:b> <urn:c> }"})
    answer = kg.post("/api/v1/kg/query", json={"query": "ASK { <urn:d> <urn:b> <urn:c> }"})
    assert answer.json()["boolean"] is True
    # A template without GRAPH, its WHERE over the union.
    seen = "INSERT { ?s <urn:seen> true } WHERE { ?s <urn:b> <urn:c> }"
    assert update(kg, seen).status_code == 204
    assert ask(kg, "ASK { <urn:a> <urn:seen> true . <urn:d> <urn:seen> true }") is True
    # Triples and GRAPH blocks mixed in one DATA block, with and without dots.
    mixed = (
        "INSERT DATA { <urn:m1> <urn:p> 1 . GRAPH <urn:g> { <urn:m2> <urn:p> 2 } . "
        "<urn:m3> <urn:p> 3 GRAPH <urn:g> { <urn:m4> <urn:p> 4 } }"
    )
    assert update(kg, mixed).status_code == 204, update(kg, mixed).text
    assert ask(kg, "ASK { <urn:m1> <urn:p> 1 . <urn:m3> <urn:p> 3 }") is True
    assert ask(kg, "ASK { GRAPH <urn:g> { <urn:m2> <urn:p> 2 . <urn:m4> <urn:p> 4 } }") is True
    # DELETE WHERE, DELETE DATA and DELETE … WHERE reach them.
    assert update(kg, "DELETE WHERE { <urn:a> <urn:seen> ?x }").status_code == 204
    assert ask(kg, "ASK { <urn:a> <urn:seen> ?x }") is False
    assert update(kg, "DELETE DATA { <urn:d> <urn:seen> true }").status_code == 204
    assert ask(kg, "ASK { <urn:d> <urn:seen> ?x }") is False
    # DEFAULT in graph management is that same graph; LOAD without INTO would load there.
    assert update(kg, "COPY DEFAULT TO <urn:copy>").status_code == 204
    assert ask(kg, "ASK { GRAPH <urn:copy> { <urn:a> <urn:b> <urn:c> } }") is True
    assert update(kg, "CLEAR DEFAULT").status_code == 204
    assert ask(kg, "ASK { GRAPH <urn:copy> { <urn:a> <urn:b> <urn:c> } }") is True
    assert ask(kg, "ASK { GRAPH ?g { <urn:a> <urn:b> <urn:c> } FILTER(?g != <urn:copy>) }") is False
    assert ask(kg, "ASK { GRAPH <urn:g> { <urn:m2> <urn:p> 2 } }") is True


def test_triples_in_the_stores_own_default_graph_are_kept_visible(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, data_dir: Path
) -> None:
    """Defect 3: triples an earlier version wrote to the built-in store's unnamed default
    graph were hidden by the dataset rule; the server moves them into Mimir's default graph
    when it opens the store."""
    import pyoxigraph as ox

    (data_dir / "ontologies" / "oxigraph").mkdir(parents=True)
    old = ox.Store(str(data_dir / "ontologies" / "oxigraph"))
    old.update("INSERT DATA { <urn:old> <urn:p> <urn:o> }")
    old.flush()
    del old
    server = make_server(redis_url=redis_server.url).start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert ask(client, "ASK { <urn:old> <urn:p> <urn:o> }") is True
    server.stop()


def test_using_graph_uri_and_the_with_using_conflict(kg: httpx.Client) -> None:
    """Defect 4: using-graph-uri, using-named-graph-uri and the conflict were ignored."""
    update(
        kg,
        "INSERT DATA { GRAPH <urn:g1> { <urn:a> a <urn:C> } GRAPH <urn:g2> { <urn:b> a <urn:C> } }",
    )
    rule = "INSERT { GRAPH <urn:out> { ?s a <urn:X> } } WHERE { ?s a <urn:C> }"
    assert update(kg, rule, **{"using-graph-uri": "urn:g1"}).status_code == 204
    assert ask(kg, "ASK { GRAPH <urn:out> { <urn:a> a <urn:X> } }") is True
    assert ask(kg, "ASK { GRAPH <urn:out> { <urn:b> a <urn:X> } }") is False
    named = "INSERT { GRAPH <urn:out2> { ?s a <urn:Y> } } WHERE { GRAPH ?g { ?s a <urn:C> } }"
    assert update(kg, named, **{"using-named-graph-uri": "urn:g2"}).status_code == 204
    assert ask(kg, "ASK { GRAPH <urn:out2> { <urn:b> a <urn:Y> } }") is True
    assert ask(kg, "ASK { GRAPH <urn:out2> { <urn:a> a <urn:Y> } }") is False
    conflict = update(
        kg,
        "WITH <urn:g1> DELETE { ?s a <urn:C> } WHERE { ?s a <urn:C> }",
        **{"using-named-graph-uri": "urn:g2"},
    )
    assert conflict.status_code == 400 and "USING or WITH" in conflict.json()["error"]
    assert ask(kg, "ASK { GRAPH <urn:g1> { <urn:a> a <urn:C> } }") is True


def test_the_protocol_endpoint_returns_the_whole_result(kg: httpx.Client) -> None:
    """Defect 5: the endpoint stopped at 10,000 rows (only a header said so)."""
    lines = "\n".join(f"<urn:s{i}> <urn:p> {i} ." for i in range(25_000))
    created = kg.post(
        "/api/v1/ontologies",
        params={"name": "many"},
        content=lines.encode(),
        headers={"Content-Type": "text/turtle"},
    )
    assert created.status_code == 201, created.text
    for accept, count in (
        ("application/sparql-results+json", lambda r: len(r.json()["results"]["bindings"])),
        ("text/csv", lambda r: len(r.text.strip().splitlines()) - 1),
        ("text/tab-separated-values", lambda r: len(r.text.strip().splitlines()) - 1),
    ):
        answer = kg.get(
            SPARQL, params={"query": "SELECT ?s ?o { ?s <urn:p> ?o }"}, headers={"Accept": accept}
        )
        assert answer.status_code == 200, answer.text
        assert "x-mimir-truncated" not in answer.headers
        assert count(answer) == 25_000
    graph = kg.get(
        SPARQL,
        params={"query": "CONSTRUCT WHERE { ?s <urn:p> ?o }"},
        headers={"Accept": "application/n-triples"},
    )
    assert len(graph.text.strip().splitlines()) == 25_000
    # The query's own LIMIT still limits.
    limited = kg.get(
        SPARQL, params={"query": "SELECT ?s { ?s <urn:p> ?o } LIMIT 7"}, headers=JSON
    ).json()
    assert len(limited["results"]["bindings"]) == 7


def test_a_post_without_content_type_is_refused(kg: httpx.Client, supply_chain_ttl: str) -> None:
    """Defect 6: a POST with no Content-Type was read as a form: CLEAR NAMED ran."""
    kg.post("/api/v1/ontologies", json={"name": "sc", "content": supply_chain_ttl})
    for body in (b"update=CLEAR%20NAMED", b"query=ASK%20%7B%7D"):
        answer = kg.post(SPARQL, content=body, headers={"Content-Type": ""})
        assert answer.status_code == 400, answer.text
        assert "Content-Type" in answer.json()["error"]
    bare = httpx.Request("POST", str(kg.base_url) + SPARQL, content=b"CLEAR NAMED")
    assert "content-type" not in bare.headers
    assert kg.send(bare).status_code == 400
    assert kg.get("/api/v1/ontologies/sc/stats").json()["triples"] > 0
    utf16 = kg.post(
        SPARQL,
        content="ASK {}".encode("utf-16"),
        headers={"Content-Type": "application/sparql-query; charset=UTF-16"},
    )
    assert utf16.status_code == 400


def test_the_endpoint_url_is_the_base_iri(kg: httpx.Client) -> None:
    """Defect 7: CONSTRUCT { <s> <p> 1 } WHERE {} was a 400 (no base IRI)."""
    answer = kg.post(
        SPARQL,
        content=b"CONSTRUCT { <s> <p> 1 } WHERE {}",
        headers={"Content-Type": "application/sparql-query", "Accept": "application/n-triples"},
    )
    assert answer.status_code == 200, answer.text
    base = str(kg.base_url).rstrip("/") + "/api/v1/kg/"
    assert answer.text.strip().startswith(f"<{base}s> <{base}p> ")
    done = update(kg, "INSERT DATA { GRAPH <urn:b> { <urn:s> <urn:p> <rel> } }")
    assert done.status_code == 204, done.text
    assert ask(kg, f"ASK {{ <urn:s> <urn:p> <{base}rel> }}") is True


def test_the_catalog_follows_protocol_drop_and_clear(
    kg: httpx.Client, supply_chain_ttl: str
) -> None:
    """Defect 8: after a protocol DROP/CLEAR the catalog still showed the old count."""
    created = kg.post("/api/v1/ontologies", json={"name": "sc", "content": supply_chain_ttl})
    info = created.json()
    assert info["triples"] > 0
    kg.post("/api/v1/ontologies", json={"name": "other", "content": "<urn:a> <urn:b> <urn:c> ."})
    assert update(kg, f"DROP GRAPH <{info['graph_uri']}>").status_code == 204
    assert kg.get("/api/v1/ontologies/sc").json()["triples"] == 0
    assert kg.get("/api/v1/ontologies/sc/stats").json()["triples"] == 0
    assert kg.get("/api/v1/ontologies/other").json()["triples"] == 1
    assert (
        update(
            kg, "INSERT DATA { GRAPH <" + info["graph_uri"] + "> { <urn:x> <urn:y> <urn:z> } }"
        ).status_code
        == 204
    )
    assert kg.get("/api/v1/ontologies/sc").json()["triples"] == 1
    assert update(kg, "CLEAR ALL").status_code == 204
    listed = {o["id"]: o["triples"] for o in kg.get("/api/v1/ontologies").json()["ontologies"]}
    assert listed == {"other@1": 0, "sc@1": 0}


def test_an_empty_document_loads_zero_triples(kg: httpx.Client) -> None:
    """Defect 9: an empty RDF document was refused (422)."""
    empty = kg.post("/api/v1/ontologies", json={"name": "empty", "content": ""})
    assert empty.status_code == 201, empty.text
    assert empty.json()["triples"] == 0
    raw = kg.post(
        "/api/v1/ontologies",
        params={"name": "empty-raw"},
        content=b"",
        headers={"Content-Type": "text/turtle"},
    )
    assert raw.status_code == 201, raw.text
    assert raw.json()["triples"] == 0


def test_ontology_data_is_accepted_as_well_as_content(kg: httpx.Client) -> None:
    """Defect 12: the original platform's upload field is ontology_data."""
    answer = kg.post(
        "/api/v1/ontologies",
        json={"name": "od", "format": "ntriples", "ontology_data": "<urn:a> <urn:b> <urn:c> ."},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["triples"] == 1
    both = kg.post("/api/v1/ontologies", json={"name": "x", "content": "", "ontology_data": ""})
    assert both.status_code == 422 and "either" in both.json()["error"]
    neither = kg.post("/api/v1/ontologies", json={"name": "x"})
    assert neither.status_code == 422


def _preflight(client: httpx.Client, origin: str) -> httpx.Response:
    return client.options(
        SPARQL,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )


def test_cors_for_configured_origins_only(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    """Defect 10: no CORS, so YASGUI on another origin could not use the endpoint."""
    yasgui = "http://yasgui.example:8080"
    server = make_server(redis_url=redis_server.url, MIMIR_CORS_ORIGINS=yasgui).start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        allowed = _preflight(client, yasgui)
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == yasgui
        assert "POST" in allowed.headers["access-control-allow-methods"]
        answer = client.get(SPARQL, params={"query": "ASK {}"}, headers={"Origin": yasgui, **JSON})
        assert answer.headers["access-control-allow-origin"] == yasgui
        other = _preflight(client, "http://evil.example")
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
    server.stop()
    # Nothing is allowed by default.
    plain = make_server(redis_url=redis_server.url).start()
    with httpx.Client(base_url=plain.base_url, timeout=30) as client:
        answer = _preflight(client, yasgui)
        assert "access-control-allow-origin" not in answer.headers
        got = client.get(SPARQL, params={"query": "ASK {}"}, headers={"Origin": yasgui})
        assert "access-control-allow-origin" not in got.headers


def test_large_uploads_are_streamed_up_to_their_own_limit(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    """Defect 11: one version was capped by the 16 MiB body limit. Here the body limit is
    64 KiB and the upload limit 4 MiB: a 1.5 MiB raw document loads, JSON stays under
    the body limit, and so does every other route."""
    server = make_server(
        redis_url=redis_server.url,
        MIMIR_MAX_BODY_BYTES=str(64 * 1024),
        MIMIR_MAX_UPLOAD_BYTES=str(4 * 1024 * 1024),
    ).start()
    lines = "".join(f"<urn:s{i}> <urn:p> <urn:o{i}> .\n" for i in range(40_000)).encode()
    assert 1024 * 1024 < len(lines) < 4 * 1024 * 1024

    def chunks(data: bytes) -> Iterator[bytes]:  # chunked: no Content-Length
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        raw = client.post(
            "/api/v1/ontologies",
            params={"name": "big"},
            content=lines,
            headers={"Content-Type": "application/n-triples"},
        )
        assert raw.status_code == 201, raw.text
        assert raw.json()["triples"] == 40_000
        streamed = client.post(
            "/api/v1/ontologies",
            params={"name": "big", "version": "2"},
            content=chunks(lines),
            headers={"Content-Type": "application/n-triples"},
        )
        assert streamed.status_code == 201 and streamed.json()["triples"] == 40_000
        # Append to an existing version; a bad document leaves it as it was.
        more = "".join(f"<urn:t{i}> <urn:p> <urn:o{i}> .\n" for i in range(1000)).encode()
        appended = client.post(
            "/api/v1/ontologies",
            params={"name": "big", "version": "2", "append": "true"},
            content=more,
            headers={"Content-Type": "application/n-triples"},
        )
        assert appended.status_code == 201, appended.text
        assert appended.json()["triples"] == 41_000
        broken = client.post(
            "/api/v1/ontologies",
            params={"name": "big", "version": "2", "append": "true"},
            content=more + b"<urn:a> <urn:b> .\n",
            headers={"Content-Type": "application/n-triples"},
        )
        assert broken.status_code == 422 and broken.json()["detail"]["line"] == 1001
        assert client.get("/api/v1/ontologies/big@2/stats").json()["triples"] == 41_000
        missing = client.post(
            "/api/v1/ontologies",
            params={"name": "nothing", "append": "true"},
            content=more,
            headers={"Content-Type": "application/n-triples"},
        )
        assert missing.status_code == 404
        # Past the upload limit: 413, declared or chunked, and nothing kept.
        huge = lines * 3
        for body in (huge, chunks(huge)):
            refused = client.post(
                "/api/v1/ontologies",
                params={"name": "huge"},
                content=body,
                headers={"Content-Type": "application/n-triples"},
            )
            assert refused.status_code == 413, refused.text
            assert "MIMIR_MAX_UPLOAD_BYTES" in refused.json()["error"]
        assert client.get("/api/v1/ontologies/huge").status_code == 404
        # JSON uploads and every other route keep MIMIR_MAX_BODY_BYTES.
        as_json = client.post(
            "/api/v1/ontologies",
            json={"name": "j", "format": "ntriples", "content": lines.decode()},
        )
        assert as_json.status_code == 413 and "MIMIR_MAX_BODY_BYTES" in as_json.json()["error"]
        other = client.post(
            SPARQL, content=lines, headers={"Content-Type": "application/sparql-update"}
        )
        assert other.status_code == 413
        pipelines = client.post(
            "/api/v1/pipelines/validate",
            content=json.dumps({"yaml": "x" * 100_000}),
            headers={"Content-Type": "application/json"},
        )
        assert pipelines.status_code == 413


def test_a_raw_upload_takes_the_base_iri_of_its_relative_iris(kg: httpx.Client) -> None:
    """``base=`` on a raw-body upload: relative IRIs (``<>``, ``<x>``) resolve against it
    (the W3C query tests' data names its own document with ``rdf:resource=""``)."""
    created = kg.post(
        "/api/v1/ontologies",
        params={"name": "based", "base": "http://example.org/doc.ttl"},
        content=b"<> <urn:p> <other.ttl> .\n",
        headers={"Content-Type": "text/turtle"},
    )
    assert created.status_code == 201, created.text
    assert ask(kg, "ASK { <http://example.org/doc.ttl> <urn:p> <http://example.org/other.ttl> }")
    refused = kg.post(
        "/api/v1/ontologies",
        params={"name": "badbase", "base": "not an iri"},
        content=b"<> <urn:p> <x> .\n",
        headers={"Content-Type": "text/turtle"},
    )
    assert refused.status_code == 422, refused.text


def test_the_json_api_resolves_relative_iris_against_its_url(kg: httpx.Client) -> None:
    """Defect 7 on the JSON API: ``/kg/query`` and ``/kg/update`` had no base IRI either,
    so ``ASK { <s> <p> <o> }`` was a 400 there."""
    base = str(kg.base_url).rstrip("/") + "/api/v1/kg/"
    done = kg.post(
        "/api/v1/kg/update", json={"update": "INSERT DATA { GRAPH <urn:b> { <s> <p> <o> } }"}
    )
    assert done.status_code == 200, done.text
    answer = kg.post("/api/v1/kg/query", json={"query": "ASK { <s> <p> <o> }"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["boolean"] is True
    assert ask(kg, f"ASK {{ <{base}s> <{base}p> <{base}o> }}") is True


def test_dataset_parameters_must_be_iris(kg: httpx.Client) -> None:
    """A graph parameter that is not an IRI was passed on as it came: a using-graph-uri
    ending in ``> } ; DROP ALL ; …`` ran as part of the update's text."""
    assert update(kg, "INSERT DATA { GRAPH <urn:g> { <urn:s> <urn:p> 1 } }").status_code == 204
    for name in ("default-graph-uri", "named-graph-uri"):
        answer = kg.get(SPARQL, params={"query": "ASK {}", name: "not an iri"}, headers=JSON)
        assert answer.status_code == 400, answer.text
        assert name in answer.json()["error"] and "IRI" in answer.json()["error"]
    injected = (
        "urn:x> WHERE {} ; DROP ALL ; INSERT { GRAPH <urn:y> { <urn:a> <urn:b> 1 } } USING <urn:x"
    )
    for name in ("using-graph-uri", "using-named-graph-uri"):
        answer = update(
            kg, "INSERT { GRAPH <urn:o> { ?s ?p ?o } } WHERE { ?s ?p ?o }", **{name: injected}
        )
        assert answer.status_code == 400, answer.text
        assert name in answer.json()["error"]
    assert ask(kg, "ASK { GRAPH <urn:g> { <urn:s> <urn:p> 1 } }") is True
