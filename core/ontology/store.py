"""The ontology store: one named graph per ontology version, plus SPARQL over all of them.

Graph IRIs are ``<base>/ontology/<name>/<version>``. Methods are synchronous (they do disk
or network I/O); async callers go through :meth:`OntologyStore.run_query` and friends,
which run them in a thread and hold them to a time limit.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pyoxigraph as ox
from pydantic import BaseModel, Field

from mimir.core.ontology.catalog import OntologyCatalog, OntologyInfo
from mimir.core.ontology.dataset import (
    DEFAULT_GRAPH,
    Dataset,
    add_using,
    declares_dataset,
    to_default_graph,
)
from mimir.core.ontology.errors import (
    OntologyError,
    OntologyExistsError,
    OntologyNotFoundError,
    QueryTimeoutError,
    RdfParseError,
    SparqlError,
)
from mimir.core.ontology.federation import FederationPolicy
from mimir.core.ontology.formats import (
    parse_triples,
    resolve_format,
    serialize_triples,
)
from mimir.core.ontology.results import QueryResult
from mimir.core.ontology.triplestores import (
    Chooser,
    OxigraphStore,
    SparqlEndpointStore,
    TripleStore,
)
from mimir.core.settings import Settings
from mimir.core.tls import api_verify

__all__ = [
    "DEFAULT_BASE",
    "DEFAULT_ROW_LIMIT",
    "DEFAULT_TIMEOUT",
    "MAX_CONCURRENT_QUERIES",
    "OntologyStats",
    "OntologyStore",
    "Subgraph",
    "close_ontology_stores",
    "open_ontology_store",
    "open_ontology_store_via_api",
]

logger = logging.getLogger(__name__)

#: Base of the graph IRIs (``<base>/ontology/<name>/<version>``).
DEFAULT_BASE = "http://mimir-aip.local"
#: Time limit of a query unless the caller gives one (seconds).
DEFAULT_TIMEOUT = 30.0
#: Rows a query answers at most unless the caller gives a limit.
DEFAULT_ROW_LIMIT = 10_000
#: Queries evaluated at once by one store (see ``OntologyStore.run_query``).
MAX_CONCURRENT_QUERIES = 4

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

_PREFIXES = """PREFIX rdf: <http://www.w3.org/1999/02/22-rdf-syntax-ns#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX owl: <http://www.w3.org/2002/07/owl#>
"""
_PROPERTY_TYPES = (
    "rdf:Property, owl:ObjectProperty, owl:DatatypeProperty, owl:AnnotationProperty, "
    "owl:FunctionalProperty, owl:InverseFunctionalProperty, owl:TransitiveProperty, "
    "owl:SymmetricProperty"
)
_STATS_QUERY = (
    _PREFIXES
    + f"""SELECT ?triples ?classes ?properties ?individuals WHERE {{
  {{ SELECT (COUNT(*) AS ?triples) WHERE {{ ?s ?p ?o }} }}
  {{ SELECT (COUNT(DISTINCT ?c) AS ?classes) WHERE {{
       ?c a ?ct FILTER(?ct IN (owl:Class, rdfs:Class)) }} }}
  {{ SELECT (COUNT(DISTINCT ?q) AS ?properties) WHERE {{
       ?q a ?qt FILTER(?qt IN ({_PROPERTY_TYPES})) }} }}
  {{ SELECT (COUNT(DISTINCT ?i) AS ?individuals) WHERE {{
       ?i a ?it FILTER(isIRI(?i) && ?it NOT IN (owl:Class, rdfs:Class, owl:Ontology,
         owl:Restriction, rdfs:Datatype, owl:AllDisjointClasses, {_PROPERTY_TYPES})) }} }}
}}"""
)
# An update's first keyword after its prologue (PREFIX/BASE declarations and comments).
_UPDATE_RE = re.compile(
    r"^(?:\s|#[^\n]*\n|(?:PREFIX\s+[^\s:]*:\s*<[^>]*>)|(?:BASE\s*<[^>]*>))*"
    r"(INSERT|DELETE|LOAD|CLEAR|DROP|CREATE|ADD|MOVE|COPY|WITH)\b",
    re.IGNORECASE,
)
_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"


class OntologyStats(BaseModel):
    """Counts of one ontology version's graph."""

    id: str
    triples: int
    classes: int
    properties: int
    individuals: int


class Subgraph(BaseModel):
    """Nodes and edges around a root, for a graph view."""

    root: str
    depth: int
    nodes: list[dict[str, Any]] = Field(default_factory=list)
    edges: list[dict[str, Any]] = Field(default_factory=list)
    #: ``max_nodes`` cut the walk short.
    truncated: bool = False


def _local_name(iri: str) -> str:
    return re.split(r"[#/:]", iri.rstrip("/#"))[-1] or iri


class OntologyStore:
    """Ontology versions in a triple store, described by a catalog."""

    def __init__(
        self,
        triples: TripleStore,
        catalog: OntologyCatalog,
        base: str = DEFAULT_BASE,
        *,
        federation: FederationPolicy | None = None,
    ) -> None:
        self.triples = triples
        self.catalog = catalog
        self.base = base.rstrip("/")
        #: Whether queries and updates may use SERVICE and LOAD (off unless configured).
        self.federation = federation or FederationPolicy()
        # Query threads running at once. A thread outlives a timed-out query that is still
        # computing its first row (Oxigraph cannot be interrupted there), so this bound
        # keeps runaway queries from taking every core; a slot frees when its thread ends.
        self._query_slots = threading.BoundedSemaphore(MAX_CONCURRENT_QUERIES)

    # -- ontologies ----------------------------------------------------------------

    def graph_uri(self, name: str, version: str) -> str:
        """The named graph of ``name`` at ``version``."""
        return f"{self.base}/ontology/{name}/{version}"

    def upload(
        self,
        name: str,
        content: bytes | str,
        *,
        version: str = "1",
        fmt: str | None = "turtle",
        description: str = "",
        replace: bool = False,
    ) -> OntologyInfo:
        """Parse ``content`` (Turtle, RDF/XML, N-Triples or JSON-LD) into the graph of
        ``name@version``; :class:`RdfParseError` names the line of a syntax error."""
        for what, value in (("name", name), ("version", version)):
            if not _NAME_RE.fullmatch(value or ""):
                raise OntologyError(
                    f"ontology {what} {value!r} must be 1-128 letters, digits, '_', '.' or '-'"
                )
        info = resolve_format(fmt)
        graph = self.graph_uri(name, version)
        ontology_id = f"{name}@{version}"
        existing = self.catalog.get(ontology_id)
        if existing is not None and not replace:
            self.catalog.add(  # raises the "exists" error with its message
                ontology_id=ontology_id,
                name=name,
                version=version,
                graph_uri=graph,
                fmt=info.name,
                description=description,
                triples=0,
                replace=False,
            )
        # A graph is a set: a document may repeat a triple, the count must not.
        triples = list(dict.fromkeys(parse_triples(content, info, base_iri=graph + "/")))
        self.triples.put_graph(graph, triples)
        return self.catalog.add(
            ontology_id=ontology_id,
            name=name,
            version=version,
            graph_uri=graph,
            fmt=info.name,
            description=description,
            triples=len(triples),
            replace=replace,
        )

    def upload_stream(
        self,
        name: str,
        source: Any,
        *,
        version: str = "1",
        fmt: str | None = "turtle",
        description: str = "",
        replace: bool = False,
        append: bool = False,
        base_iri: str | None = None,
    ) -> OntologyInfo:
        """Like :meth:`upload`, reading the document from ``source`` as it comes (a large
        document is never held in memory), or with ``append`` adding its triples to the
        existing version ``name@version``. Relative IRIs resolve against ``base_iri``
        (default: the version's graph URI + ``/``). The document goes to a staging graph first
        unless the version is new, so a syntax error leaves the version as it was."""
        for what, value in (("name", name), ("version", version)):
            if not _NAME_RE.fullmatch(value or ""):
                raise OntologyError(
                    f"ontology {what} {value!r} must be 1-128 letters, digits, '_', '.' or '-'"
                )
        info = resolve_format(fmt)
        graph = self.graph_uri(name, version)
        ontology_id = f"{name}@{version}"
        existing = self.catalog.get(ontology_id)
        if append and existing is None:
            raise OntologyNotFoundError(f"no ontology {ontology_id!r} to append to")
        if existing is not None and not (replace or append):
            raise OntologyExistsError(
                f"ontology {name!r} version {version!r} exists (upload with replace=true, "
                "append=true, or choose another version)"
            )
        target = graph if existing is None else f"urn:x-mimir:staging:{uuid.uuid4().hex}"
        try:
            self.triples.load(target, source, info.oxigraph, base_iri=base_iri or graph + "/")
        except SyntaxError as exc:
            self.triples.drop_graph(target)
            line, column = (exc.lineno, exc.offset) if exc.lineno else (None, None)
            where = f" at line {line}" + (f", column {column}" if column else "") if line else ""
            message = str(exc.msg if hasattr(exc, "msg") else exc)
            raise RdfParseError(f"invalid {info.name}{where}: {message}", line, column) from None
        except (ValueError, OSError) as exc:
            self.triples.drop_graph(target)
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, OntologyError):
                raise type(cause)(str(cause)) from None
            raise RdfParseError(f"invalid {info.name}: {exc}") from None
        except BaseException:
            self.triples.drop_graph(target)
            raise
        if target != graph:
            self.triples.move_graph(target, graph, replace=not append)
        count = self._count_triples([graph]).get(graph, 0)
        return self.catalog.add(
            ontology_id=ontology_id,
            name=name,
            version=version,
            graph_uri=graph,
            fmt=existing.format if append and existing else info.name,
            description=description or (existing.description if existing else ""),
            triples=count,
            replace=True,
        )

    def _count_triples(self, graphs: Sequence[str]) -> dict[str, int]:
        """Triples in each of ``graphs`` (absent or empty graphs count 0)."""
        counts: dict[str, int] = dict.fromkeys(graphs, 0)
        for start in range(0, len(graphs), 200):
            chunk = list(graphs[start : start + 200])
            values = " ".join(str(ox.NamedNode(g)) for g in chunk)
            result = self.triples.query(
                f"SELECT ?g (COUNT(*) AS ?n) WHERE {{ VALUES ?g {{ {values} }} "
                "GRAPH ?g { ?s ?p ?o } } GROUP BY ?g",
                default_graphs=[],
                named_graphs=chunk,
                row_limit=len(chunk) + 1,
                timeout=DEFAULT_TIMEOUT * 10,
            )
            for row in result.rows:
                counts[row["g"]["value"]] = int(row["n"]["value"])
        return counts

    def sync_catalog(self) -> None:
        """Bring each catalog entry's triple count back to its graph's (after updates,
        which may DROP, CLEAR or change any graph)."""
        entries = self.catalog.list()
        if not entries:
            return
        counts = self._count_triples([e.graph_uri for e in entries])
        for entry in entries:
            live = counts.get(entry.graph_uri, 0)
            if live != entry.triples:
                self.catalog.touch(entry.id, live)

    def list(self) -> list[OntologyInfo]:
        """Every ontology version."""
        return self.catalog.list()

    def get(self, ontology_id: str) -> OntologyInfo:
        """The version ``name@version`` (or the newest of ``name``)."""
        found = self.catalog.get(ontology_id)
        if found is None:
            raise OntologyNotFoundError(f"no ontology {ontology_id!r}")
        return found

    def delete(self, ontology_id: str) -> OntologyInfo:
        """Drop a version's graph and forget it."""
        info = self.get(ontology_id)
        self.triples.drop_graph(info.graph_uri)
        self.catalog.remove(info.id)
        return info

    def stats(self, ontology_id: str) -> OntologyStats:
        """Triples, classes, properties and individuals in a version's graph."""
        info = self.get(ontology_id)
        result = self.triples.query(
            _STATS_QUERY, default_graphs=[info.graph_uri], row_limit=1, timeout=DEFAULT_TIMEOUT
        )
        row = result.rows[0] if result.rows else {}
        counts = {k: int(row[k]["value"]) if k in row else 0 for k in result.variables}
        return OntologyStats(id=info.id, **counts)

    def export(self, ontology_id: str, fmt: str | None = "turtle") -> tuple[bytes, str]:
        """A version's graph as a document in ``fmt``; answers the bytes and media type."""
        info = self.get(ontology_id)
        target = resolve_format(fmt)
        return serialize_triples(
            self.triples.graph_triples(info.graph_uri), target
        ), target.media_type

    def add_triples(self, ontology_id: str, triples: Sequence[ox.Triple]) -> int:
        """Add triples to a version's graph (``Ontology.load``); answers how many."""
        info = self.get(ontology_id)
        self.triples.add_triples(info.graph_uri, triples)
        self.catalog.touch(info.id, self._count_triples([info.graph_uri])[info.graph_uri])
        return len(triples)

    # -- SPARQL ---------------------------------------------------------------------

    def _default_graphs(
        self, ontology: str | None, given: Sequence[str] | None
    ) -> builtins.list[str] | None:
        """The default graph of a view (subgraph): one ontology's, the given, or all."""
        return self._dataset("", ontology, Dataset(tuple(given)) if given else None)[0]

    def _dataset(
        self, sparql: str, ontology: str | None, dataset: Dataset | None
    ) -> tuple[builtins.list[str] | None, builtins.list[str] | None]:
        """Default and named graphs of a query (see :mod:`mimir.core.ontology.dataset`):
        ``ontology``'s graph; else the dataset the protocol gave (an absent half is
        empty); else the text's ``FROM``; else every named graph, both ways."""
        if ontology:
            graph = self.get(ontology).graph_uri
            return [graph], [graph]
        if dataset is not None and dataset.given:
            return list(dataset.default or ()), list(dataset.named or ())
        if sparql and declares_dataset(sparql, update=False):
            return None, None
        every = self.triples.named_graphs()
        return every, every

    def query(
        self,
        sparql: str,
        *,
        ontology: str | None = None,
        default_graphs: Sequence[str] | None = None,
        dataset: Dataset | None = None,
        row_limit: int = DEFAULT_ROW_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
        base_iri: str | None = None,
    ) -> QueryResult:
        """Run a read-only query (SELECT, ASK, CONSTRUCT, DESCRIBE) over ``ontology``'s
        graph, the ``default_graphs`` (or ``dataset``) given, or every graph. A ``SERVICE``
        the federation policy does not allow raises :class:`FederationRefusedError`
        before anything runs."""
        self.check_query(sparql)
        return self._query(
            sparql,
            ontology=ontology,
            default_graphs=default_graphs,
            dataset=dataset,
            row_limit=row_limit,
            timeout=timeout,
            base_iri=base_iri,
        )

    def check_query(self, sparql: str) -> None:
        """Refuse (:class:`SparqlError`) an empty query, an update, or a ``SERVICE`` that
        the federation policy does not allow."""
        if not sparql or not sparql.strip():
            raise SparqlError("the query is empty")
        if _UPDATE_RE.match(sparql):
            raise SparqlError(
                "this is a SPARQL update; queries here are read-only (send updates to "
                "POST /api/v1/kg/update or as update= to the SPARQL endpoint)"
            )
        self.federation.check(sparql, update=False)

    def _query(
        self,
        sparql: str,
        *,
        ontology: str | None = None,
        default_graphs: Sequence[str] | None = None,
        dataset: Dataset | None = None,
        row_limit: int = DEFAULT_ROW_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
        base_iri: str | None = None,
    ) -> QueryResult:
        if default_graphs:
            dataset = Dataset(default=tuple(default_graphs))
        default, named = self._dataset(sparql, ontology, dataset)
        return self.triples.query(
            sparql,
            default_graphs=default,
            named_graphs=named,
            row_limit=max(1, row_limit),
            timeout=timeout,
            base_iri=base_iri,
        )

    def update(
        self,
        sparql: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        using: Dataset | None = None,
        base_iri: str | None = None,
    ) -> None:
        """Run a SPARQL 1.1 update (``SERVICE``/``LOAD`` only as the federation policy
        allows). ``using`` is the protocol's ``using-graph-uri``/``using-named-graph-uri``
        (refused with an update that has ``USING`` or ``WITH``); without it the ``WHERE``
        of each ``DELETE/INSERT`` sees every named graph, and what it writes without naming
        a graph goes to :data:`~.dataset.DEFAULT_GRAPH` (:mod:`~.dataset`). The catalog's
        triple counts follow."""
        if not sparql or not sparql.strip():
            raise SparqlError("the update is empty")
        self.federation.check(sparql, update=True)
        if using is not None and using.given:
            if declares_dataset(sparql, update=True):
                raise SparqlError(
                    "using-graph-uri/using-named-graph-uri cannot be combined with an update "
                    "that has USING or WITH"
                )
            text = add_using(sparql, using.default or (), using.named or ())
        elif "where" in sparql.lower():
            every = self.triples.named_graphs()
            text = add_using(sparql, every, every)
        else:
            text = sparql
        try:
            self.triples.update(to_default_graph(text), timeout=timeout, base_iri=base_iri)
        finally:
            self.sync_catalog()

    async def run_query(
        self, sparql: str, *, timeout: float = DEFAULT_TIMEOUT, **kw: Any
    ) -> QueryResult:
        """:meth:`query` in a thread, answered within ``timeout`` seconds (a query still
        computing its first row then goes on in its thread; its answer is dropped). At most
        :data:`MAX_CONCURRENT_QUERIES` run at once; others wait for a slot within their
        time limit."""
        started = time.monotonic()

        def bounded() -> QueryResult:
            self.check_query(sparql)  # a refusal answers at once, without waiting for a slot
            if not self._query_slots.acquire(timeout=timeout):
                raise QueryTimeoutError(
                    f"no query slot freed within the time limit of {timeout:g} s "
                    f"({MAX_CONCURRENT_QUERIES} queries are running)"
                )
            try:
                remaining = max(0.001, timeout - (time.monotonic() - started))
                return self._query(sparql, timeout=remaining, **kw)
            finally:
                self._query_slots.release()

        try:
            return await asyncio.wait_for(asyncio.to_thread(bounded), timeout + 0.5)
        except TimeoutError:
            raise QueryTimeoutError(f"query exceeded its time limit of {timeout:g} s") from None

    async def run_update(self, sparql: str, *, timeout: float = DEFAULT_TIMEOUT, **kw: Any) -> None:
        """:meth:`update` in a thread."""
        await asyncio.to_thread(self.update, sparql, timeout=timeout, **kw)

    async def stream_query(
        self,
        sparql: str,
        *,
        choose: Chooser,
        dataset: Dataset | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        base_iri: str | None = None,
    ) -> tuple[str, AsyncIterator[bytes]]:
        """The whole result of a query, streamed: its media type and its bytes in the
        format ``choose`` picks. The time limit covers the whole answer: past it, an
        answer not begun is a :class:`QueryTimeoutError`, one begun is cut off (the client
        sees an incomplete body, never a silently short one). Errors raised before the
        first 64 KiB are errors of the call."""
        self.check_query(sparql)
        started = time.monotonic()
        sink = _StreamSink(started + timeout, timeout)

        def produce() -> None:
            try:
                if not self._query_slots.acquire(timeout=timeout):
                    raise QueryTimeoutError(
                        f"no query slot freed within the time limit of {timeout:g} s "
                        f"({MAX_CONCURRENT_QUERIES} queries are running)"
                    )
                try:
                    default, named = self._dataset(sparql, None, dataset)
                    self.triples.stream_query(
                        sparql,
                        default_graphs=default,
                        named_graphs=named,
                        choose=choose,
                        sink=sink,
                        timeout=timeout,
                        base_iri=base_iri,
                    )
                finally:
                    self._query_slots.release()
            except BaseException as exc:  # handed to the request
                sink.fail(sink.error or exc)
            else:
                sink.finish()

        threading.Thread(target=produce, name="sparql-stream", daemon=True).start()
        try:
            first = await asyncio.to_thread(sink.get)
        except BaseException:
            sink.cancelled.set()
            raise
        if first[0] == "error":
            raise first[1]

        async def body() -> AsyncIterator[bytes]:
            item = first
            try:
                while True:
                    if item[0] == "data":
                        yield item[1]
                    elif item[0] == "end":
                        return
                    else:
                        logger.warning("SPARQL answer cut off: %s", item[1])
                        raise item[1]
                    item = await asyncio.to_thread(sink.get)
            finally:
                sink.cancelled.set()

        return sink.media or "application/octet-stream", body()

    # -- graph view -----------------------------------------------------------------

    def subgraph(
        self,
        root_uri: str,
        depth: int = 1,
        *,
        ontology: str | None = None,
        max_nodes: int = 500,
    ) -> Subgraph:
        """Nodes and edges reachable from ``root_uri`` in ``depth`` hops (either direction).

        Literal values become node ``properties``; IRIs and blank nodes become nodes.
        """
        if not root_uri or any(c in root_uri for c in '<> "{}|\\^`'):
            raise SparqlError(f"root_uri {root_uri!r} is not an IRI")
        depth = max(0, min(depth, 5))
        graphs = self._default_graphs(ontology, None)
        nodes: dict[str, dict[str, Any]] = {root_uri: {"id": root_uri, "kind": "uri"}}
        edges: dict[tuple[str, str, str], dict[str, Any]] = {}
        frontier = [root_uri]
        truncated = False
        for _ in range(depth):
            if not frontier:
                break
            values = " ".join(f"<{n}>" for n in frontier)
            result = self.triples.query(
                f"SELECT ?s ?p ?o WHERE {{ VALUES ?n {{ {values} }} "
                "{ ?n ?p ?o BIND(?n AS ?s) } UNION { ?s ?p ?n BIND(?n AS ?o) } }",
                default_graphs=graphs,
                row_limit=max_nodes * 20,
                timeout=DEFAULT_TIMEOUT,
            )
            next_frontier: list[str] = []
            for row in result.rows:
                s, p, o = row["s"], row["p"]["value"], row["o"]
                if o["type"] == "literal":
                    node = nodes.get(s["value"])
                    if node is not None:
                        node.setdefault("properties", {})[_local_name(p)] = o["value"]
                    continue
                for term in (s, o):
                    key = term["value"]
                    if key not in nodes:
                        if len(nodes) >= max_nodes:
                            truncated = True
                            break
                        nodes[key] = {"id": key, "kind": term["type"]}
                        if term["type"] == "uri":
                            next_frontier.append(key)
                else:
                    edge = (s["value"], p, o["value"])
                    edges.setdefault(
                        edge,
                        {
                            "source": edge[0],
                            "target": edge[2],
                            "predicate": p,
                            "label": _local_name(p),
                        },
                    )
            frontier = next_frontier
        self._label_nodes(nodes, graphs)
        return Subgraph(
            root=root_uri,
            depth=depth,
            nodes=list(nodes.values()),
            edges=list(edges.values()),
            truncated=truncated,
        )

    def _label_nodes(
        self, nodes: dict[str, dict[str, Any]], graphs: builtins.list[str] | None
    ) -> None:
        iris = [n for n, v in nodes.items() if v["kind"] == "uri"]
        for node in nodes.values():
            node["label"] = _local_name(node["id"])
            node.setdefault("types", [])
        for start in range(0, len(iris), 200):
            values = " ".join(f"<{n}>" for n in iris[start : start + 200])
            result = self.triples.query(
                f"SELECT ?n ?p ?v WHERE {{ VALUES ?n {{ {values} }} "
                f"VALUES ?p {{ <{_LABEL}> <{_TYPE}> }} ?n ?p ?v }}",
                default_graphs=graphs,
                row_limit=100_000,
                timeout=DEFAULT_TIMEOUT,
            )
            for row in result.rows:
                node = nodes[row["n"]["value"]]
                if row["p"]["value"] == _LABEL:
                    node["label"] = row["v"]["value"]
                elif row["v"]["value"] not in node["types"]:
                    node["types"].append(row["v"]["value"])

    def close(self) -> None:
        """Release the triple store."""
        self.triples.close()


class _StreamCancelled(OntologyError):
    """The client went away: stop writing."""


class _StreamSink:
    """A result written in one thread and read, in 64 KiB chunks, by a request."""

    CHUNK = 64 * 1024

    def __init__(self, deadline: float, timeout: float) -> None:
        self.deadline = deadline
        self.timeout = timeout
        self.media: str | None = None
        self.error: BaseException | None = None
        self.cancelled = threading.Event()
        self._buffer = bytearray()
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=8)

    def _timed_out(self) -> QueryTimeoutError:
        return QueryTimeoutError(f"query exceeded its time limit of {self.timeout:g} s")

    def start(self, media_type: str) -> None:
        self.media = media_type

    def write(self, data: bytes) -> int:
        if self.cancelled.is_set():
            self.error = _StreamCancelled("the client went away")
            raise self.error
        if time.monotonic() > self.deadline:
            self.error = self._timed_out()
            raise self.error
        self._buffer += data
        if len(self._buffer) >= self.CHUNK:
            self._put(("data", bytes(self._buffer)))
            self._buffer.clear()
        return len(data)

    def flush(self) -> None:
        """Oxigraph flushes at the end; chunks go out when full or at :meth:`finish`."""

    def _put(self, item: tuple[Any, ...]) -> None:
        while not self.cancelled.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if time.monotonic() > self.deadline:
                    self.error = self._timed_out()
                    raise self.error from None
        self.error = self.error or _StreamCancelled("the client went away")
        raise self.error

    def finish(self) -> None:
        with contextlib.suppress(OntologyError):
            if self._buffer:
                self._put(("data", bytes(self._buffer)))
            self._put(("end",))

    def fail(self, error: BaseException) -> None:
        with contextlib.suppress(OntologyError):
            self._put(("error", error))

    def get(self) -> tuple[Any, ...]:
        remaining = self.deadline - time.monotonic() + 0.5
        try:
            return self._queue.get(timeout=max(0.01, remaining))
        except queue.Empty:
            self.cancelled.set()
            return ("error", self._timed_out())


_OPEN: dict[tuple[str, str | None], OntologyStore] = {}
_OPEN_LOCK = threading.Lock()


def open_ontology_store(settings: Settings, *, base: str = DEFAULT_BASE) -> OntologyStore:
    """The process's store for ``settings``: Oxigraph under ``<data_dir>/ontologies`` or,
    with ``settings.fuseki_url``, that endpoint. One instance per data directory and URL,
    shared by the API and the plugins of the same process (the on-disk store admits one
    opener)."""
    root = Path(settings.data_dir).expanduser().resolve() / "ontologies"
    key = (str(root), settings.fuseki_url)
    with _OPEN_LOCK:
        store = _OPEN.get(key)
        if store is None:
            triples: TripleStore
            if settings.fuseki_url:
                triples = SparqlEndpointStore(settings.fuseki_url)
            else:
                triples = OxigraphStore(root / "oxigraph")
                triples.adopt_default_graph(DEFAULT_GRAPH)
            store = OntologyStore(triples, OntologyCatalog(root / "catalog.sqlite3"), base)
            _OPEN[key] = store
        # Shared by the API and the plugins of one process, which read the same settings.
        store.federation = FederationPolicy.from_settings(settings)
        return store


def open_ontology_store_via_api(settings: Settings, *, base: str = DEFAULT_BASE) -> OntologyStore:
    """A store that reaches the server's SPARQL endpoint (``settings.api_url`` +
    ``/api/v1/kg/sparql``, with the API token) and shares its catalog on disk: for a
    process (a worker) beside a server that holds the on-disk store. The caller closes it."""
    root = Path(settings.data_dir).expanduser().resolve() / "ontologies"
    endpoint = settings.api_url.rstrip("/") + "/api/v1/kg/sparql"
    headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else None
    triples = SparqlEndpointStore(
        endpoint,
        query_url=endpoint,
        update_url=endpoint,
        graph_store=False,
        headers=headers,
        verify=api_verify(settings.ca_file),  # an https:// API with a private CA
    )
    return OntologyStore(
        triples,
        OntologyCatalog(root / "catalog.sqlite3"),
        base,
        federation=FederationPolicy.from_settings(settings),
    )


def close_ontology_stores() -> None:
    """Close every store opened by :func:`open_ontology_store` (tests, shutdown)."""
    with _OPEN_LOCK:
        for store in _OPEN.values():
            store.close()
        _OPEN.clear()
