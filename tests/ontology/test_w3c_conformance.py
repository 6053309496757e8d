"""The W3C SPARQL 1.1 Protocol tests (``tests/data/w3c-rdf-tests``, vendored from
w3c/rdf-tests with its license) against a real server: built-in store and ``FUSEKI_URL``
(``oxigraph serve``). Each test starts from an empty store holding its ``ut:graphData``."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
import rdflib
from rdflib.namespace import RDF, RDFS

SUITE = Path(__file__).resolve().parents[1] / "data" / "w3c-rdf-tests" / "sparql" / "sparql11"
MF = rdflib.Namespace("http://www.w3.org/2001/sw/DataAccess/tests/test-manifest#")
HT = rdflib.Namespace("http://www.w3.org/2011/http#")
CNT = rdflib.Namespace("http://www.w3.org/2011/content#")
UT = rdflib.Namespace("http://www.w3.org/2009/sparql/tests/test-update#")
HTS = "http://www.w3.org/2011/http-statusCodes#StatusCode"
ENDPOINT = "/api/v1/kg/sparql"


def _items(graph: rdflib.Graph, head: rdflib.term.Node) -> list[rdflib.term.Node]:
    return list(rdflib.collection.Collection(graph, head))


def protocol_tests() -> list[tuple[str, rdflib.Graph, rdflib.term.Node]]:
    manifest = SUITE / "protocol" / "manifest.ttl"
    graph = rdflib.Graph().parse(manifest, format="turtle", publicID=manifest.as_uri())
    root = next(graph.subjects(RDF.type, MF.Manifest))
    entries = _items(graph, graph.value(root, MF.entries))
    return [(str(graph.value(t, MF.name)), graph, t) for t in entries]


TESTS = protocol_tests()


def _load(client: httpx.Client, graph: rdflib.Graph, test: rdflib.term.Node) -> None:
    parts = ["DROP SILENT ALL"]
    for data in graph.objects(test, UT.graphData):
        source = Path(str(graph.value(data, UT.graph)).removeprefix("file://"))
        name = str(graph.value(data, RDFS.label))
        parts.append(f"INSERT DATA {{ GRAPH <{name}> {{ {source.read_text()} }} }}")
    answer = client.post(
        ENDPOINT,
        content=" ;\n".join(parts).encode(),
        headers={"Content-Type": "application/sparql-update"},
    )
    assert answer.status_code == 204, answer.text


def _boolean(response: httpx.Response) -> bool | None:
    media = response.headers.get("content-type", "")
    if "json" in media:
        return json.loads(response.content).get("boolean")
    if "xml" in media:
        root = ElementTree.fromstring(response.content)
        found = root.find("{http://www.w3.org/2005/sparql-results#}boolean")
        return None if found is None else found.text == "true"
    return None


@pytest.mark.parametrize("name,graph,test", TESTS, ids=[t[0] for t in TESTS])
def test_sparql11_protocol(
    endpoint: httpx.Client, name: str, graph: rdflib.Graph, test: rdflib.term.Node
) -> None:
    _load(endpoint, graph, test)
    action = graph.value(test, MF.action)
    for request in _items(graph, graph.value(action, HT.requests)):
        path = str(graph.value(request, HT.absolutePath)).replace("/sparql/", ENDPOINT, 1)
        method = str(graph.value(request, HT.methodName))
        body = graph.value(request, HT.body)
        content = str(graph.value(body, CNT.chars)).encode() if body is not None else None
        headers: dict[str, str] = {}
        headers_node = graph.value(request, HT.headers)
        for header in _items(graph, headers_node) if headers_node is not None else []:
            field = str(graph.value(header, HT.fieldName)).lower()
            headers[field] = str(graph.value(header, HT.fieldValue))
        if headers.get("content-type", "").lower().endswith("utf-16") and content is not None:
            content = content.decode().encode("utf-16")
        built = endpoint.build_request(method, path, content=content, headers=headers)
        if "content-type" not in headers:  # the tests of a missing type send none
            built.headers.pop("content-type", None)
        response = endpoint.send(built)
        expected = graph.value(request, HT.resp)
        statuses = {str(s).removeprefix(HTS) for s in graph.objects(expected, MF.expectedStatus)}
        klass = f"{response.status_code // 100}xx"
        assert klass in statuses, f"{name}: {response.status_code} {response.text[:300]}"
        form = graph.value(expected, MF.expectedFormat)
        media = response.headers.get("content-type", "").split(";")[0]
        if form is not None and str(form) == "RDF":
            assert media in (
                "text/turtle",
                "application/n-triples",
                "application/rdf+xml",
                "application/ld+json",
            ), media
        elif form is not None:
            assert media.startswith(
                ("application/sparql-results", "text/csv", "text/tab-separated-values")
            ), media
        want = graph.value(expected, MF.expectedBoolean)
        if want is not None:
            assert _boolean(response) is want.toPython(), f"{name}: {response.text[:300]}"
