"""Where the triples live: Oxigraph on disk (default) or an external SPARQL 1.1 endpoint.

Both stores offer the same operations, so :class:`~mimir.core.ontology.store.OntologyStore`
does not know which one it talks to:

- :class:`OxigraphStore` keeps a RocksDB-backed Oxigraph store in the data directory
  (the engine under ``oxrdflib``). One process may open it at a time.
- :class:`SparqlEndpointStore` speaks the SPARQL 1.1 Protocol (query, update) and the
  Graph Store Protocol over ``httpx`` to ``FUSEKI_URL`` (Fuseki's dataset URL, or an
  ``oxigraph serve`` root: both answer ``/query`` and ``/update``; the graph store is
  ``/data`` on Fuseki and ``/store`` on Oxigraph, found on first use).
"""

from __future__ import annotations

import itertools
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
import pyoxigraph as ox

from mimir.core.ontology.errors import (
    EndpointError,
    OntologyError,
    QueryTimeoutError,
    SparqlError,
    StoreBusyError,
)
from mimir.core.ontology.results import QueryResult, term_to_json

__all__ = ["EMPTY_GRAPH", "Chooser", "OxigraphStore", "SparqlEndpointStore", "TripleStore"]

logger = logging.getLogger(__name__)

#: A graph no one writes: naming it as the only default graph makes that graph empty.
EMPTY_GRAPH = "urn:x-mimir:empty"
#: Triples parsed and written at a time by an upload (bounds its memory).
LOAD_BATCH = 50_000

#: Given a result's kind (``select``, ``ask`` or ``graph``), the format name to write it
#: in (``json``, ``xml``, ``csv``, ``tsv``; ``turtle``, ``ntriples``, ``rdfxml``,
#: ``jsonld``) and its media type, or ``None`` when the client accepts none of them.
Chooser = Callable[[str], "tuple[str, str] | None"]

_RESULTS_FORMATS = {
    "json": ox.QueryResultsFormat.JSON,
    "xml": ox.QueryResultsFormat.XML,
    "csv": ox.QueryResultsFormat.CSV,
    "tsv": ox.QueryResultsFormat.TSV,
}
_GRAPH_FORMATS = {
    "turtle": ox.RdfFormat.TURTLE,
    "ntriples": ox.RdfFormat.N_TRIPLES,
    "rdfxml": ox.RdfFormat.RDF_XML,
    "jsonld": ox.RdfFormat.JSON_LD,
}


class NotAcceptableError(SparqlError):
    """The client accepts no format this result can be written in (406)."""


class ResultSink(Protocol):
    """Where a streamed result goes: the media type first, then the bytes."""

    def start(self, media_type: str) -> None: ...

    def write(self, data: bytes) -> int: ...

    def flush(self) -> None: ...


class TripleStore(Protocol):
    """What the ontology store needs from a triple store.

    ``default_graphs``/``named_graphs`` of a query are the dataset, ``None`` leaving it to
    the text (``FROM``) or the store; an empty ``default_graphs`` is an empty graph."""

    def put_graph(self, graph: str, triples: Sequence[ox.Triple]) -> None:
        """Replace the content of named graph ``graph``."""

    def add_triples(self, graph: str, triples: Sequence[ox.Triple]) -> None:
        """Add ``triples`` to named graph ``graph``."""

    def drop_graph(self, graph: str) -> None:
        """Remove named graph ``graph`` (no error if it is absent)."""

    def graph_triples(self, graph: str) -> list[ox.Triple]:
        """Every triple of named graph ``graph``."""

    def load(self, graph: str, source: Any, fmt: ox.RdfFormat, *, base_iri: str | None) -> None:
        """Add the triples of the document read from ``source`` to ``graph``, streamed
        (never the whole document in memory); a syntax error raises ``SyntaxError`` and
        may leave part of the document loaded."""

    def move_graph(self, source: str, target: str, *, replace: bool) -> None:
        """Put ``source``'s triples into ``target`` (replacing its content when
        ``replace``, else adding to it), then drop ``source``."""

    def named_graphs(self) -> list[str]:
        """Every named graph of the store."""

    def query(
        self,
        sparql: str,
        *,
        default_graphs: Sequence[str] | None,
        named_graphs: Sequence[str] | None = None,
        row_limit: int,
        timeout: float,
        base_iri: str | None = None,
    ) -> QueryResult:
        """Run a read-only query; rows past ``row_limit`` are dropped (``truncated``)."""

    def stream_query(
        self,
        sparql: str,
        *,
        default_graphs: Sequence[str] | None,
        named_graphs: Sequence[str] | None,
        choose: Chooser,
        sink: ResultSink,
        timeout: float,
        base_iri: str | None = None,
    ) -> None:
        """Run a read-only query and write its whole result to ``sink`` in the format
        ``choose`` picks (:class:`NotAcceptableError` if none)."""

    def update(self, sparql: str, *, timeout: float, base_iri: str | None = None) -> None:
        """Run a SPARQL 1.1 update."""

    def close(self) -> None:
        """Release what the store holds."""


def _check_deadline(deadline: float, timeout: float) -> None:
    if time.monotonic() > deadline:
        raise QueryTimeoutError(f"query exceeded its time limit of {timeout:g} s")


def _dataset_kwargs(
    default_graphs: Sequence[str] | None, named_graphs: Sequence[str] | None
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if default_graphs is not None:
        kwargs["default_graph"] = [ox.NamedNode(g) for g in default_graphs]
    if named_graphs is not None:
        kwargs["named_graphs"] = [ox.NamedNode(g) for g in named_graphs]
    return kwargs


class OxigraphStore:
    """An Oxigraph store on disk (``path``), or in memory when ``path`` is ``None``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        try:
            if path is None:
                self._store = ox.Store()
            else:
                path.mkdir(parents=True, exist_ok=True)
                self._store = ox.Store(str(path))
        except OSError as exc:
            kind = StoreBusyError if "lock" in str(exc).lower() else EndpointError
            raise kind(
                f"cannot open the ontology store at {path}: {exc} (is another Mimir server "
                "using this data directory? Only one process may open it; give workers "
                "FUSEKI_URL to share a graph)"
            ) from exc
        # Oxigraph is thread-safe; the lock only keeps replace-graph atomic for readers.
        self._write_lock = threading.Lock()

    def put_graph(self, graph: str, triples: Sequence[ox.Triple]) -> None:
        node = ox.NamedNode(graph)
        with self._write_lock:
            self._store.remove_graph(node) if self._store.contains_named_graph(node) else None
            self._store.add_graph(node)
            self._store.bulk_extend(
                ox.Quad(t.subject, t.predicate, t.object, node) for t in triples
            )
            self._store.flush()

    def add_triples(self, graph: str, triples: Sequence[ox.Triple]) -> None:
        node = ox.NamedNode(graph)
        with self._write_lock:
            self._store.extend(ox.Quad(t.subject, t.predicate, t.object, node) for t in triples)

    def drop_graph(self, graph: str) -> None:
        node = ox.NamedNode(graph)
        with self._write_lock:
            if self._store.contains_named_graph(node):
                self._store.remove_graph(node)
            self._store.flush()

    def graph_triples(self, graph: str) -> list[ox.Triple]:
        node = ox.NamedNode(graph)
        return [q.triple for q in self._store.quads_for_pattern(None, None, None, node)]

    def load(self, graph: str, source: Any, fmt: ox.RdfFormat, *, base_iri: str | None) -> None:
        """Parse ``source`` as it is read and write it in batches of :data:`LOAD_BATCH`
        triples: memory stays bounded by the batch whatever the document's size (one
        ``bulk_load`` of a million triples peaked at 912 MiB in the server)."""
        node = ox.NamedNode(graph)
        with self._write_lock:
            if not self._store.contains_named_graph(node):
                self._store.add_graph(node)
            # Blank nodes are scoped to their document: an append never merges its _:b1 with
            # the version's.
            parsed = ox.parse(source, format=fmt, base_iri=base_iri, rename_blank_nodes=True)
            while batch := [
                ox.Quad(t.subject, t.predicate, t.object, node)
                for t in itertools.islice(parsed, LOAD_BATCH)
            ]:
                self._store.bulk_extend(batch)
            self._store.flush()

    def move_graph(self, source: str, target: str, *, replace: bool) -> None:
        src, dst = ox.NamedNode(source), ox.NamedNode(target)
        with self._write_lock:
            if replace and self._store.contains_named_graph(dst):
                self._store.remove_graph(dst)
            self._store.add_graph(dst)
            self._store.bulk_extend(
                ox.Quad(q.subject, q.predicate, q.object, dst)
                for q in self._store.quads_for_pattern(None, None, None, src)
            )
            if self._store.contains_named_graph(src):
                self._store.remove_graph(src)
            self._store.flush()

    def named_graphs(self) -> list[str]:
        return [g.value for g in self._store.named_graphs() if isinstance(g, ox.NamedNode)]

    def adopt_default_graph(self, graph: str) -> None:
        """Move the triples of the store's unnamed default graph into ``graph``: versions
        before the dataset rule wrote there, outside every dataset a query can name."""
        empty = ox.DefaultGraph()
        if next(self._store.quads_for_pattern(None, None, None, empty), None) is None:
            return
        with self._write_lock:
            self._store.update(f"ADD DEFAULT TO {ox.NamedNode(graph)} ; DROP DEFAULT")
            self._store.flush()

    def _run(
        self,
        sparql: str,
        default_graphs: Sequence[str] | None,
        named_graphs: Sequence[str] | None,
        base_iri: str | None,
    ) -> object:
        try:
            return self._store.query(
                sparql, base_iri=base_iri, **_dataset_kwargs(default_graphs, named_graphs)
            )
        except SyntaxError as exc:
            raise SparqlError(f"invalid SPARQL query: {exc}") from None
        except (OSError, ValueError) as exc:
            raise SparqlError(f"query failed: {exc}") from None

    def stream_query(
        self,
        sparql: str,
        *,
        default_graphs: Sequence[str] | None,
        named_graphs: Sequence[str] | None,
        choose: Chooser,
        sink: ResultSink,
        timeout: float,
        base_iri: str | None = None,
    ) -> None:
        answer = self._run(sparql, default_graphs, named_graphs, base_iri)
        failure: OntologyError | None = None
        try:
            kind = (
                "select"
                if isinstance(answer, ox.QuerySolutions)
                else "graph"
                if isinstance(answer, ox.QueryTriples)
                else "ask"
            )
            chosen = choose(kind)
            if chosen is None:
                raise NotAcceptableError(kind)
            name, media = chosen
            sink.start(media)
            table = _GRAPH_FORMATS if kind == "graph" else _RESULTS_FORMATS
            answer.serialize(sink, format=table[name])  # type: ignore[attr-defined]
        except OntologyError as exc:
            failure = exc
        except (OSError, ValueError, RuntimeError, SyntaxError) as exc:
            # The sink's own errors (time limit, client gone) come back wrapped.
            cause = exc.__cause__ or exc.__context__
            failure = (
                type(cause)(str(cause))
                if isinstance(cause, OntologyError)
                else SparqlError(f"query failed: {exc}")
            )
        finally:
            del answer
        if failure is not None:
            raise failure

    def query(
        self,
        sparql: str,
        *,
        default_graphs: Sequence[str] | None,
        named_graphs: Sequence[str] | None = None,
        row_limit: int,
        timeout: float,
        base_iri: str | None = None,
    ) -> QueryResult:
        started = time.monotonic()
        deadline = started + timeout
        try:
            answer = self._store.query(
                sparql, base_iri=base_iri, **_dataset_kwargs(default_graphs, named_graphs)
            )
        except SyntaxError as exc:
            raise SparqlError(f"invalid SPARQL query: {exc}") from None
        except (OSError, ValueError) as exc:
            raise SparqlError(f"query failed: {exc}") from None
        # Oxigraph's result iterators must be dropped on the thread that made them: keep
        # them out of the tracebacks of the errors raised from here.
        failure: OntologyError | None = None
        try:
            result = self._collect(answer, row_limit, deadline, timeout)
        except QueryTimeoutError as exc:
            failure = QueryTimeoutError(str(exc))
        except (OSError, ValueError, RuntimeError) as exc:
            failure = SparqlError(f"query failed: {exc}")
        finally:
            del answer
        if failure is not None:
            raise failure
        result.elapsed_ms = (time.monotonic() - started) * 1000
        return result

    @staticmethod
    def _collect(answer: object, row_limit: int, deadline: float, timeout: float) -> QueryResult:
        # Oxigraph evaluates lazily: checking the clock between rows stops a long answer.
        if isinstance(answer, ox.QuerySolutions):
            variables = [v.value for v in answer.variables]
            rows: list[dict[str, dict[str, str]]] = []
            truncated = False
            for solution in answer:
                _check_deadline(deadline, timeout)
                if len(rows) >= row_limit:
                    truncated = True
                    break
                row = {}
                for name in variables:
                    value = solution[name]
                    if value is not None:
                        row[name] = term_to_json(value)
                rows.append(row)
            return QueryResult(kind="select", variables=variables, rows=rows, truncated=truncated)
        if isinstance(answer, ox.QueryTriples):
            triples: list[ox.Triple] = []
            truncated = False
            for triple in answer:
                _check_deadline(deadline, timeout)
                if len(triples) >= row_limit:
                    truncated = True
                    break
                triples.append(triple)
            return QueryResult(kind="graph", triples=triples, truncated=truncated)
        _check_deadline(deadline, timeout)
        return QueryResult(kind="ask", boolean=bool(answer))

    def update(self, sparql: str, *, timeout: float, base_iri: str | None = None) -> None:
        try:
            with self._write_lock:
                self._store.update(sparql, base_iri=base_iri)
        except SyntaxError as exc:
            raise SparqlError(f"invalid SPARQL update: {exc}") from None
        except (OSError, ValueError) as exc:
            raise SparqlError(f"update failed: {exc}") from None

    def backup(self, directory: Path) -> None:
        """A consistent copy of the on-disk store in ``directory`` (which must not exist),
        openable as a store of its own: a RocksDB checkpoint, hard links to the immutable
        files when ``directory`` is on the same file system. Writes wait meanwhile (they
        hold the same lock), so a graph being replaced is in it whole or not at all."""
        if self.path is None:
            raise OntologyError("an in-memory ontology store cannot be backed up")
        with self._write_lock:
            try:
                self._store.backup(str(directory))
            except OSError as exc:
                raise EndpointError(f"backing up the ontology store failed: {exc}") from exc

    def close(self) -> None:
        try:
            self._store.flush()
        except OSError:
            logger.warning("flushing the ontology store failed", exc_info=True)
        # Oxigraph closes (and unlocks) the database when the last reference goes.
        self._store = ox.Store()


_QUERY_ACCEPT = "application/sparql-results+json, application/n-triples;q=0.9, text/turtle;q=0.8"


class SparqlEndpointStore:
    """An external SPARQL 1.1 endpoint (``FUSEKI_URL``) over HTTP."""

    def __init__(
        self,
        url: str,
        *,
        query_url: str | None = None,
        update_url: str | None = None,
        graph_store: bool = True,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """``url`` is the dataset (``/query``, ``/update`` below it unless given);
        without ``graph_store`` graphs are written and read through SPARQL instead."""
        self.url = url.rstrip("/")
        self.query_url = query_url or self.url + "/query"
        self.update_url = update_url or self.url + "/update"
        self.graph_store = graph_store
        self._client = httpx.Client(
            timeout=timeout, transport=transport, headers=headers, verify=verify
        )
        self._gsp_url: str | None = None

    # -- HTTP plumbing -------------------------------------------------------------

    def _request(
        self, method: str, url: str, *, timeout: float | None = None, **kw: object
    ) -> httpx.Response:
        try:
            response = self._client.request(
                method,
                url,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                **kw,  # type: ignore[arg-type]
            )
        except httpx.TimeoutException as exc:
            raise QueryTimeoutError(f"SPARQL endpoint {self.url} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise EndpointError(f"SPARQL endpoint {self.url} is unreachable: {exc}") from exc
        if response.status_code >= 500:
            raise EndpointError(
                f"SPARQL endpoint {self.url} failed ({response.status_code}): {response.text[:300]}"
            )
        return response

    def _gsp(self) -> str:
        """The Graph Store Protocol URL (``/data`` on Fuseki, ``/store`` on Oxigraph).

        Found by posting nothing to a probe graph (a missing endpoint answers 404/405;
        HEAD is no help: some servers answer it with a body), then dropping that graph.
        """
        if self._gsp_url is None:
            probe = "urn:mimir:graph-store-probe"
            for path in ("/data", "/store"):
                answer = self._request(
                    "POST",
                    self.url + path,
                    params={"graph": probe},
                    content=b"",
                    headers={"Content-Type": "application/n-triples"},
                )
                if answer.status_code < 400:
                    self._gsp_url = self.url + path
                    self._request("DELETE", self._gsp_url, params={"graph": probe})
                    break
            else:
                raise EndpointError(f"no SPARQL graph store at {self.url}/data or {self.url}/store")
        return self._gsp_url

    # -- graph store ----------------------------------------------------------------

    def _insert_data(self, graph: str, triples: Sequence[ox.Triple], replace: bool) -> None:
        """Write through SPARQL Update (endpoints without a graph store)."""
        node = str(ox.NamedNode(graph))
        parts = [f"DROP SILENT GRAPH {node}"] if replace else []
        for start in range(0, len(triples), 5000):
            chunk = ox.serialize(list(triples[start : start + 5000]), format=ox.RdfFormat.N_TRIPLES)
            parts.append(f"INSERT DATA {{ GRAPH {node} {{ {(chunk or b'').decode()} }} }}")
        if parts:
            self.update(" ;\n".join(parts), timeout=self._client.timeout.read or 30.0)

    def put_graph(self, graph: str, triples: Sequence[ox.Triple]) -> None:
        self._send_graph(graph, triples, replace=True)

    def add_triples(self, graph: str, triples: Sequence[ox.Triple]) -> None:
        self._send_graph(graph, triples, replace=False)

    def _send_graph(self, graph: str, triples: Sequence[ox.Triple], *, replace: bool) -> None:
        """Replace (PUT) or extend (POST) ``graph`` through the graph store, else SPARQL Update."""
        if not self.graph_store:
            self._insert_data(graph, triples, replace=replace)
            return
        body = ox.serialize(list(triples), format=ox.RdfFormat.N_TRIPLES) or b""
        response = self._request(
            "PUT" if replace else "POST",
            self._gsp(),
            params={"graph": graph},
            content=body,
            headers={"Content-Type": "application/n-triples"},
        )
        if response.status_code >= 400:
            action = "storing graph" if replace else "adding to graph"
            raise EndpointError(
                f"{action} {graph} failed ({response.status_code}): {response.text[:300]}"
            )

    def drop_graph(self, graph: str) -> None:
        if not self.graph_store:
            self.update(f"DROP SILENT GRAPH {ox.NamedNode(graph)}", timeout=30.0)
            return
        response = self._request("DELETE", self._gsp(), params={"graph": graph})
        if response.status_code >= 400 and response.status_code != 404:
            raise EndpointError(f"dropping graph {graph} failed ({response.status_code})")

    def load(self, graph: str, source: Any, fmt: ox.RdfFormat, *, base_iri: str | None) -> None:
        batch: list[ox.Triple] = []
        for quad in ox.parse(source, format=fmt, base_iri=base_iri):
            batch.append(quad.triple)
            if len(batch) >= 100_000:
                self.add_triples(graph, batch)
                batch = []
        self.add_triples(graph, batch)

    def move_graph(self, source: str, target: str, *, replace: bool) -> None:
        src, dst = ox.NamedNode(source), ox.NamedNode(target)
        op = (
            f"MOVE SILENT {src} TO {dst}"
            if replace
            else f"ADD SILENT {src} TO {dst} ; DROP SILENT GRAPH {src}"
        )
        self.update(op, timeout=max(300.0, self._client.timeout.read or 30.0))

    def named_graphs(self) -> list[str]:
        result = self.query(
            "SELECT DISTINCT ?g WHERE { GRAPH ?g { } }",
            default_graphs=None,
            row_limit=10_000_000,
            timeout=self._client.timeout.read or 30.0,
        )
        return [row["g"]["value"] for row in result.rows if row.get("g", {}).get("type") == "uri"]

    def graph_triples(self, graph: str) -> list[ox.Triple]:
        if not self.graph_store:
            result = self.query(
                "CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }",
                default_graphs=[graph],
                row_limit=10_000_000,
                timeout=self._client.timeout.read or 30.0,
            )
            return list(result.triples)
        response = self._request(
            "GET", self._gsp(), params={"graph": graph}, headers={"Accept": "application/n-triples"}
        )
        if response.status_code == 404:
            return []
        if response.status_code >= 400:
            raise EndpointError(f"reading graph {graph} failed ({response.status_code})")
        return [q.triple for q in ox.parse(response.content, format=ox.RdfFormat.N_TRIPLES)]

    # -- SPARQL ------------------------------------------------------------------------

    @staticmethod
    def _query_form(
        sparql: str,
        default_graphs: Sequence[str] | None,
        named_graphs: Sequence[str] | None,
        base_iri: str | None,
    ) -> bytes:
        text = f"BASE <{base_iri}>\n{sparql}" if base_iri else sparql
        form: list[tuple[str, str]] = [("query", text)]
        if default_graphs is not None:
            form.extend(("default-graph-uri", g) for g in default_graphs or (EMPTY_GRAPH,))
        form.extend(("named-graph-uri", g) for g in named_graphs or ())
        return urlencode(form).encode()

    def stream_query(
        self,
        sparql: str,
        *,
        default_graphs: Sequence[str] | None,
        named_graphs: Sequence[str] | None,
        choose: Chooser,
        sink: ResultSink,
        timeout: float,
        base_iri: str | None = None,
    ) -> None:
        # The kind is known only from the endpoint's answer: accept every format Mimir
        # could choose, then write what came if it is the one chosen, else convert.
        accept = (
            "application/sparql-results+json, application/sparql-results+xml;q=0.9, "
            "text/csv;q=0.8, text/tab-separated-values;q=0.8, application/n-triples;q=0.9, "
            "text/turtle;q=0.8, application/rdf+xml;q=0.7, application/ld+json;q=0.7"
        )
        try:
            with self._client.stream(
                "POST",
                self.query_url,
                content=self._query_form(sparql, default_graphs, named_graphs, base_iri),
                headers={"Accept": accept, "Content-Type": "application/x-www-form-urlencoded"},
                timeout=timeout,
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    if response.status_code >= 500:
                        raise EndpointError(
                            f"SPARQL endpoint {self.url} failed ({response.status_code}): "
                            f"{response.text[:300]}"
                        )
                    raise SparqlError(
                        f"the SPARQL endpoint refused the query: {response.text[:500]}"
                    )
                media = response.headers.get("content-type", "").split(";")[0].strip().lower()
                rdf = ox.RdfFormat.from_media_type(media)
                results = ox.QueryResultsFormat.from_media_type(media)
                if rdf is not None:
                    kind = "graph"
                elif results is not None:
                    kind = "select"
                    if results == ox.QueryResultsFormat.JSON:
                        head = b""
                        chunks = response.iter_bytes()
                        for chunk in chunks:
                            head += chunk
                            if b'"boolean"' in head or b'"results"' in head or len(head) > 4096:
                                break
                        kind = "ask" if b'"boolean"' in head else "select"
                        self._pass_through(
                            kind, media, choose, sink, _chain(head, chunks), results, None
                        )
                        return
                else:
                    raise EndpointError(f"SPARQL endpoint {self.url} answered {media!r}")
                self._pass_through(kind, media, choose, sink, response.iter_bytes(), results, rdf)
        except httpx.TimeoutException as exc:
            raise QueryTimeoutError(f"SPARQL endpoint {self.url} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise EndpointError(f"SPARQL endpoint {self.url} is unreachable: {exc}") from exc

    @staticmethod
    def _pass_through(
        kind: str,
        media: str,
        choose: Chooser,
        sink: ResultSink,
        chunks: object,
        results: ox.QueryResultsFormat | None,
        rdf: ox.RdfFormat | None,
    ) -> None:
        chosen = choose(kind)
        if chosen is None:
            raise NotAcceptableError(kind)
        name, chosen_media = chosen
        wanted: Any = (_GRAPH_FORMATS if kind == "graph" else _RESULTS_FORMATS)[name]
        if wanted in (results, rdf):
            sink.start(chosen_media)
            for chunk in chunks:  # type: ignore[attr-defined]
                sink.write(chunk)
            sink.flush()
            return
        # Another format than the endpoint's: convert, streaming.
        source: Any = _IterReader(chunks)
        out: Any = sink
        sink.start(chosen_media)
        if kind == "graph":
            assert rdf is not None
            ox.serialize((q.triple for q in ox.parse(source, format=rdf)), out, format=wanted)
        else:
            assert results is not None
            ox.parse_query_results(source, format=results).serialize(out, format=wanted)
        sink.flush()

    def query(
        self,
        sparql: str,
        *,
        default_graphs: Sequence[str] | None,
        named_graphs: Sequence[str] | None = None,
        row_limit: int,
        timeout: float,
        base_iri: str | None = None,
    ) -> QueryResult:
        started = time.monotonic()
        response = self._request(
            "POST",
            self.query_url,
            content=self._query_form(sparql, default_graphs, named_graphs, base_iri),
            headers={
                "Accept": _QUERY_ACCEPT,
                "Content-Type": "application/x-www-form-urlencoded",
            },
            timeout=timeout,
        )
        if response.status_code >= 400:
            raise SparqlError(f"the SPARQL endpoint refused the query: {response.text[:500]}")
        media = response.headers.get("content-type", "").split(";")[0].strip()
        if "json" in media:
            data = json.loads(response.content)
            if "boolean" in data:
                result = QueryResult(kind="ask", boolean=bool(data["boolean"]))
            else:
                bindings = data.get("results", {}).get("bindings", [])
                result = QueryResult(
                    kind="select",
                    variables=list(data.get("head", {}).get("vars", [])),
                    rows=bindings[:row_limit],
                    truncated=len(bindings) > row_limit,
                )
        else:
            fmt = ox.RdfFormat.from_media_type(media) or ox.RdfFormat.N_TRIPLES
            triples = [q.triple for q in ox.parse(response.content, format=fmt)]
            result = QueryResult(
                kind="graph", triples=triples[:row_limit], truncated=len(triples) > row_limit
            )
        result.elapsed_ms = (time.monotonic() - started) * 1000
        return result

    def update(self, sparql: str, *, timeout: float, base_iri: str | None = None) -> None:
        text = f"BASE <{base_iri}>\n{sparql}" if base_iri else sparql
        response = self._request(
            "POST",
            self.update_url,
            content=text.encode(),
            headers={"Content-Type": "application/sparql-update"},
            timeout=timeout,
        )
        if response.status_code >= 400:
            raise SparqlError(f"the SPARQL endpoint refused the update: {response.text[:500]}")

    def close(self) -> None:
        self._client.close()


def _chain(head: bytes, rest: object) -> object:
    yield head
    yield from rest  # type: ignore[misc]


class _IterReader:
    """A binary file-like reader over an iterator of byte chunks."""

    def __init__(self, chunks: object) -> None:
        self._chunks = iter(chunks)  # type: ignore[call-overload]
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def readable(self) -> bool:
        return True
