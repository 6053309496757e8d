"""Names operators know workers by: the cluster's own (``worker-2``), not pids.

A worker reports ``worker-<hostname>-<pid>``. A local cluster records each worker process
by pid under a name (``worker-1``); a Docker worker's hostname is its container's name
(``mimir-worker-1``). Without either (an API-only profile), the name is the worker id
without its ``worker-`` prefix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mimir.app.cluster.instances import Instance

__all__ = ["worker_labels"]


def worker_labels(
    workers: Iterable[dict[str, Any]], instances: Iterable[Instance], project: str = ""
) -> dict[str, str]:
    """Worker id → the name to show, unique per worker."""
    by_pid = {i.ident: i.name for i in instances if i.kind == "worker"}
    by_name = {i.name for i in instances if i.kind == "worker"}
    labels: dict[str, str] = {}
    for worker in workers:
        worker_id = str(worker.get("worker_id", ""))
        hostname = str(worker.get("hostname") or "")
        name = by_pid.get(str(worker.get("pid", "")))
        if name is None and hostname in by_name:
            name = hostname.removeprefix(f"{project}-") if project else hostname
        labels[worker_id] = name or worker_id.removeprefix("worker-")
    seen: dict[str, int] = {}
    for label in labels.values():  # two workers under one name: tell them apart
        seen[label] = seen.get(label, 0) + 1
    for worker_id, label in list(labels.items()):
        if seen[label] > 1:
            labels[worker_id] = f"{label} ({worker_id.rsplit('-', 1)[-1]})"
    return labels
