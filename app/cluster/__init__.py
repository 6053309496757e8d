"""Cluster control: one protocol (:class:`ClusterBackend`), a Docker and a local-process backend.

Qt-free: driven by the ``mimir cluster`` CLI and by the console's Cluster panel.
"""

from __future__ import annotations

from mimir.app.cluster.base import (
    ClusterBackend,
    ClusterError,
    ClusterStatus,
    LogLine,
    Progress,
    ServiceStats,
    ServiceStatus,
)

__all__ = [
    "ClusterBackend",
    "ClusterError",
    "ClusterStatus",
    "LogLine",
    "Progress",
    "ServiceStats",
    "ServiceStatus",
]
