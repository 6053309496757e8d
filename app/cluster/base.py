"""The cluster-control protocol shared by the Docker and local-process backends.

Exceptions::

    ClusterError                 anything an operator must be told about, with a clear message
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from mimir.core.pools import ClusterFile

__all__ = [
    "BackendKind",
    "ClusterBackend",
    "ClusterError",
    "ClusterStatus",
    "LogLine",
    "Progress",
    "ServiceStats",
    "ServiceStatus",
]

#: Progress callback for long operations: ``progress(step, message)``, e.g.
#: ``progress("build", "worker image: step 3/9")``. Called from the backend's task.
Progress = Callable[[str, str], None]

#: ``prometheus``: the monitoring service of ``up --monitoring`` (:mod:`.monitoring`).
ServiceKind = Literal["redis", "server", "worker", "prometheus"]
#: Which kind of backend drives a cluster.
BackendKind = Literal["docker", "local", "swarm"]


class ClusterError(Exception):
    """A cluster operation failed; ``str(err)`` is meant for the operator.

    ``detail`` carries supporting text such as the failing container's last log lines.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class ServiceStatus:
    """One service of a cluster: redis, server, or one row per worker pool (``worker`` for the
    pool ``default``, ``worker-<pool>`` for the others)."""

    name: str
    kind: ServiceKind
    #: "running", "starting", "stopped", "exited", "missing" …
    state: str
    #: "healthy", "unhealthy", "starting" or "" when the service has no health check.
    health: str = ""
    replicas: int = 1
    #: Published ports, e.g. {"8080/tcp": "127.0.0.1:8080"}.
    ports: dict[str, str] = field(default_factory=dict)
    #: The pool of a worker row (``None`` for redis and server).
    pool: str | None = None
    #: Replicas the pool should run (the last ``up``/``scale``), when the backend knows.
    wanted: int | None = None
    #: Swarm: running tasks per node (node host name → count); empty elsewhere.
    nodes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterStatus:
    backend: BackendKind
    project: str
    services: list[ServiceStatus]
    #: URL at which the cluster's API answers, when it runs.
    api_url: str | None = None

    @property
    def running(self) -> bool:
        return any(s.state == "running" for s in self.services)


@dataclass(frozen=True)
class ServiceStats:
    """Resource use of one container or process at one moment."""

    name: str
    kind: ServiceKind
    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int | None = None
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0


@dataclass(frozen=True)
class LogLine:
    service: str
    line: str
    timestamp: float | None = None


class ClusterBackend(Protocol):
    """What the CLI and the console drive. Every method is a coroutine (or async iterator);
    backends offload blocking SDK/process calls to threads so the caller's loop never blocks."""

    project: str

    @property
    def backend(self) -> BackendKind:
        """Which kind of backend this is (read-only: each class fixes its own)."""
        ...

    async def up(
        self,
        workers: int | None = 2,
        progress: Progress | None = None,
        *,
        cluster: ClusterFile | None = None,
    ) -> ClusterStatus:
        """Start redis, server and the pools' workers; return once /health answers and the
        workers have registered, else raise :class:`ClusterError` with the last log lines.

        ``cluster`` declares the pools (default: the one the cluster was started with, else
        :func:`~mimir.core.pools.default_cluster`); ``workers`` sizes the pool ``default``
        (``None``: each pool starts its ``initial_replicas``). The backend remembers the
        pools and passes them to the server (``MIMIR_POOLS``, ``MIMIR_CLUSTER_BACKEND``,
        ``MIMIR_PROJECT``)."""
        ...

    async def scale(
        self,
        workers: int,
        progress: Progress | None = None,
        *,
        pool: str = "default",
        wait: bool = True,
    ) -> ClusterStatus:
        """Run exactly ``workers`` workers in ``pool``, leaving the other pools alone; scaling
        down stops workers gracefully (SIGTERM). An unknown pool is a :class:`ClusterError`
        naming the cluster's pools. ``wait=False`` returns once new workers are started,
        before their first heartbeat (``mimir cluster scale --no-wait``, the autoscaler)."""
        ...

    async def down(self, progress: Progress | None = None) -> None:
        """Stop and remove the services; keep the data (volumes, state dir)."""
        ...

    async def clean(self, progress: Progress | None = None) -> None:
        """Like :meth:`down`, and remove the data too."""
        ...

    async def restart(self, service: str, progress: Progress | None = None) -> ClusterStatus: ...

    async def status(self) -> ClusterStatus: ...

    def logs(
        self, services: list[str] | None = None, follow: bool = False, tail: int = 100
    ) -> AsyncIterator[LogLine]:
        """Log lines of the given services (all when ``None``), merged."""
        ...

    async def stats(self) -> list[ServiceStats]: ...

    async def build(self, progress: Progress | None = None) -> None:
        """Build what the backend runs (images; a no-op for local processes)."""
        ...
