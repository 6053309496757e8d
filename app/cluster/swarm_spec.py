"""Swarm service specs from the topology: kwargs for docker-py's ``client.services.create``.

Pure (Docker SDK types only, no engine): the Swarm backend creates its services from
:func:`service_specs` and :func:`registry_spec`. Every service is ``<project>_<service>``
on the overlay network ``<project>_mimir-network``, reachable by its topology aliases.
"""

from __future__ import annotations

from typing import Any

from mimir.app.cluster.topology import Topology

__all__ = [
    "REGISTRY_PORT",
    "registry_spec",
    "service_specs",
    "swarm_worker_hostname",
]

#: The port the in-swarm registry listens on and publishes (host mode).
REGISTRY_PORT = 5000


def swarm_worker_hostname(pool: str) -> str:
    """A worker task's hostname template: ``<pool>-{{.Task.Slot}}-{{.Task.ID}}``.

    Unique per task (a task rescheduled by a drain gets a new ID while the old one may
    still be draining): the worker id is ``worker-<hostname>-<pid>`` and pid is 1 in
    every container."""
    return f"{pool}-{{{{.Task.Slot}}}}-{{{{.Task.ID}}}}"


def service_specs(
    topology: Topology,
    *,
    images: dict[str, str],
    secrets: dict[str, str],
    data_constraint: str,
    endpoint_mode: str = "dnsrr",
    publish_mode: str = "host",
    grace: float,
) -> dict[str, dict[str, Any]]:
    """Service name → kwargs for ``client.services.create`` (body follows)."""
    raise NotImplementedError("swarm_spec.service_specs: not written yet")


def registry_spec(
    topology: Topology,
    *,
    image: str,
    data_constraint: str,
    publish_mode: str = "host",
    port: int = REGISTRY_PORT,
) -> dict[str, Any]:
    """Kwargs for ``client.services.create`` of ``<project>_registry`` (body follows)."""
    raise NotImplementedError("swarm_spec.registry_spec: not written yet")
