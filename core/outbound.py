"""Where plugins' outbound HTTP may go: an allowlist, a denylist and built-in denials.

A pipeline is written by whoever can call the API, and ``Input.api`` or ``AI.*`` run it
from inside the cluster, next to Redis and the API itself. Every request they send
(each redirect too) is checked here first, against the host name and every address it
resolves to:

- **built-in denials**, always: link-local and cloud metadata addresses
  (``169.254.0.0/16``, ``fe80::/10``, ``fd00:ec2::254``, ``100.100.100.200``,
  ``metadata.google.internal``), the API's own port (``MIMIR_PORT``) on this host, and
  Redis (the host and port of ``REDIS_URL``, and port 6379 on loopback);
- ``MIMIR_HTTP_DENY``: more entries to refuse;
- ``MIMIR_HTTP_ALLOW``: when set, only these may be reached (a denial still wins).

``MIMIR_HTTP_REWRITE`` (``FROM=TO``, comma-separated URL prefixes) sends a request whose
URL starts with ``FROM`` to ``TO`` instead, keeping the rest of the URL: a local stand-in
for an outside service (``https://httpbin.org=http://127.0.0.1:8081``), or a mirror. A
prefix that ends in a host matches that host only (not ``httpbin.org.example``). The
checks above apply to the rewritten URL, where the request really goes; each rewrite is
logged.

An entry is a host name (``api.example.com``, ``*.example.com``), an address or network
(``10.0.0.5``, ``10.0.0.0/8``, ``::1``), each optionally with a port (``host:8080``,
``[::1]:8080``, ``10.0.0.0/8:443``). A redirect may not change the scheme (no
``https`` → ``http`` downgrade). The check resolves names itself, so a name that resolves
to a denied address is refused; a DNS answer that changes between the check and the
connection (rebinding) is not caught.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mimir.core import telemetry
from mimir.core.errors import OutboundRefusedError
from mimir.core.logtext import printable
from mimir.core.settings import Settings

if TYPE_CHECKING:
    import httpx

__all__ = ["OutboundPolicy", "OutboundRule", "UrlRewrite", "default_outbound_policy"]

logger = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_LINK_LOCAL_AND_METADATA = (
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254",
    "100.100.100.200",
    "metadata.google.internal",
    "metadata",
)
_LOOPBACK = ("127.0.0.0/8", "::1", "0.0.0.0", "::")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_RESOLVE_TIMEOUT = 5.0


@dataclass(frozen=True)
class OutboundRule:
    """One allow or deny entry: a host name pattern or a network, and maybe a port."""

    text: str
    host: str | None = None
    network: Network | None = None
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> OutboundRule:
        """``host``, ``*.domain``, ``address``, ``network/bits``, each with ``:port`` or not."""
        text = entry.strip()
        target, port = text, None
        if text.startswith("["):  # [v6]:port or [v6]
            inner, _, rest = text[1:].partition("]")
            target = inner
            if rest.startswith(":"):
                port = _port(rest[1:], entry)
        elif text.count(":") == 1:  # host:port, v4:port, v4/bits:port
            target, raw_port = text.split(":")
            port = _port(raw_port, entry)
        try:
            return cls(text, network=ipaddress.ip_network(target, strict=False), port=port)
        except ValueError:
            pass
        host = target.lower().rstrip(".")
        if not host or any(c in host for c in "/ @"):
            raise ValueError(f"not a host, address or network: {entry!r}")
        return cls(text, host=host, port=port)

    def matches(self, host: str, port: int, addresses: Iterable[Address]) -> bool:
        """Whether a request to ``host:port`` (resolved to ``addresses``) falls under this rule."""
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            if self.host.startswith("*."):
                return host.endswith(self.host[1:])
            return host == self.host
        assert self.network is not None
        return any(_unmapped(address) in self.network for address in addresses)


_URL_PREFIX = re.compile(r"^https?://[^/\s?#]+(?:[/?#]\S*)?$")


@dataclass(frozen=True)
class UrlRewrite:
    """``FROM=TO``: a URL that starts with the prefix ``source`` starts with ``target``."""

    source: str
    target: str

    @classmethod
    def parse(cls, entry: str) -> UrlRewrite:
        """``https://api.example.com=http://127.0.0.1:8081`` (each an http(s) URL prefix)."""
        found = re.match(r"^\s*(https?://\S+?)=(https?://\S+?)\s*$", entry)
        if not found or not all(_URL_PREFIX.match(part) for part in found.groups()):
            raise ValueError(
                f"not FROM=TO with two http(s) URL prefixes: {entry!r} "
                "(e.g. https://httpbin.org=http://127.0.0.1:8081)"
            )
        return cls(found.group(1), found.group(2))

    def apply(self, url: str) -> str | None:
        """``url`` rewritten, or ``None`` when it does not start with ``source``."""
        if not url.startswith(self.source):
            return None
        rest = url[len(self.source) :]
        # A prefix that ends inside the host or port matches only that host and port.
        if rest and not self.source.endswith("/") and rest[0] not in "/?#":
            return None
        return self.target + rest


def _port(raw: str, entry: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"bad port in {entry!r}")
    return int(raw)


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _rules(entries: Iterable[str], source: str) -> list[OutboundRule]:
    rules = []
    for entry in entries:
        try:
            rules.append(OutboundRule.parse(entry))
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    return rules


class OutboundPolicy:
    """Decides whether a plugin may send a request to a URL (see the module doc)."""

    def __init__(
        self,
        allow: Iterable[OutboundRule] = (),
        deny: Iterable[OutboundRule] = (),
        builtin_deny: Iterable[OutboundRule] = (),
        rewrites: Iterable[UrlRewrite] = (),
    ) -> None:
        self.allow = list(allow)
        self.deny = list(deny)
        self.builtin_deny = list(builtin_deny)
        self.rewrites = list(rewrites)

    def rewrite(self, url: str) -> str:
        """``url`` as ``MIMIR_HTTP_REWRITE`` maps it (the first matching prefix wins)."""
        for rule in self.rewrites:
            changed = rule.apply(url)
            if changed is not None:
                return changed
        return url

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        """The policy of ``settings``: its allow and deny lists plus the built-in denials."""
        builtin = [*_LINK_LOCAL_AND_METADATA]
        builtin += [f"{_bracket(net)}:{settings.port}" for net in _LOOPBACK]
        builtin += [f"{_bracket(net)}:6379" for net in _LOOPBACK]
        redis = urlsplit(settings.redis_url)
        if redis.scheme in {"redis", "rediss"} and redis.hostname:
            builtin.append(f"{_bracket(redis.hostname)}:{redis.port or 6379}")
        rewrites = []
        for entry in settings.http_rewrite:
            try:
                rewrites.append(UrlRewrite.parse(entry))
            except ValueError as exc:
                raise ValueError(f"MIMIR_HTTP_REWRITE: {exc}") from None
        return cls(
            allow=_rules(settings.http_allow, "MIMIR_HTTP_ALLOW"),
            deny=_rules(settings.http_deny, "MIMIR_HTTP_DENY"),
            builtin_deny=_rules(builtin, "built-in denials"),
            rewrites=rewrites,
        )

    async def check(self, url: str) -> None:
        """Raise :class:`OutboundRefusedError` unless a request to ``url`` is allowed."""
        parts = urlsplit(str(url))
        host = (parts.hostname or "").lower().rstrip(".")
        if parts.scheme not in _DEFAULT_PORTS or not host:
            raise OutboundRefusedError(f"only http and https URLs with a host may be called: {url}")
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise OutboundRefusedError(f"bad port in {url}") from None
        addresses = await _resolve(host, port)
        shown = f"{host}:{port}"
        for rule in self.builtin_deny:
            if await _denies(rule, host, port, addresses):
                raise OutboundRefusedError(
                    f"outbound call to {shown} refused: it is a link-local, metadata, Redis or "
                    f"this API's own address ({rule.text}); plugins may never reach those"
                )
        for rule in self.deny:
            if await _denies(rule, host, port, addresses):
                raise OutboundRefusedError(
                    f"outbound call to {shown} refused by MIMIR_HTTP_DENY ({rule.text})"
                )
        if self.allow and not any(rule.matches(host, port, addresses) for rule in self.allow):
            raise OutboundRefusedError(
                f"outbound call to {shown} refused: not in MIMIR_HTTP_ALLOW "
                f"({', '.join(rule.text for rule in self.allow)})"
            )

    def event_hooks(self, url: str) -> dict[str, list[Callable[..., Any]]]:
        """httpx ``event_hooks`` that rewrite (``MIMIR_HTTP_REWRITE``) and check every
        request a client sends (redirects too) and refuse a redirect that changes the
        scheme of ``url`` (as rewritten)."""
        scheme = urlsplit(self.rewrite(url)).scheme

        async def check_request(request: httpx.Request) -> None:
            target = str(request.url)
            rewritten = self.rewrite(target)
            if rewritten != target:
                import httpx

                new_url = httpx.URL(rewritten)
                request.url = new_url
                request.headers["Host"] = new_url.netloc.decode("ascii")
                logger.info(
                    "outbound %s rewritten to %s (MIMIR_HTTP_REWRITE)",
                    printable(target.split("?")[0]),
                    printable(rewritten.split("?")[0]),
                )
                target = rewritten
            if urlsplit(target).scheme != scheme:
                raise OutboundRefusedError(
                    f"redirect from {scheme}:// to {target.split('?')[0]} refused "
                    "(a redirect may not change the scheme)"
                )
            await self.check(target)

        return {"request": [check_request]}

    def client(self, url: str, **options: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` for plugin calls starting at ``url``: every request
        rewritten and checked (:meth:`event_hooks`) and, when tracing is on, sent in a
        client span with the ``traceparent`` header (see :mod:`mimir.core.telemetry`).
        ``options`` go to the client (timeout, follow_redirects …)."""
        import httpx

        if telemetry.tracing_enabled():
            options.setdefault("transport", _traced_transport(httpx.AsyncHTTPTransport()))
        return httpx.AsyncClient(event_hooks=self.event_hooks(url), **options)


def _traced_transport(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
    """``inner`` sending each request in an HTTP client span, ``traceparent`` injected."""
    import httpx
    from opentelemetry.trace import SpanKind, Status, StatusCode

    class TracedTransport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            url = request.url
            with telemetry.span(
                request.method,
                kind=SpanKind.CLIENT,
                attributes=lambda: {
                    "http.request.method": request.method,
                    "url.full": str(url.copy_with(query=None, fragment=None)),
                    "server.address": url.host,
                    "server.port": url.port or _DEFAULT_PORTS.get(url.scheme, 0),
                },
            ) as current:
                telemetry.inject(request.headers)
                response = await inner.handle_async_request(request)
                if current.is_recording():
                    current.set_attribute("http.response.status_code", response.status_code)
                    if response.status_code >= 500:
                        current.set_status(Status(StatusCode.ERROR))
                return response

        async def aclose(self) -> None:
            await inner.aclose()

    return TracedTransport()


async def _denies(rule: OutboundRule, host: str, port: int, addresses: list[Address]) -> bool:
    """A deny rule also covers the addresses its host name resolves to (``redis:6379``
    denies the Redis container's address on 6379), when it names that port."""
    if rule.matches(host, port, addresses):
        return True
    if rule.host is None or rule.host.startswith("*.") or rule.port != port or not addresses:
        return False
    named = {_unmapped(address) for address in await _resolve(rule.host, port)}
    return any(_unmapped(address) in named for address in addresses)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _resolve(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), _RESOLVE_TIMEOUT
        )
    except (OSError, TimeoutError):
        return []  # the connection will fail on its own, with the resolver's message
    addresses: list[Address] = []
    for *_, sockaddr in infos:
        try:
            addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
        except ValueError:
            continue
    return addresses


@functools.lru_cache(maxsize=1)
def default_outbound_policy() -> OutboundPolicy:
    """The process's policy, from the environment (read once)."""
    return OutboundPolicy.from_settings(Settings.from_env())
