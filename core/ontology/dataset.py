"""The RDF dataset a query or update runs over, and the one rule Mimir applies to both.

**The rule.** When neither the request (``default-graph-uri``/``named-graph-uri`` for a
query, ``using-graph-uri``/``using-named-graph-uri`` for an update) nor the text
(``FROM``/``FROM NAMED``, ``USING``/``USING NAMED``/``WITH``) names a dataset, the default
graph is the union of every named graph in the triple store (each ontology version and any
graph an update made), and ``GRAPH ?g`` ranges over those same named graphs. The store's
own unnamed default graph is not part of that union. This holds for queries and for the
``WHERE`` of updates, on the built-in store and on ``FUSEKI_URL``.

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

__all__ = ["Dataset", "add_using", "declares_dataset"]


@dataclass(frozen=True)
class Dataset:
    """A dataset given by the protocol: ``None`` fields were not given."""

    default: tuple[str, ...] | None = None
    named: tuple[str, ...] | None = None

    @property
    def given(self) -> bool:
        return self.default is not None or self.named is not None


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
