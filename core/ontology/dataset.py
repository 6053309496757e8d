"""The RDF dataset a query or update runs over, and the one rule Mimir applies to both.

**The rule.** When neither the request (``default-graph-uri``/``named-graph-uri`` for a
query, ``using-graph-uri``/``using-named-graph-uri`` for an update) nor the text
(``FROM``/``FROM NAMED``, ``USING``/``USING NAMED``/``WITH``) names a dataset, the default
graph is the union of every named graph in the triple store (each ontology version and any
graph an update made), and ``GRAPH ?g`` ranges over those same named graphs. The store's
own unnamed default graph is not part of that union. This holds for queries and for the
``WHERE`` of updates, on the built-in store and on ``FUSEKI_URL``.

**Writes without a graph.** A triple an update writes without naming a graph (``INSERT
DATA { <a> <b> <c> }``, a template outside ``GRAPH``, ``LOAD <doc>``, ``CLEAR DEFAULT``)
goes to Mimir's default graph :data:`DEFAULT_GRAPH`, a named graph like the others, so
what was written is in the union the next query sees (the store's unnamed default graph
is outside it, and outside any dataset the protocol can name). :func:`to_default_graph`
rewrites the update text for that, on both stores.

Updates get their dataset through ``USING``/``USING NAMED`` clauses that Mimir adds to
each ``DELETE/INSERT … WHERE`` operation without ``USING`` or ``WITH`` of its own
(pyoxigraph has no dataset argument for updates, and the same text then means the same on
an external endpoint). :func:`add_using` does that with a small SPARQL lexer: strings,
IRIs and comments are skipped, only keywords outside braces count.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyoxigraph as ox

from mimir.core.ontology.errors import SparqlError

__all__ = [
    "DEFAULT_GRAPH",
    "Dataset",
    "add_using",
    "check_iri",
    "declares_dataset",
    "to_default_graph",
]

#: Where the triples an update writes without naming a graph go.
DEFAULT_GRAPH = "urn:x-mimir:default"


@dataclass(frozen=True)
class Dataset:
    """A dataset given by the protocol: ``None`` fields were not given."""

    default: tuple[str, ...] | None = None
    named: tuple[str, ...] | None = None

    @property
    def given(self) -> bool:
        return self.default is not None or self.named is not None


def check_iri(value: str, what: str) -> None:
    """Refuse (:class:`SparqlError`) a ``value`` of ``what`` that is not an absolute IRI."""
    try:
        ox.NamedNode(value)
    except ValueError as exc:
        raise SparqlError(f"{what} {value!r} is not an absolute IRI: {exc}") from None


_SKIP = re.compile(r"\s+|#[^\r\n]*")
_IRI = re.compile(r"<[^<>\"{}|^`\\\x00-\x20]*>")
_STRINGS = (
    re.compile(r"'''(?:(?:'|'')?(?:[^'\\]|\\.))*'''", re.DOTALL),
    re.compile(r'"""(?:(?:"|"")?(?:[^"\\]|\\.))*"""', re.DOTALL),
    re.compile(r"'(?:[^'\\\n\r]|\\.)*'"),
    re.compile(r'"(?:[^"\\\n\r]|\\.)*"'),
)
_WORD = re.compile(r"[?$]?[\w:](?:[\w\-.:%]|\\.)*")


@dataclass(frozen=True)
class _Tok:
    text: str
    start: int
    depth: int


def _tokens(text: str) -> Iterator[_Tok]:
    """Tokens outside strings, IRIs and comments, with their brace depth."""
    pos, depth, length = 0, 0, len(text)
    while pos < length:
        match = _SKIP.match(text, pos)
        if match:
            pos = match.end()
            continue
        char = text[pos]
        if char == "<":
            match = _IRI.match(text, pos)
            if match:
                yield _Tok(match.group(0), pos, depth)
                pos = match.end()
                continue
        elif char in "'\"":
            for pattern in _STRINGS:
                match = pattern.match(text, pos)
                if match:
                    break
            if match:
                yield _Tok('""', pos, depth)
                pos = match.end()
                continue
        else:
            match = _WORD.match(text, pos)
            if match:
                yield _Tok(match.group(0).rstrip(".").upper(), pos, depth)
                pos = match.start() + len(match.group(0).rstrip("."))
                continue
        if char == "}":
            depth = max(0, depth - 1)
        yield _Tok(char, pos, depth)
        if char == "{":
            depth += 1
        pos += 1


def declares_dataset(text: str, *, update: bool) -> bool:
    """Whether a query names its dataset (``FROM``), or an update ``USING``/``WITH``."""
    keywords = {"USING", "WITH"} if update else {"FROM"}
    return any(t.depth == 0 and t.text in keywords for t in _tokens(text))


def add_using(update: str, default: Sequence[str], named: Sequence[str]) -> str:
    """``update`` with ``USING <d>`` for each of ``default`` and ``USING NAMED <n>`` for
    each of ``named`` before the ``WHERE`` of every ``DELETE/INSERT … WHERE`` operation
    that has no ``USING`` or ``WITH`` itself (``DELETE WHERE {…}``, ``… DATA`` and graph
    management operations take no dataset). An empty ``default`` is an empty graph."""
    clause = " ".join(
        [f"USING <{g}>" for g in (default or ("urn:x-mimir:empty",))]
        + [f"USING NAMED <{g}>" for g in named]
    )
    inserts: list[int] = []
    previous = ""
    own_dataset = False
    for tok in _tokens(update):
        if tok.depth != 0:
            continue
        if tok.text == ";":
            own_dataset, previous = False, ""
            continue
        if tok.text in ("USING", "WITH"):
            own_dataset = True
        elif tok.text == "WHERE" and previous != "DELETE" and not own_dataset:
            inserts.append(tok.start)
        previous = tok.text
    out = update
    for start in reversed(inserts):
        out = f"{out[:start]}{clause} {out[start:]}"
    return out


def _operations(tokens: list[_Tok]) -> Iterator[list[_Tok]]:
    """The tokens of each operation of an update (split at ``;`` outside braces), without
    its prologue (``PREFIX p: <…>``, ``BASE <…>``)."""
    operation: list[_Tok] = []
    for tok in [*tokens, _Tok(";", -1, 0)]:
        if tok.depth == 0 and tok.text == ";":
            while operation and operation[0].text in ("PREFIX", "BASE"):
                operation = operation[3:] if operation[0].text == "PREFIX" else operation[2:]
            if operation:
                yield operation
            operation = []
        else:
            operation.append(tok)


def _closing(tokens: list[_Tok], index: int) -> int:
    """The index of the ``}`` closing the ``{`` at ``index``."""
    depth = tokens[index].depth
    return next(
        i for i in range(index + 1, len(tokens))
        if tokens[i].text == "}" and tokens[i].depth == depth
    )  # fmt: skip


def to_default_graph(update: str, graph: str = DEFAULT_GRAPH) -> str:
    """``update`` with every write that names no graph sent to ``graph``: ``GRAPH <g> {…}``
    around the bare triples of ``INSERT/DELETE DATA``, ``WITH <g>`` before a ``DELETE/INSERT
    … WHERE`` without ``WITH`` (its ``WHERE`` keeps the ``USING`` dataset :func:`add_using`
    gave it), ``DELETE WHERE {P}`` as ``WITH <g> DELETE {P} WHERE {P}``, ``INTO GRAPH <g>``
    after a ``LOAD`` without ``INTO``, ``GRAPH <g>`` for ``DEFAULT`` in ``CLEAR``, ``DROP``,
    ``ADD``, ``MOVE`` and ``COPY``. A text Oxigraph cannot parse is left as it is (its
    error is then the user's)."""
    node = f"<{graph}>"
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement)
    try:
        for op in _operations(list(_tokens(update))):
            first, second = op[0].text, op[1].text if len(op) > 1 else ""
            if first in ("INSERT", "DELETE") and second == "DATA" and len(op) > 2:
                edits += _wrap_bare_triples(op, 2, _closing(op, 2), node)
            elif first == "DELETE" and second == "WHERE" and len(op) > 2:
                end = _closing(op, 2)
                pattern = update[op[2].start : op[end].start + 1]
                short = f"WITH {node} DELETE {pattern} WHERE {pattern}"
                edits.append((op[0].start, op[end].start + 1, short))
            elif first in ("INSERT", "DELETE"):
                edits.append((op[0].start, op[0].start, f"WITH {node} "))
            elif first == "LOAD" and not any(t.text == "INTO" for t in op):
                end = op[-1].start + len(op[-1].text)
                edits.append((end, end, f" INTO GRAPH {node}"))
            elif first in ("CLEAR", "DROP", "ADD", "MOVE", "COPY"):
                edits += [
                    (t.start, t.start + len("DEFAULT"), f"GRAPH {node}")
                    for t in op
                    if t.text == "DEFAULT"
                ]
    except (StopIteration, IndexError):
        return update
    out = update
    for start, end, text in sorted(edits, reverse=True):
        out = f"{out[:start]}{text}{out[end:]}"
    return out


def _wrap_bare_triples(
    op: list[_Tok], opening: int, closing: int, node: str
) -> list[tuple[int, int, str]]:
    """Edits putting ``GRAPH node { … }`` around each run of triples between ``op[opening]``
    (a ``{``) and ``op[closing]`` that is not in a ``GRAPH`` block (a leading ``.`` stays
    outside: it ends the block before)."""
    edits: list[tuple[int, int, str]] = []
    run_start: int | None = None
    index = opening + 1
    while index <= closing:
        tok = op[index]
        if tok.text == "GRAPH" or index == closing:
            if run_start is not None:
                edits += [(op[run_start].start, op[run_start].start, f"GRAPH {node} {{ "),
                          (tok.start, tok.start, "} ")]  # fmt: skip
                run_start = None
            if tok.text == "GRAPH":
                index = _closing(op, index + 2)
        elif run_start is None and tok.text != ".":
            run_start = index
        index += 1
    return edits
