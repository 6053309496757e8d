"""The one way this project makes a Redis client: :func:`connect`.

Server, workers and command-line clients all use it, so they share one decoding rule
(``decode_responses``: every reply is ``str``) and one retry rule: a command that finds
its connection broken (Redis restarted, a pooled connection closed by the server) is sent
again on a new connection, a few times with a short backoff. A Redis that stays away
surfaces as :class:`redis.exceptions.ConnectionError`, which the queue turns into
:class:`~mimir.core.queue.errors.QueueUnavailableError` (producer side) or lets through
to the worker (consumer side, retried with backoff there).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["BLOCK_SLICE", "connect"]

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
    **options: Any,
) -> Redis:
    """A ``redis.asyncio.Redis`` for ``url`` (``redis://…`` or ``host:port``); no
    connection is made until the first command.

    Replies are decoded to ``str``; every call has a socket timeout; a connection broken
    under a command is replaced and the command retried (3 times, 50 ms to 0.5 s apart).
    With ``max_connections`` and ``pool_timeout``, a command finding every connection
    busy waits up to ``pool_timeout`` seconds for one (instead of failing at once).
    """
    if "://" not in url:
        url = f"redis://{url}"
    options.setdefault("decode_responses", True)
    options.setdefault("health_check_interval", 30)
    options.setdefault("retry", Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3))
    options.setdefault("retry_on_error", [RedisConnectionError])
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
