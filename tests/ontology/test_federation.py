"""SPARQL ``SERVICE`` and ``LOAD`` (server-side request forgery, issue 16): off by default on
every path, allowed per host with ``MIMIR_SPARQL_FEDERATION=allowlist``.

A small SPARQL responder on 127.0.0.1 records every request it gets: with the default
settings it must get none, whatever the query or the path; allowed, Oxigraph (and
``oxigraph serve`` behind ``FUSEKI_URL``) really calls it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pyoxigraph as ox
import pytest
from pyparsing import ParseResults
from rdflib.plugins.sparql.parser import parseQuery, parseUpdate
from rdflib.plugins.sparql.parserutils import CompValue

from mimir.core.engine import execute_pipeline
from mimir.core.ontology import (
    FederationPolicy,
    FederationRefusedError,
    OntologyStore,
    close_ontology_stores,
    open_ontology_store,
)
from mimir.core.ontology import federation as fed
from mimir.core.ontology.catalog import OntologyCatalog
from mimir.core.ontology.federation import find_outbound
from mimir.core.ontology.triplestores import SparqlEndpointStore
from mimir.core.pipeline import load_pipeline
from mimir.core.settings import Settings
from tests.helpers import RedisServer, ServerProcess, wait_until
from tests.ontology.conftest import OxigraphServer

# -- a SPARQL endpoint and RDF document server that records what it is asked --------------


class Responder:
    """SPARQL JSON results for POST/GET, Turtle for paths ending in ``.ttl``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                requests.append((self.command, self.path))
                if self.path.endswith(".ttl"):
                    body = b"<http://ex/fetched> <http://ex/from> <http://ex/responder> .\n"
                    media = "text/turtle"
                else:
                    body = json.dumps(
                        {
                            "head": {"vars": ["x"]},
                            "results": {"bindings": [{"x": {"type": "literal", "value": "hi"}}]},
                        }
                    ).encode()
                    media = "application/sparql-results+json"
                self.send_response(200)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [path for _, path in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def responder() -> Iterator[Responder]:
    server = Responder()
    yield server
    server.stop()


# -- detection ----------------------------------------------------------------------------

# (name, text with {U} for the responder's URL, is an update, uses SERVICE/LOAD)
CASES: list[tuple[str, str, bool, bool]] = [
    ("plain", "SELECT * WHERE { ?a ?b ?c SERVICE <{U}/plain> { ?x ?p ?o } }", False, True),
    ("lower", "select * where { ?a ?b ?c service <{U}/lower> { ?x ?p ?o } }", False, True),
    ("mixed", "SELECT * WHERE { ?a ?b ?c SeRvIcE <{U}/mixed> { ?x ?p ?o } }", False, True),
    ("silent", "SELECT * WHERE { ?a ?b ?c SERVICE SILENT <{U}/silent> { ?x ?p ?o } }", False, True),
    ("variable", "SELECT * WHERE { BIND(<{U}/var> AS ?e) SERVICE ?e { ?x ?p ?o } }", False, True),
    ("no space", "SELECT * WHERE { ?a ?b ?c SERVICE<{U}/nospace>{?x ?p ?o} }", False, True),
    (
        "glued prefixed name",
        "PREFIX ex: <{U}/> SELECT * WHERE { ?a ?b ?c SERVICEex:glued {?x ?p ?o} }",
        False,
        True,
    ),
    (
        "glued silent",
        "SELECT * WHERE { ?a ?b ?c SERVICESILENT<{U}/gluedsilent> {?x ?p ?o} }",
        False,
        True,
    ),
    (
        "comment between",
        "SELECT * WHERE { ?a ?b ?c SERVICE # a comment\n <{U}/comment> { ?x ?p ?o } }",
        False,
        True,
    ),
    (
        "relative to BASE",
        "BASE <{U}/> SELECT * WHERE { ?a ?b ?c SERVICE <based> { ?x ?p ?o } }",
        False,
        True,
    ),
    (
        "escape inside the IRI",
        "SELECT * WHERE { ?a ?b ?c SERVICE <{U}\\u002fescaped> { ?x ?p ?o } }",
        False,
        True,
    ),
    (
        "after a dot",
        "SELECT * WHERE { ?a ?b ?c.SERVICE <{U}/dot> { ?x ?p ?o } }",
        False,
        True,
    ),
    (
        # Oxigraph reads ``<`` as "less than" here: the quote opens a string that hides
        # what an IRI-first lexer would take for code, and SERVICE is code.
        "less than, then a string",
        "SELECT * WHERE { ?a ?b ?c FILTER(?a<'> || \"' || true) "
        'SERVICE <{U}/lessthan> {?x ?p ?o} #" )\n}',
        False,
        True,
    ),
    (
        "less than, then a comment",
        "PREFIX ex: <{U}/> SELECT * WHERE { ?a ?b ?c FILTER(?a<1||true)SERVICEex:lt2#>\n"
        "{?x ?p ?o} }",
        False,
        True,
    ),
    (
        "silent off the front of a prefixed name",
        "PREFIX silentex: <urn:ok:> PREFIX ex: <{U}/> SELECT * WHERE "
        "{ ?a ?b ?c SERVICE silentex:glued2 {?x ?p ?o} }",
        False,
        True,
    ),
    (
        "in an update",
        "INSERT { ?x <http://ex/p> ?x } WHERE { ?a ?b ?c SERVICE <{U}/upd> { ?x ?p ?o } }",
        True,
        True,
    ),
    ("load", "LOAD <{U}/load.ttl>", True, True),
    ("load lower", "load <{U}/lower.ttl>", True, True),
    ("load silent into", "LOAD SILENT <{U}/into.ttl> INTO GRAPH <urn:g>", True, True),
    ("load glued", "LOADSILENT<{U}/glued.ttl>", True, True),
    ("load prefixed", "PREFIX ex: <{U}/> LOAD ex:prefixed.ttl", True, True),
    (
        "load second",
        'INSERT DATA { <urn:a> <urn:b> "LOAD <http://x/>" } ;\nLOAD <{U}/second.ttl>',
        True,
        True,
    ),
    # Not federated: the words in strings, IRIs, comments, names.
    ("literal", 'SELECT * WHERE { ?a ?b "SERVICE <{U}/lit> { ?x ?p ?o }" }', False, False),
    ("long literal", "SELECT * WHERE { ?a ?b '''x\nSERVICE <{U}/long> {}''' }", False, False),
    ("iri", "SELECT * WHERE { ?a <urn:service> ?c }", False, False),
    ("comment", "SELECT * WHERE { ?a ?b ?c # SERVICE <{U}/comment> { }\n}", False, False),
    ("variable named", "SELECT ?service WHERE { ?service ?p ?o }", False, False),
    (
        "prefixed names",
        "PREFIX service: <urn:s:> PREFIX ex: <urn:e:> SELECT * WHERE "
        "{ ?a service:x ex:service GRAPH service:g { ?s ex:load ?o } }",
        False,
        False,
    ),
    ("language tag", 'SELECT * WHERE { ?a ?b "x"@service }', False, False),
    (
        "load in data",
        'PREFIX load: <urn:l:> INSERT DATA { load:a load:b "LOAD <{U}/x.ttl>" }',
        True,
        False,
    ),
    (
        "owl IRIs in filters",
        "SELECT * WHERE { ?s a ?t FILTER(?t = <http://www.w3.org/2002/07/owl#Class> || "
        "?t<http://www.w3.org/2002/07/owl#Thing>) ?s <urn:service> ?o }",
        False,
        False,
    ),
]


def _fill(text: str, url: str) -> str:
    return text.replace("{U}", url)


@pytest.mark.parametrize(("name", "text", "update", "federated"), CASES, ids=[c[0] for c in CASES])
def test_detection(name: str, text: str, update: bool, federated: bool) -> None:
    hits = find_outbound(_fill(text, "http://127.0.0.1:9"), update=update)
    assert bool(hits) is federated, hits


def test_detection_agrees_with_oxigraph_itself(responder: Responder) -> None:
    """Every case runs in a real in-memory Oxigraph store, unchecked: whenever Oxigraph
    called the responder, the lexer had flagged the text (and the positives do call it)."""
    called: dict[str, bool] = {}
    for name, text, update, _ in CASES:
        sparql = _fill(text, responder.url)
        store = ox.Store()
        store.add(ox.Quad(ox.NamedNode("urn:a"), ox.NamedNode("urn:b"), ox.Literal("1")))
        before = len(responder.requests)
        try:
            if update:
                store.update(sparql)
            else:
                answer = store.query(sparql)
                if isinstance(answer, ox.QuerySolutions | ox.QueryTriples):
                    list(answer)
        except (SyntaxError, OSError, RuntimeError, ValueError):
            pass
        called[name] = len(responder.requests) > before
        if called[name]:
            assert find_outbound(sparql, update=update), f"{name}: Oxigraph called out, unflagged"
    # The engine really federates (so the cases test something); SERVICE ?var is the
    # one form Oxigraph evaluates without calling out (it needs the variable bound first).
    positives = {name for name, _, _, federated in CASES if federated}
    assert {name for name, was in called.items() if was} == positives - {"variable"}


def _rdflib_finds(text: str, update: bool) -> bool | None:
    """Whether rdflib's parse tree has a ServiceGraphPattern or Load (None: no parse)."""
    try:
        tree = parseUpdate(text) if update else parseQuery(text)
    except Exception:
        return None

    def walk(node: Any) -> bool:
        if isinstance(node, CompValue):
            if node.name in ("ServiceGraphPattern", "Load"):
                return True
            return any(walk(v) for v in node.values())
        if isinstance(node, list | tuple | ParseResults):
            return any(walk(v) for v in node)
        return False

    return walk(tree)


def test_detection_agrees_with_rdflibs_parser_where_it_parses() -> None:
    compared = 0
    for name, text, update, _ in CASES:
        sparql = _fill(text, "http://127.0.0.1:9")
        expected = _rdflib_finds(sparql, update)
        if expected is None:
            continue  # Oxigraph-only syntax (glued keywords, ...)
        compared += 1
        assert bool(find_outbound(sparql, update=update)) is expected, name
    assert compared >= 20


def test_targets_are_resolved() -> None:
    text = (
        "PREFIX ex: <http://a.example/> BASE <http://b.example/dir/> SELECT * WHERE { "
        "SERVICE ex:one {} SERVICE <two> {} SERVICE SILENT <http://c.example:81/> {} "
        "SERVICE ?v {} }"
    )
    found = {(h.keyword, h.iri) for h in find_outbound(text, update=False)}
    assert found == {
        ("SERVICE", "http://a.example/one"),
        ("SERVICE", "http://b.example/dir/two"),
        ("SERVICE", "http://c.example:81/"),
        ("SERVICE", None),
    }
    # A prefix declared twice is not resolved (parsers need not agree which one wins).
    twice = "PREFIX e: <http://ok/> PREFIX e: <http://evil/> SELECT * { SERVICE e:x {} }"
    assert [h.iri for h in find_outbound(twice, update=False)] == [None]
    # Oxigraph reads ``SERVICE silentex:x`` as ``SERVICE SILENT ex:x``: both are checked.
    silent = (
        "PREFIX silentex: <http://ok/> PREFIX ex: <http://evil/> "
        "SELECT * { SERVICE silentex:x {} SERVICE silent:y {} }"
    )
    assert {h.iri for h in find_outbound(silent, update=False)} == {
        "http://ok/x",
        "http://evil/x",
        None,  # ``silent:`` and ``:`` are not declared
    }
    # Jena reads \u escapes anywhere, keywords included.
    escaped = "SELECT * { SERVIC\\u0045 <http://evil/> { ?s ?p ?o } }"
    assert [h.iri for h in find_outbound(escaped, update=False)] == ["http://evil/"]
    assert find_outbound("SELECT * { <urn:\\UFFFFFFFF> <urn:service> ?o }", update=False) == []


def test_normal_queries_are_not_lexed(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(text: str) -> list[Any]:
        raise AssertionError("lexed")

    monkeypatch.setattr(fed, "_readings", boom)
    assert find_outbound("SELECT * WHERE { ?s ?p ?o } LIMIT 10", update=False) == []
    assert find_outbound("INSERT DATA { <urn:a> <urn:b> 1 }", update=True) == []
    # "load" matters in updates only.
    assert find_outbound("SELECT * WHERE { ?s <urn:load> ?o }", update=False) == []


def test_too_ambiguous_texts_are_refused() -> None:
    # Each ``?a<urn:x#n>`` in parentheses reads as an IRI or as "less than" + a comment.
    clauses = " ||\n".join(f"?a<urn:x#{n}>" for n in range(8))
    text = f"SELECT * WHERE {{ ?a ?b <urn:service> FILTER({clauses}\n) }}"
    hits = find_outbound(text, update=False)
    assert [h.iri for h in hits] == [None] and "ambiguous" in hits[0].reason


# -- policy -------------------------------------------------------------------------------


def _refusal(policy: FederationPolicy, text: str, update: bool = False) -> str | None:
    try:
        policy.check(text, update=update)
    except FederationRefusedError as exc:
        return str(exc)
    return None


def test_policy_off_and_allowlist() -> None:
    query = "SELECT * {{ SERVICE <{}> {{ ?s ?p ?o }} }}".format
    off = FederationPolicy()
    message = _refusal(off, query("http://127.0.0.1:1/"))
    assert message and "off" in message and "MIMIR_SPARQL_FEDERATION" in message
    allow = FederationPolicy(
        "allowlist", ("127.0.0.1", "Data.Example.org", "svc.example:8443", "10.0.0.0/8", "[::1]")
    )
    for ok in (
        "http://127.0.0.1:7/sparql",
        "https://data.example.org./q",
        "https://svc.example:8443/",
        "http://10.2.3.4/",
        "http://[::1]:9/",
    ):
        assert _refusal(allow, query(ok)) is None, ok
    for bad, why in (
        ("http://localhost:7/", "'localhost'"),
        ("https://svc.example/", "'svc.example'"),
        ("http://11.0.0.1/", "'11.0.0.1'"),
        ("http://evil.example@127.0.0.1/", "plain host"),
        ("http://127.0.0.1%2f@evil/", "plain host"),
        ("ftp://127.0.0.1/x", "http(s)"),
    ):
        message = _refusal(allow, query(bad))
        assert message and why in message, (bad, message)
    message = _refusal(allow, "SELECT * { SERVICE ?endpoint { ?s ?p ?o } }")
    assert message and "variable endpoint ?endpoint" in message
    assert _refusal(allow, "LOAD <http://127.0.0.1/x.ttl>", update=True) is None
    assert "'evil'" in (_refusal(allow, "LOAD <http://evil/x.ttl>", update=True) or "")
    with pytest.raises(ValueError):
        FederationPolicy("on")


def test_settings_give_the_policy() -> None:
    settings = Settings.from_env(
        {"MIMIR_SPARQL_FEDERATION": "allowlist", "MIMIR_SPARQL_ALLOW": "a.example, 10.0.0.0/8"}
    )
    assert FederationPolicy.from_settings(settings) == FederationPolicy(
        "allowlist", ("a.example", "10.0.0.0/8")
    )
    assert FederationPolicy.from_settings(Settings.from_env({})).mode == "off"


# -- the store, the FUSEKI_URL triple store and the plugins, in process ------------------------


def test_store_refuses_before_the_store_is_touched(tmp_path: Path, responder: Responder) -> None:
    seen: list[httpx.Request] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"head": {"vars": []}, "results": {"bindings": []}})

    triples = SparqlEndpointStore(
        "http://fuseki.invalid/ds", transport=httpx.MockTransport(endpoint)
    )
    store = OntologyStore(triples, OntologyCatalog(tmp_path / "catalog.sqlite3"))
    service = f"SELECT * WHERE {{ SERVICE <{responder.url}/s> {{ ?s ?p ?o }} }}"
    with pytest.raises(FederationRefusedError):
        store.query(service)
    with pytest.raises(FederationRefusedError):
        asyncio.run(store.run_query(service))
    with pytest.raises(FederationRefusedError):
        store.update(f"LOAD <{responder.url}/x.ttl>")
    assert seen == [] and responder.requests == []
    store.federation = FederationPolicy("allowlist", ("127.0.0.1",))
    store.query(service)
    # The endpoint is asked for its named graphs (the default graph is their union), then
    # the query: both go to the endpoint only.
    assert len(seen) == 2 and {r.url.host for r in seen} == {"fuseki.invalid"}
    store.close()


def _plugin_query(data_dir: Path, query: str) -> Any:
    pipeline = load_pipeline(
        {
            "name": "kg",
            "steps": [
                {"name": "q", "plugin": "Ontology.query", "output": "r", "config": {"query": query}}
            ],
        }
    )
    try:
        return asyncio.run(execute_pipeline(pipeline, {}, data_dir=data_dir))
    finally:
        close_ontology_stores()


def test_ontology_query_plugin(
    data_dir: Path, responder: Responder, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = f"SELECT ?x WHERE {{ SERVICE <{responder.url}/plugin> {{ ?x ?p ?o }} }}"
    result = _plugin_query(data_dir, query)
    dumped = json.dumps(result, default=str)
    assert "SERVICE" in dumped and "refused" in dumped, dumped
    assert responder.requests == []
    monkeypatch.setenv("MIMIR_SPARQL_FEDERATION", "allowlist")
    monkeypatch.setenv("MIMIR_SPARQL_ALLOW", "127.0.0.1")
    result = _plugin_query(data_dir, query)
    assert '"hi"' in json.dumps(result, default=str) or "'hi'" in str(result), result
    assert responder.paths() == ["/plugin"]


# -- over HTTP, on a real server process ---------------------------------------------------


def _sparql_requests(url: str, load: str) -> list[tuple[str, dict[str, Any]]]:
    """Every way a query or update reaches the server (label, httpx request arguments)."""
    service = f"SELECT ?x WHERE {{ SERVICE <{url}/q> {{ ?x ?p ?o }} }}"
    return [
        ("kg/query", {"method": "POST", "url": "/api/v1/kg/query", "json": {"query": service}}),
        (
            "kg/query lower silent",
            {
                "method": "POST",
                "url": "/api/v1/kg/query",
                "json": {"query": f"select * {{ service silent <{url}/q2> {{ ?x ?p ?o }} }}"},
            },
        ),
        (
            "kg/query variable",
            {
                "method": "POST",
                "url": "/api/v1/kg/query",
                "json": {"query": "SELECT * { SERVICE ?e { ?x ?p ?o } }"},
            },
        ),
        ("sparql GET", {"method": "GET", "url": "/api/v1/kg/sparql", "params": {"query": service}}),
        ("sparql POST form", {"method": "POST", "url": "/api/v1/kg/sparql",
                              "data": {"query": service}}),
        ("sparql POST query", {"method": "POST", "url": "/api/v1/kg/sparql", "content": service,
                               "headers": {"Content-Type": "application/sparql-query"}}),
        ("sparql POST form update", {"method": "POST", "url": "/api/v1/kg/sparql",
                                     "data": {"update": load}}),
        ("sparql POST update", {"method": "POST", "url": "/api/v1/kg/sparql", "content": load,
                                "headers": {"Content-Type": "application/sparql-update"}}),
        ("kg/update", {"method": "POST", "url": "/api/v1/kg/update", "json": {"update": load}}),
        (
            "kg/update with SERVICE",
            {
                "method": "POST",
                "url": "/api/v1/kg/update",
                "json": {
                    "update": "INSERT { ?x <urn:p> 1 } WHERE "
                    f"{{ SERVICE <{url}/u> {{ ?x ?p ?o }} }}"
                },
            },
        ),
    ]  # fmt: skip


def _fetched_triple_stored(client: httpx.Client) -> bool:
    answer = client.post(
        "/api/v1/kg/query",
        json={"query": "ASK { <http://ex/fetched> <http://ex/from> <http://ex/responder> }"},
    )
    assert answer.status_code == 200, answer.text
    return bool(answer.json()["boolean"])


def _assert_all_refused(server: ServerProcess, responder: Responder) -> None:
    load = f"LOAD <{responder.url}/load.ttl>"
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for label, request in _sparql_requests(responder.url, load):
            started = time.monotonic()
            answer = client.request(**request)
            elapsed = time.monotonic() - started
            assert answer.status_code == 403, (label, answer.status_code, answer.text)
            body = answer.json()
            assert set(body) >= {"error", "detail"}, body
            assert "refused" in body["error"], body
            assert body["detail"]["federation"] == "off"
            assert body["detail"]["refused"][0]["keyword"] in ("SERVICE", "LOAD")
            assert elapsed < 1.0, (label, elapsed)
        # A GET update is refused as a GET update; the words in a literal or IRI are fine.
        get_update = client.get("/api/v1/kg/sparql", params={"update": load})
        assert get_update.status_code == 405
        fine = client.post(
            "/api/v1/kg/query",
            json={"query": 'SELECT * { BIND("SERVICE <http://x/> {}" AS ?s) ?s ?p <urn:service> }'},
        )
        assert fine.status_code == 200, fine.text
        assert not _fetched_triple_stored(client)
    assert responder.requests == []


def test_off_by_default_on_every_path(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, responder: Responder
) -> None:
    server = make_server(redis_url=redis_server.url).start()
    _assert_all_refused(server, responder)
    # A pipeline's Ontology.query step, run by the server, is refused the same way.
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        answer = client.post(
            "/api/v1/pipelines/execute",
            json={
                "pipeline": {
                    "name": "ssrf",
                    "steps": [
                        {
                            "name": "q",
                            "plugin": "Ontology.query",
                            "config": {
                                "query": f"SELECT * {{ SERVICE <{responder.url}/p> {{ ?s ?p ?o }}}}"
                            },
                        }
                    ],
                },
                "context": {},
            },
        )
    assert "refused" in answer.text, answer.text
    assert responder.requests == []
    # Every refusal is logged, with the id of the request that asked for it.
    refused = httpx.post(
        f"{server.base_url}/api/v1/kg/query",
        json={"query": f"SELECT * {{ SERVICE <{responder.url}/p> {{ ?s ?p ?o }}}}"},
        headers={"X-Request-ID": "fed-42"},
        timeout=10,
    )
    assert refused.status_code == 403, refused.text
    wait_until(
        lambda: "(request fed-42)" in server.output(400), timeout=10, message="a refusal log line"
    )


def test_allowlisted_host_works_and_is_logged(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, responder: Responder
) -> None:
    server = make_server(
        redis_url=redis_server.url,
        MIMIR_SPARQL_FEDERATION="allowlist",
        MIMIR_SPARQL_ALLOW="127.0.0.1",
    ).start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        answer = client.get(
            "/api/v1/kg/sparql",
            params={"query": f"SELECT ?x {{ SERVICE <{responder.url}/ok> {{ ?x ?p ?o }} }}"},
            headers={"Accept": "application/sparql-results+json", "X-Request-Id": "fed-test-1"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"]["bindings"] == [{"x": {"type": "literal", "value": "hi"}}]
        assert responder.paths() == ["/ok"]
        loaded = client.post(
            "/api/v1/kg/update",
            json={"update": f"LOAD <{responder.url}/data.ttl> INTO GRAPH <urn:fetched>"},
        )
        assert loaded.status_code == 200, loaded.text
        assert responder.paths() == ["/ok", "/data.ttl"]
        assert _fetched_triple_stored(client)
        # Another host, even the same machine by another name, is not allowed.
        other = f"http://localhost:{responder.port}"
        for request in _sparql_requests(other, f"LOAD <{other}/no.ttl>"):
            answer = client.request(**request[1])
            assert answer.status_code == 403, (request[0], answer.text)
            assert "'localhost'" in answer.text or "variable endpoint" in answer.text, answer.text
        assert responder.paths() == ["/ok", "/data.ttl"]
    wait_until(
        lambda: (
            "host 127.0.0.1 allowed" in server.output(400)
            and "request fed-test-1" in server.output(400)
        ),
        timeout=10,
        message="the allowed call's log line with its request id",
    )


def test_fuseki_url_path(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    responder: Responder,
    oxigraph_server: OxigraphServer,
) -> None:
    """Behind ``FUSEKI_URL`` (``oxigraph serve``, which does federate) the same policy holds:
    nothing is forwarded unless allowed."""
    server = make_server(redis_url=redis_server.url, FUSEKI_URL=oxigraph_server.url).start()
    _assert_all_refused(server, responder)
    server.stop()
    allowed = make_server(
        redis_url=redis_server.url,
        FUSEKI_URL=oxigraph_server.url,
        MIMIR_SPARQL_FEDERATION="allowlist",
        MIMIR_SPARQL_ALLOW=f"127.0.0.1:{responder.port}",
    ).start()
    with httpx.Client(base_url=allowed.base_url, timeout=30) as client:
        answer = client.post(
            "/api/v1/kg/query",
            json={"query": f"SELECT ?x {{ SERVICE <{responder.url}/via-fuseki> {{ ?x ?p ?o }} }}"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"]["bindings"][0]["x"]["value"] == "hi"
    assert responder.paths() == ["/via-fuseki"]


def test_store_opened_with_settings_carries_the_policy(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = open_ontology_store(settings)
    try:
        assert store.federation == FederationPolicy()
        allowed = settings.with_(sparql_federation="allowlist", sparql_allow=("127.0.0.1",))
        assert open_ontology_store(allowed).federation.mode == "allowlist"
    finally:
        close_ontology_stores()
