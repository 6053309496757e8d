"""The one way this project makes a Redis client: :func:`connect`.

Server, workers and command-line clients all use it, so they share one decoding rule
(``decode_responses``: every reply is ``str``) and one retry rule: a command that finds
its connection broken (Redis restarted, a pooled connection closed by the server) is sent
again on a new connection, a few times with a short backoff; never one that Redis refused
for want of the right password. A Redis that stays away
surfaces as :class:`redis.exceptions.ConnectionError`, which the queue turns into
:class:`~mimir.core.queue.errors.QueueUnavailableError` (producer side) or lets through
to the worker (consumer side, retried with backoff there).

``redis+sentinel://[:password@]host1:26379,host2:26379/service_name/db`` asks the
Sentinels for the primary of ``service_name`` on every new connection
(:func:`parse_sentinel_url`), so clients follow a failover: a connection to the demoted
primary turns its ``READONLY`` reply into a connection error and reconnects to the new
one; while the Sentinels elect, ``MasterNotFoundError`` (a connection error) is retried
like any outage. The password, if any, is the data nodes' (``AUTH`` on the primary),
never the Sentinels'.

``redis+cluster://[[user]:password@]host:port[,host:port…][/0]`` gives a Redis Cluster
client (redis-py's asyncio ``RedisCluster``, duck-typed as ``Redis``;
:func:`parse_cluster_url`): the queue's keys must then share one slot (a hash-tagged
prefix, see :mod:`mimir.core.queue.keys`), ``min_replicas`` is refused (``WAIT`` would
not follow the writes on their connection), and ``pool_timeout`` does not apply (a full
per-node pool fails at once).

When the URL carries no password, the contents of the file named by
``MIMIR_REDIS_PASSWORD_FILE`` are used (:func:`redis_password_from_file`): for
``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://`` and the data nodes of
``redis+sentinel://``. The
password so read is handed to the client only; it never enters a URL, so no log line or
redacted URL can show it.

``min_replicas`` (``MIMIR_REDIS_MIN_REPLICAS``) makes the queue's writes that must
survive a failover (enqueue, a job's outcome) wait with ``WAIT`` for that many replicas:
see :func:`replication_wait` and :class:`NotReplicatedError`.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from mimir.core.queue.errors import is_auth_error
from mimir.core.secretfiles import SecretFileError, read_secret_file

T = TypeVar("T")

__all__ = [
    "BLOCK_SLICE",
    "CLUSTER_SCHEME",
    "PASSWORD_FILE_ENV",
    "SENTINEL_SCHEME",
    "ClusterURL",
    "NotReplicatedError",
    "RedisPasswordFileError",
    "SentinelURL",
    "check_redis_password_file",
    "connect",
    "is_cluster",
    "is_cluster_url",
    "parse_cluster_url",
    "parse_sentinel_url",
    "redis_password",
    "redis_password_from_file",
    "replication_wait",
    "resolve_primary_url",
]

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
#: Names the file holding the Redis password (a Docker/Kubernetes secret).
PASSWORD_FILE_ENV = "MIMIR_REDIS_PASSWORD_FILE"


class RedisPasswordFileError(SecretFileError):
    """``MIMIR_REDIS_PASSWORD_FILE`` names a file that cannot be read or is empty. A
    ``ValueError``, so the server, workers and the command line stop at startup with
    the message (never a traceback)."""


def redis_password_from_file(env: Mapping[str, str] = os.environ) -> str | None:
    """The Redis password held in the file ``MIMIR_REDIS_PASSWORD_FILE`` names
    (:func:`~mimir.core.secretfiles.read_secret_file`: whitespace stripped), ``None`` when
    the variable is unset or empty. Raises :class:`RedisPasswordFileError`, naming the
    variable and the path (never the contents), when the file cannot be read or holds
    nothing."""
    raw = (env.get(PASSWORD_FILE_ENV) or "").strip()
    if not raw:
        return None
    try:
        return read_secret_file(PASSWORD_FILE_ENV, raw)
    except SecretFileError as exc:
        raise RedisPasswordFileError(str(exc)) from None


def check_redis_password_file(env: Mapping[str, str] = os.environ) -> None:
    """Raise :class:`RedisPasswordFileError` when ``MIMIR_REDIS_PASSWORD_FILE`` is set
    and names a file that cannot be read or is empty: what the commands that connect to
    Redis (server, worker, enqueue) check at startup. Other commands never read it, so a
    stale variable does not stop them."""
    redis_password_from_file(env)


def redis_password(url: str, env: Mapping[str, str] = os.environ) -> str | None:
    """The password a client of ``url`` authenticates with: the URL's own, else the
    contents of ``MIMIR_REDIS_PASSWORD_FILE`` (:func:`redis_password_from_file`), else
    ``None``."""
    own = _url_password(url)
    return own if own is not None else redis_password_from_file(env)


def _url_password(url: str) -> str | None:
    """The password written in ``url`` (any form :func:`connect` takes), or ``None``."""
    if "://" not in url:
        return None
    sentinel = parse_sentinel_url(url)
    if sentinel is not None:
        return sentinel.password or None
    cluster = parse_cluster_url(url)
    if cluster is not None:
        return cluster.password or None
    try:
        password = parse_url(url).get("password")
    except ValueError:
        return None
    return str(password) if password else None


class NotReplicatedError(RedisConnectionError):
    """A write reached the primary but fewer replicas than required acknowledged it in
    time (``WAIT``). The write may still exist on the primary (and reach the replicas
    later) or be lost in a failover: retrying it must be safe (an enqueue with an
    idempotency key, a job outcome fenced by its attempt). A connection error, so every
    caller treats it as Redis being unavailable (503 on the API, retried by workers)."""

    def __init__(self, action: str, acknowledged: int, required: int, timeout_ms: int) -> None:
        super().__init__(
            f"{action}: only {acknowledged} of {required} required replica(s) acknowledged "
            f"the write within {timeout_ms} ms (MIMIR_REDIS_MIN_REPLICAS); it is on the "
            "primary, and may reach a replica later or be lost if the primary fails"
        )
        self.acknowledged = acknowledged
        self.required = required


@dataclass(frozen=True)
class SentinelURL:
    """The parts of a ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def _hosts_and_auth(
    netloc: str, default_port: int, scheme: str, what: str
) -> tuple[tuple[tuple[str, int], ...], str | None, str | None]:
    """``[[user]:password@]host[:port][,host[:port]…]`` (an IPv6 host in brackets) as
    ``(hosts, username, password)``, for the multi-host URL schemes."""
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
        if not has_password:  # "secret@host": a password alone, as redis:// reads it
            username, password = None, unquote(user)
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [::1]:26379
            host, _, port = item[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            hosts.append((host, int(port) if port else default_port))
        except ValueError:
            raise ValueError(f"bad {what} address {item!r} in a {scheme} URL") from None
        if not host:
            raise ValueError(f"bad {what} address {item!r} in a {scheme} URL")
    return tuple(hosts), username, password


def parse_sentinel_url(url: str) -> SentinelURL | None:
    """``redis+sentinel://[[user]:password@]host1:26379,host2:26379/service_name[/db]``
    parsed, ``None`` for any other URL; raises ``ValueError`` on a malformed one."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != SENTINEL_SCHEME:
        return None
    rest = rest.partition("?")[0]
    netloc, _, path = rest.partition("/")
    sentinels, username, password = _hosts_and_auth(netloc, 26379, SENTINEL_SCHEME, "Sentinel")
    parts = [part for part in path.split("/") if part]
    if not sentinels or not parts:
        raise ValueError(f"a {SENTINEL_SCHEME} URL needs host:port[,host:port…]/service_name[/db]")
    try:
        db = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ValueError(f"bad database number {parts[1]!r} in a {SENTINEL_SCHEME} URL") from None
    return SentinelURL(sentinels, unquote(parts[0]), db, username, password)


@dataclass(frozen=True)
class ClusterURL:
    """The parts of a ``redis+cluster://`` URL: the nodes to discover the cluster from."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` is a ``redis+cluster://`` URL."""
    scheme, sep, _ = url.strip().partition("://")
    return bool(sep) and scheme.lower() == CLUSTER_SCHEME


def parse_cluster_url(url: str) -> ClusterURL | None:
    """``redis+cluster://[[user]:password@]host:port[,host:port…][/0]`` parsed, ``None``
    for any other URL; raises ``ValueError`` on a malformed one, and for a database
    other than 0 (a Redis Cluster has only database 0)."""
    if not is_cluster_url(url):
        return None
    rest = url.strip().partition("://")[2].partition("?")[0]
    netloc, _, path = rest.partition("/")
    nodes, username, password = _hosts_and_auth(netloc, 6379, CLUSTER_SCHEME, "node")
    if not nodes:
        raise ValueError(f"a {CLUSTER_SCHEME} URL needs host:port[,host:port…]")
    parts = [part for part in path.split("/") if part]
    if len(parts) > 1 or (parts and parts[0] != "0"):
        raise ValueError(
            f"a {CLUSTER_SCHEME} URL takes no database but 0 (a Redis Cluster has only "
            f"database 0), got /{'/'.join(parts)}"
        )
    return ClusterURL(nodes, username, password)


#: Why ``MIMIR_REDIS_MIN_REPLICAS`` is refused with a ``redis+cluster://`` URL.
MIN_REPLICAS_ON_CLUSTER = (
    "MIMIR_REDIS_MIN_REPLICAS is not supported with a redis+cluster:// URL: WAIT counts "
    "the replicas that acknowledged the writes made on the same connection, and a Redis "
    "Cluster client sends WAIT on a connection of its own (another node, or another "
    "connection to the same one), so it would acknowledge nothing; leave it at 0 (each "
    "primary's replicas still take over on failure, without the WAIT guarantee)"
)


class _ClusterPubSub(ClusterPubSub):
    """redis-py's cluster pub/sub, which picks its node from the client's slot map: a
    subscription made before the client's first command (the server's listener has no
    other) finds that map empty (``KeyError``); the map is loaded first here."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.cluster.initialize()  # once: a no-op when the map is loaded
        return await super().execute_command(*args, **kwargs)


class _RedisCluster(RedisCluster):
    """:class:`RedisCluster` whose :meth:`pubsub` works before any other command."""

    def pubsub(
        self,
        node: ClusterNode | None = None,
        host: str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> ClusterPubSub:
        return _ClusterPubSub(self, node=node, host=host, port=port, **kwargs)


def is_cluster(redis: Any) -> bool:
    """Whether ``redis`` is a Redis Cluster client (:func:`connect` of a
    ``redis+cluster://`` URL)."""
    return isinstance(redis, RedisCluster)


#: Replicas each client's durable writes wait for, and how long: see replication_wait.
_WAITS: weakref.WeakKeyDictionary[Redis, tuple[int, int]] = weakref.WeakKeyDictionary()


def replication_wait(redis: Redis) -> tuple[int, int]:
    """``(replicas, timeout_ms)`` the queue's durable writes on ``redis`` wait for with
    ``WAIT`` (``(0, 0)``: they don't wait), as :func:`connect` was told."""
    return _WAITS.get(redis, (0, 0))


#: Longest single blocking call the queue makes (longer waits loop), so the default
#: socket timeout below never cuts one short.
BLOCK_SLICE = 5.0


def connect(
    url: str,
    *,
    max_connections: int | None = None,
    socket_timeout: float = BLOCK_SLICE + 10,
    socket_connect_timeout: float = 5.0,
    pool_timeout: float | None = None,
    min_replicas: int = 0,
    wait_timeout_ms: int = 2000,
    **options: Any,
) -> Redis:
    """A ``redis.asyncio.Redis`` for ``url`` (``redis://…`` or ``host:port``); no
    connection is made until the first command.

    Replies are decoded to ``str``; every call has a socket timeout; a connection broken
    under a command is replaced and the command retried (3 times, 50 ms to 0.5 s apart).
    With ``max_connections`` and ``pool_timeout``, a command finding every connection
    busy waits up to ``pool_timeout`` seconds for one (instead of failing at once).

    A ``redis+sentinel://`` URL gives a client of the service's current primary (see the
    module's docstring). ``min_replicas > 0``: the queue's durable writes on this client
    wait up to ``wait_timeout_ms`` for that many replicas (:func:`replication_wait`).
    """
    if min_replicas > 0 and is_cluster_url(url):
        raise ValueError(MIN_REPLICAS_ON_CLUSTER)
    client = _connect(
        url, max_connections, socket_timeout, socket_connect_timeout, pool_timeout, options
    )
    if min_replicas > 0:
        _WAITS[client] = (int(min_replicas), max(1, int(wait_timeout_ms)))
    return client


class _NoAuthRetry(Retry):
    """redis-py's retry, less an authentication failure: redis-py's
    ``AuthenticationError`` is a ``ConnectionError``, so a missing or wrong password was
    tried again and again (3.5 s of backoff on each command, a health check timing out
    before the reason came), though no new connection mends it."""

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def retryable(error: Exception) -> bool:
            return not is_auth_error(error) and (is_retryable is None or is_retryable(error))

        return await super().call_with_retry(do, fail, retryable, with_failure_count)


def _connect(
    url: str,
    max_connections: int | None,
    socket_timeout: float,
    socket_connect_timeout: float,
    pool_timeout: float | None,
    options: dict[str, Any],
) -> Redis:
    if "://" not in url:
        url = f"redis://{url}"
    options.setdefault("decode_responses", True)
    options.setdefault("health_check_interval", 30)
    options.setdefault("retry", _NoAuthRetry(ExponentialBackoff(cap=0.5, base=0.05), retries=3))
    options.setdefault("retry_on_error", [RedisConnectionError])
    sentinel = parse_sentinel_url(url)
    if "password" not in options and _url_password(url) is None:
        file_password = redis_password_from_file()
        if file_password is not None:  # given to the client only, never put in the URL
            options["password"] = file_password
    cluster = parse_cluster_url(url)
    if cluster is not None:
        if cluster.password is not None:
            options["password"] = cluster.password
        # Duck-typed as Redis: every command the queue sends works on both (the
        # differences are handled where they matter: scripts.Call.queue_on, TIME).
        client: Any = _RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],
            username=cluster.username,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            max_connections=max(max_connections or 100, 16),
            **options,
        )
        return cast(Redis, client)
    if sentinel is not None:
        manager = Sentinel(
            list(sentinel.sentinels),
            sentinel_kwargs={
                "socket_timeout": socket_connect_timeout,
                "socket_connect_timeout": socket_connect_timeout,
                "decode_responses": True,
            },
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            db=sentinel.db,
            username=sentinel.username,
            **{"password": sentinel.password, **options},
        )
        if max_connections is not None:
            return manager.master_for(sentinel.service, max_connections=max_connections)
        return manager.master_for(sentinel.service)
    if max_connections is not None and pool_timeout is not None:
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            **options,
        )
        return Redis.from_pool(pool)
    return Redis.from_url(
        url,
        max_connections=max_connections,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        **options,
    )


def resolve_primary_url(url: str, *, timeout: float = 5.0) -> str:
    """``url`` itself, or for a ``redis+sentinel://`` URL a ``redis://`` URL of the
    service's current primary (with the same password and db), asked of the Sentinels
    now — for the few callers that need one plain connection (a backup's ``SYNC``).
    Raises ``redis.exceptions.MasterNotFoundError`` when no Sentinel names a primary."""
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return url
    from urllib.parse import quote

    from redis.sentinel import Sentinel as SyncSentinel

    manager = SyncSentinel(
        list(sentinel.sentinels),
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
    )
    try:
        host, port = manager.discover_master(sentinel.service)
    finally:
        for node in manager.sentinels:
            node.close()
    auth = ""
    if sentinel.password is not None:
        auth = f"{quote(sentinel.username or '', safe='')}:{quote(sentinel.password, safe='')}@"
    shown_host = f"[{host}]" if ":" in host else host
    return f"redis://{auth}{shown_host}:{port}/{sentinel.db}"
