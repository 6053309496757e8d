"""SPARQL federation policy: which ``SERVICE`` and ``LOAD`` targets a query or update may reach.

Oxigraph (and Fuseki behind ``FUSEKI_URL``) really performs ``SERVICE <http://…>`` (an HTTP
POST whose answer flows back to the caller) and ``LOAD <http://…>`` (a GET whose triples are
stored). Left open, that is server-side request forgery: any caller of the SPARQL endpoints,
even a web page through the GET form, makes the server reach any address it can reach.

:class:`FederationPolicy` decides before anything runs:

- ``off`` (default, ``MIMIR_SPARQL_FEDERATION``): a query or update using ``SERVICE`` or
  ``LOAD`` is refused with :class:`FederationRefusedError`;
- ``allowlist``: each target's host must be listed in ``MIMIR_SPARQL_ALLOW`` (a host name,
  an IP, ``host:port`` or a CIDR); a ``SERVICE ?var`` (an endpoint only known at run time)
  and targets that cannot be resolved are refused; every allowed call is logged.

Detection is a SPARQL lexer, not a regular expression over the text: strings, IRIs and
comments are skipped, keywords are matched without regard to case, and where SPARQL
parsers differ the lexer takes every reading (Oxigraph's parser accepts keywords glued to
what follows, ``SERVICESILENT<…>`` or ``SERVICEex:x``; Jena applies ``\\u`` escapes to the
whole text before parsing; inside parentheses ``<`` may be an IRI or *less than*). A text
in which ``service`` (or, for updates, ``load``) appears nowhere is passed without lexing.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from mimir.core.logtext import request_id_var
from mimir.core.ontology.errors import FederationRefusedError

__all__ = [
    "FederationPolicy",
    "Outbound",
    "find_outbound",
]

logger = logging.getLogger(__name__)

#: Readings of one text analysed at most (each ambiguous ``<`` doubles them) ...
MAX_READINGS = 64
#: ... and characters lexed at most over all readings.
MAX_WORK = 8_000_000

_MODES = ("off", "allowlist")


@dataclass(frozen=True)
class Outbound:
    """One ``SERVICE`` or ``LOAD`` found in a query or update."""

    #: ``SERVICE`` or ``LOAD``.
    keyword: str
    #: The absolute target IRI, or ``None`` when it cannot be known before running (a
    #: variable, an undeclared prefix, a text too ambiguous to tell).
    iri: str | None
    #: Why ``iri`` is ``None``.
    reason: str = ""

    @property
    def host(self) -> str | None:
        return _host_port(self.iri)[0] if self.iri else None

    def describe(self) -> str:
        return f"{self.keyword} <{self.iri}>" if self.iri else self.keyword


# -- lexer ----------------------------------------------------------------------------

_WS = re.compile(r"\s+")
_COMMENT = re.compile(r"#[^\r\n]*")
_UCHAR = r"\\u[0-9A-Fa-f]{4}|\\U[0-9A-Fa-f]{8}"
_IRIREF = re.compile(r"<((?:[^<>\"{}|^`\\\x00-\x20]|" + _UCHAR + r")*)>")
_STRINGS = (
    re.compile(r"'''(?:(?:'|'')?(?:[^'\\]|\\.))*'''", re.DOTALL),
    re.compile(r'"""(?:(?:"|"")?(?:[^"\\]|\\.))*"""', re.DOTALL),
    re.compile(r"'(?:[^'\\\n\r]|\\.)*'"),
    re.compile(r'"(?:[^"\\\n\r]|\\.)*"'),
)
_VAR = re.compile(r"[?$][\w\u00B7\u0300-\u036F\u203F-\u2040]*")
# Keywords, function names, numbers, prefixed names and blank-node labels (generously:
# characters no SPARQL token allows end a word anyway, as a syntax error for the engine).
_WORD = re.compile(r"[\w:](?:[\w\-.:%\u00B7\u0300-\u036F\u203F-\u2040]|\\[_~.\-!$&'()*+,;=/?#@%])*")
_UCHAR_RE = re.compile(_UCHAR)
# What may make the two readings of ``<…>`` diverge after its ``>``: a string or comment
# starting inside it, or a parenthesis (the *less than* reading sees them as code).
_DIVERGING = re.compile(r"['()#]")


@dataclass(frozen=True)
class _Token:
    kind: str  # iri, var, word, string, punct
    text: str
    #: Brace depth and whether the innermost bracket is a parenthesis, before the token.
    braces: int = 0
    in_parens: bool = False


class _TooAmbiguous(Exception):
    pass


def _unescape_codepoints(text: str) -> str:
    def decode(match: re.Match[str]) -> str:
        code = int(match.group(0)[2:], 16)
        return chr(code) if code <= 0x10FFFF else match.group(0)

    return _UCHAR_RE.sub(decode, text)


def _operand_end(token: _Token | None) -> bool:
    """Whether ``<`` after ``token`` may be the *less than* operator."""
    if token is None:
        return False
    return token.kind in ("var", "string", "word", "iri") or token.text in (")", "]")


def _readings(text: str) -> list[list[_Token]]:
    """Every token sequence ``text`` may be read as (see the module's docstring)."""
    done: list[list[_Token]] = []
    # (position, tokens so far, bracket stack)
    pending: list[tuple[int, list[_Token], list[str]]] = [(0, [], [])]
    while pending:
        pos, tokens, stack = pending.pop()
        length = len(text)
        while pos < length:
            match = _WS.match(text, pos) or _COMMENT.match(text, pos)
            if match:
                pos = match.end()
                continue
            braces = stack.count("{")
            in_parens = bool(stack) and stack[-1] == "("
            char = text[pos]
            kind = ""
            if char == "<":
                match = _IRIREF.match(text, pos)
                if match:
                    content = match.group(1)
                    special = _DIVERGING.search(content)
                    if (
                        in_parens
                        and special
                        and "//" not in content[: special.start()]
                        and _operand_end(tokens[-1] if tokens else None)
                    ):
                        # Also read it as "less than" followed by code.
                        readings = len(done) + len(pending) + 2
                        if readings > MAX_READINGS or readings * length > MAX_WORK:
                            raise _TooAmbiguous
                        alternative = [*tokens, _Token("punct", "<", braces, in_parens)]
                        pending.append((pos + 1, alternative, list(stack)))
                    kind = "iri"
            elif char in "'\"":
                for pattern in _STRINGS:
                    match = pattern.match(text, pos)
                    if match:
                        kind = "string"
                        break
            elif char in "?$":
                match = _VAR.match(text, pos)
                kind = "var"
            else:
                match = _WORD.match(text, pos)
                if match:
                    kind = "word"
                    word = match.group(0).rstrip(".")
                    tokens.append(_Token("word", word, braces, in_parens))
                    pos = match.start() + len(word)
                    continue
            if not kind or match is None:
                # Punctuation (an unterminated string is read as code: the safe side).
                if char in "({":
                    stack.append(char)
                elif char in ")}" and stack:
                    stack.pop()
                tokens.append(_Token("punct", char, braces, in_parens))
                pos += 1
                continue
            tokens.append(_Token(kind, match.group(0), braces, in_parens))
            pos = match.end()
        done.append(tokens)
    return done


# -- analysis -------------------------------------------------------------------------


class _Prologue:
    """``BASE`` and ``PREFIX`` declarations seen so far."""

    def __init__(self) -> None:
        self.base: str | None = None
        self.prefixes: dict[str, str | None] = {}
        self.conflicting: set[str] = set()

    def declare(self, prefix: str, namespace: str | None) -> None:
        # A prefix declared twice with different IRIs (or once unresolvably) is not
        # resolved at all: parsers need not agree on which declaration wins.
        if prefix in self.prefixes and self.prefixes[prefix] != namespace:
            self.conflicting.add(prefix)
        self.prefixes[prefix] = namespace

    def iri(self, token: _Token) -> str | None:
        ref = _unescape_codepoints(token.text[1:-1])
        if urlsplit(ref).scheme:
            return ref  # absolute (RFC 3986: ``http:x`` too, which urljoin would misread)
        return urljoin(self.base, ref) if self.base is not None else None

    def pname(self, text: str) -> tuple[str | None, str]:
        prefix, colon, local = text.partition(":")
        if not colon:
            return None, f"{text!r} is not an IRI"
        if prefix in self.conflicting:
            return None, f"prefix {prefix + ':'!r} is declared more than once"
        namespace = self.prefixes.get(prefix)
        if namespace is None:
            return None, f"prefix {prefix + ':'!r} is not declared (or not absolute)"
        local = re.sub(r"\\(.)", r"\1", local)
        return namespace + local, ""


def _target(token: _Token | None, prologue: _Prologue) -> tuple[str | None, str]:
    """The IRI a ``SERVICE``/``LOAD`` target token names, else ``None`` and why."""
    if token is None:
        return None, "no target"
    if token.kind == "iri":
        iri = prologue.iri(token)
        return (iri, "") if iri else (None, f"relative IRI {token.text} without BASE")
    if token.kind == "var":
        return None, f"variable endpoint {token.text} (known only at run time)"
    if token.kind == "word" and ":" in token.text:
        return prologue.pname(token.text)
    return None, "the target cannot be told"


def _glued_targets(rest: str, prologue: _Prologue) -> list[tuple[str | None, str]]:
    """Targets of a keyword glued to a prefixed name (``SERVICEex:x``, ``LOADSILENTex:x``)."""
    candidates = [rest]
    if rest.casefold().startswith("silent"):
        candidates.append(rest[len("silent") :])
    return [prologue.pname(c) for c in candidates]


def _declare(
    token: _Token, folded: str, nxt: _Token | None, after: _Token | None, prologue: _Prologue
) -> None:
    """Record a ``BASE`` or ``PREFIX`` declaration (glued forms too: ``PREFIXex:<…>``)."""
    if folded == "base":
        if nxt is not None and nxt.kind == "iri":
            prologue.base = prologue.iri(nxt) or prologue.base
        return
    if not folded.startswith("prefix"):
        return
    if folded == "prefix":
        if nxt is None or nxt.kind != "word":
            return
        name, namespace_token = nxt.text, after
    else:
        name, namespace_token = token.text[len("prefix") :], nxt
    if not name.endswith(":") or name.count(":") != 1:
        return
    if namespace_token is None or namespace_token.kind != "iri":
        return
    prologue.declare(name[:-1], prologue.iri(namespace_token))


_AFTER_NOT_SERVICE = {"graph", "from", "named"}


def _analyse(tokens: Sequence[_Token], update: bool) -> list[Outbound]:
    found: list[Outbound] = []
    prologue = _Prologue()
    count = len(tokens)

    def at(index: int) -> _Token | None:
        return tokens[index] if 0 <= index < count else None

    for index, token in enumerate(tokens):
        if token.kind != "word":
            continue
        folded = token.text.casefold()
        nxt, prev = at(index + 1), at(index - 1)
        if token.braces == 0 and not token.in_parens:
            _declare(token, folded, nxt, at(index + 2), prologue)
        for keyword in ("service", "load") if update else ("service",):
            found.extend(_keyword_hits(keyword, token, folded, prev, nxt, at, index, prologue))
    return found


def _keyword_hits(
    keyword: str,
    token: _Token,
    folded: str,
    prev: _Token | None,
    nxt: _Token | None,
    at: Callable[[int], _Token | None],
    index: int,
    prologue: _Prologue,
) -> list[Outbound]:
    name = keyword.upper()
    if prev is not None and prev.text == "@":
        return []  # a language tag
    prefixed = ":" in folded
    head = folded.partition(":")[0]
    if keyword not in head:
        return []
    if prefixed:
        # ``service:x`` is a prefixed name unless only the keyword reading parses: a
        # SERVICE's endpoint is followed by its ``{``, a LOAD starts an operation.
        if keyword == "service":
            after = prev.text.casefold() if prev is not None and prev.kind == "word" else ""
            if nxt is None or nxt.text != "{" or after in _AFTER_NOT_SERVICE:
                return []
        elif (
            token.braces
            or token.in_parens
            or not (prev is None or prev.text == ";" or prev.kind == "iri")
        ):
            return []
        if not folded.startswith(keyword):
            return [Outbound(name, None, f"{token.text!r} hides {name}")]
        return [
            Outbound(name, iri, reason)
            for iri, reason in _glued_targets(token.text[len(keyword) :], prologue)
        ]
    if folded == keyword:
        target_index = index + 1
        if nxt is not None and nxt.kind == "word" and nxt.text.casefold() == "silent":
            target_index += 1
    elif folded == keyword + "silent":
        target_index = index + 1
    else:
        return [Outbound(name, None, f"{token.text!r} hides {name}")]
    target = at(target_index)
    hits = [Outbound(name, *_target(target, prologue))]
    if target is not None and target.kind == "word" and target.text.casefold().startswith("silent"):
        # Oxigraph takes SILENT off the front of ``silentex:x`` and reads ``ex:x``.
        hits.extend(Outbound(name, *found) for found in _glued_targets(target.text, prologue))
    return hits


def find_outbound(sparql: str, *, update: bool) -> list[Outbound]:
    """Every ``SERVICE`` (and, in an update, ``LOAD``) of ``sparql``, under every reading."""
    keywords = ("service", "load") if update else ("service",)
    views = [sparql]
    if "\\u" in sparql or "\\U" in sparql:
        views.append(_unescape_codepoints(sparql))
    found: dict[Outbound, None] = {}
    for view in views:
        folded = view.casefold()
        if not any(k in folded for k in keywords):
            continue
        try:
            readings = _readings(view)
        except _TooAmbiguous:
            name = "SERVICE or LOAD" if update else "SERVICE"
            found[Outbound(name, None, "the text is too ambiguous to check")] = None
            continue
        for tokens in readings:
            for hit in _analyse(tokens, update):
                found[hit] = None
    return list(found)


# -- policy ---------------------------------------------------------------------------


def _host_port(iri: str) -> tuple[str | None, int | None]:
    """Host (lower case, IPv6 without brackets) and port of an ``http(s)`` IRI; ``None``
    for any other scheme or a netloc we do not read the way an HTTP client would."""
    parts = urlsplit(iri)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return None, None
    if not re.fullmatch(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?::[0-9]{1,5})?", parts.netloc):
        return None, None  # userinfo, percent-escapes, odd characters: refuse, never guess
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None, None
    host = (parts.hostname or "").rstrip(".").lower()
    return (host or None), port


@dataclass(frozen=True)
class _Allowed:
    host: str | None = None
    port: int | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @classmethod
    def parse(cls, entry: str) -> _Allowed:
        entry = entry.strip().lower().rstrip(".")
        if "/" in entry:
            return cls(network=ipaddress.ip_network(entry, strict=False))
        host, port = entry, None
        bracketed = re.fullmatch(r"\[([0-9a-f:.]+)\](?::(\d+))?", entry)
        if bracketed:
            host, port = bracketed.group(1), bracketed.group(2)
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        return cls(host=host.rstrip("."), port=int(port) if port else None)

    def matches(self, host: str, port: int | None) -> bool:
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        return host == self.host and (self.port is None or self.port == port)


@dataclass(frozen=True)
class FederationPolicy:
    """Whether ``SERVICE``/``LOAD`` may run, and to which hosts."""

    #: ``off`` or ``allowlist``.
    mode: str = "off"
    #: Hosts, IPs, ``host:port`` or CIDRs (``allowlist`` mode).
    allow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(
                f"SPARQL federation mode must be 'off' or 'allowlist', not {self.mode!r}"
            )

    @classmethod
    def from_settings(cls, settings: Any) -> FederationPolicy:
        """The policy of ``Settings`` (``sparql_federation``, ``sparql_allow``)."""
        return cls(
            mode=getattr(settings, "sparql_federation", "off") or "off",
            allow=tuple(getattr(settings, "sparql_allow", ()) or ()),
        )

    def _allowed(self) -> list[_Allowed]:
        entries = []
        for entry in self.allow:
            try:
                entries.append(_Allowed.parse(entry))
            except ValueError:
                logger.warning("ignoring %r in MIMIR_SPARQL_ALLOW: not a host, IP or CIDR", entry)
        return entries

    def _verdict(self, hit: Outbound, allowed: Iterable[_Allowed]) -> str | None:
        """Why ``hit`` is refused, or ``None`` if it may run."""
        if self.mode != "allowlist":
            return "federated queries and LOAD are off on this server"
        if hit.iri is None:
            return f"its target cannot be checked: {hit.reason}"
        host, port = _host_port(hit.iri)
        if host is None:
            return "only http(s) IRIs with a plain host name or IP can be allowed"
        if not any(a.matches(host, port) for a in allowed):
            return f"host {host!r} is not in MIMIR_SPARQL_ALLOW"
        return None

    def check(self, sparql: str, *, update: bool) -> list[Outbound]:
        """Raise :class:`FederationRefusedError` unless every ``SERVICE``/``LOAD`` of
        ``sparql`` is allowed; log and answer the allowed ones."""
        hits = find_outbound(sparql, update=update)
        if not hits:
            return []
        allowed = self._allowed()
        request = request_id_var.get()
        refused = []
        for hit in hits:
            why = self._verdict(hit, allowed)
            if why is not None:
                refused.append((hit, why))
        if refused:
            first, why = refused[0]
            logger.warning(
                "refused SPARQL %s (request %s)",
                "; ".join(f"{h.describe()}: {w}" for h, w in refused),
                request or "-",
            )
            if self.mode != "allowlist":
                why += (
                    " (an operator may set MIMIR_SPARQL_FEDERATION=allowlist and list the hosts"
                    " in MIMIR_SPARQL_ALLOW)"
                )
            raise FederationRefusedError(
                f"SPARQL {first.describe()} refused: {why}",
                refused=[
                    {"keyword": h.keyword, "iri": h.iri, "host": h.host, "reason": w}
                    for h, w in refused
                ],
                mode=self.mode,
            )
        for hit in hits:
            logger.info(
                "SPARQL %s to host %s allowed by MIMIR_SPARQL_ALLOW (request %s)",
                hit.describe(),
                hit.host,
                request or "-",
            )
        return hits
