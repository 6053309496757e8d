"""One running piece of a cluster (a container or a process), as ``mimir cluster ps`` lists it."""

from __future__ import annotations

from dataclasses import dataclass

from mimir.app.cluster.base import ServiceKind

__all__ = ["Instance"]


@dataclass(frozen=True)
class Instance:
    """A container (Docker) or process (local) of one service."""

    #: ``redis``, ``backend``, ``worker-2`` …
    name: str
    #: The service it belongs to: ``redis``, ``backend`` or ``worker``.
    service: str
    kind: ServiceKind
    #: ``running``, ``exited``, ``created``, or ``stale`` (recorded, but the process is gone).
    state: str
    #: Container id (short) or process id.
    ident: str
    #: Health, exit code, image or command: whatever helps the operator most.
    detail: str = ""
    #: Docker: how often the engine restarted it, whether its last end was an OOM kill,
    #: and its last exit code (``mimir doctor`` reads them).
    restarts: int = 0
    oom_killed: bool = False
    exit_code: int | None = None
    #: Docker: when it last started (seconds since the epoch, the engine's clock).
    started_at: float | None = None
