"""``packaging/docker-stack.yml``: the topology as a ``docker stack deploy`` file (compose 3.8).

For people who deploy on a swarm by hand; ``mimir cluster up --backend swarm`` creates the
same services through the API (:mod:`.swarm_spec`). What differs from the compose files
(file format 2.4, one engine):

* ``deploy:`` holds what Swarm applies: replicas, placement (Redis and the backend on the
  node labelled ``io.mimir.data=true``, where their volumes are; workers spread over the
  nodes), CPU and memory limits, the restart and update policies, and
  ``endpoint_mode: dnsrr`` (no VIP: it needs IPVS, which not every kernel has). No
  ``mem_limit``, ``cpus``, ``restart`` or ``depends_on``: ``stack deploy`` ignores them.
  File format 3.8 has no pids limit (the API backend sets one).
* The API's port is published in host mode (long syntax), on every address of the node
  that runs the backend: Swarm cannot bind a published port to one address (moby#32299),
  which is why the API always has a token here.
* The API token and the Redis password are external Docker secrets (``mimir_api_token``,
  ``mimir_redis_password``) mounted in ``/run/secrets`` readable by the service's user only;
  no secret is in the file or in any environment.
* Images come from a registry every node can pull from: ``${MIMIR_REGISTRY:-127.0.0.1:5000}``
  (``mimir cluster build --push``), Redis's too (``${REDIS_IMAGE:-redis:7-alpine}`` there):
  no node pulls from docker.io.
* No Prometheus: its configuration is generated per cluster (``mimir cluster up
  --monitoring`` on the Docker or local backend).
"""

from __future__ import annotations

from typing import Any

from mimir.app.cluster.topology import (
    IMAGES,
    LABEL_NETWORK,
    LABEL_VOLUME,
    MIMIR_UID,
    PROMETHEUS,
    PROMETHEUS_CONFIG_VOLUME,
    REDIS_GID,
    REDIS_UID,
    SECRETS_VOLUME,
    ServiceSpec,
    Topology,
    build_topology,
    parse_memory,
    swarm_storage,
)
from mimir.core.pools import DEFAULT_POOL, ClusterFile

__all__ = ["DATA_LABEL", "REGISTRY_FROM_ENV", "STACK_USAGE", "stack_document"]

#: The node label that pins Redis and the backend (and their volumes).
DATA_LABEL = "io.mimir.data"
#: Where the nodes pull the project's images from.
REGISTRY_FROM_ENV = "${MIMIR_REGISTRY:-127.0.0.1:5000}"
#: The file's header lines (after the generated-file note).
STACK_USAGE = """\
# On a swarm manager, once (any long random values; the API has a token on a swarm):
#   openssl rand -hex 32 | tr -d '\\n' | docker secret create mimir_api_token -
#   openssl rand -hex 32 | tr -d '\\n' | docker secret create mimir_redis_password -
#   docker node update --label-add io.mimir.data=true NODE   # Redis's and the API's node
#   mimir cluster build --backend swarm --push --registry REGISTRY   # HOST:PORT every node
#                                                      # pulls from (and trusts)
#   (it pushes Redis as REGISTRY/redis:7-alpine, or as REGISTRY/mimir-aip:redis-latest
#   when it built that instead: then also set REDIS_IMAGE=mimir-aip:redis-latest)
# then: cd packaging && MIMIR_REGISTRY=REGISTRY docker stack deploy -c docker-stack.yml mimir
# The API answers on port 8080 of NODE (every address of it); scale with
#   docker service scale mimir_worker=N"""

_NOT_IN_STACK = {SECRETS_VOLUME, PROMETHEUS_CONFIG_VOLUME}


def _escaped(text: str) -> str:
    """``text`` as the container must see it: ``$`` escaped from compose's interpolation."""
    return text.replace("$", "$$")


def _image(spec: ServiceSpec) -> str:
    if spec.kind == "redis":
        # What ``build --push`` pushed: the Redis image by its own name, in the registry.
        return f"{REGISTRY_FROM_ENV}/${{REDIS_IMAGE:-{spec.image}}}"
    if spec.image in IMAGES.values():
        return f"{REGISTRY_FROM_ENV}/{spec.image}"
    return spec.image  # a pool's own image, pulled as it is


def _tmpfs_size(options: str) -> int | None:
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key == "size":
            return parse_memory(value)
    return None


def _service(spec: ServiceSpec, topology: Topology, grace: str) -> dict[str, Any]:
    labels = topology.labels(spec.name)
    del labels["io.mimir.project"]  # the stack's name is the project (com.docker.stack.namespace)
    uid, gid = (REDIS_UID, REDIS_GID) if spec.kind == "redis" else (MIMIR_UID, MIMIR_UID)
    out: dict[str, Any] = {
        "image": _image(spec),
        "command": [_escaped(part) for part in spec.command],
        "environment": {key: _escaped(value) for key, value in spec.environment.items()},
        "user": spec.user,
        "read_only": spec.read_only,
        "cap_drop": ["ALL"],
    }
    if spec.cap_add:
        out["cap_add"] = list(spec.cap_add)
    scratch, mounts = swarm_storage(spec)
    volumes: list[dict[str, Any]] = []
    for target, options in scratch.items():
        tmpfs: dict[str, Any] = {"type": "tmpfs", "target": target}
        size = _tmpfs_size(options)
        if size is not None:
            tmpfs["tmpfs"] = {"size": size}
        volumes.append(tmpfs)
    volumes += [
        {"type": "volume", "source": m.volume, "target": m.target, "read_only": m.read_only}
        for m in mounts
        if m.volume not in _NOT_IN_STACK
    ]
    out["volumes"] = volumes
    if spec.secrets:
        out["secrets"] = [
            {"source": name, "target": name, "uid": str(uid), "gid": str(gid), "mode": 0o400}
            for name in spec.secrets
        ]
    if spec.ports:
        out["ports"] = [
            {"target": target, "published": published, "protocol": "tcp", "mode": "host"}
            for target, (_, published) in spec.ports.items()
        ]
    if spec.healthcheck:
        out["healthcheck"] = {
            "test": [_escaped(part) for part in spec.healthcheck],
            "interval": "5s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "30s",
        }
    out["stop_grace_period"] = grace
    out["labels"] = dict(labels)
    deploy: dict[str, Any] = {
        "mode": "replicated",
        "replicas": initial_replicas(spec, topology),
        "endpoint_mode": "dnsrr",
        "labels": dict(labels),
    }
    if spec.pool is None:
        deploy["placement"] = {"constraints": [f"node.labels.{DATA_LABEL} == true"]}
    else:
        deploy["placement"] = {"preferences": [{"spread": "node.id"}]}
    limits: dict[str, Any] = {}
    if spec.cpus is not None:
        limits["cpus"] = f"{spec.cpus:g}"
    if spec.memory is not None:
        limits["memory"] = spec.memory
    if limits:
        deploy["resources"] = {"limits": limits}
    deploy["restart_policy"] = {"condition": "any", "delay": "2s"}
    deploy["update_config"] = {"parallelism": 1, "order": "stop-first", "failure_action": "pause"}
    out["deploy"] = deploy
    out["networks"] = [topology.network]
    return out


def initial_replicas(spec: ServiceSpec, topology: Topology) -> int:
    """Replicas a service starts with: 1, the default pool's ``workers``, or a pool's own
    ``initial_replicas`` (the stack file and the Swarm backend alike)."""
    if spec.pool is None:
        return 1
    if spec.pool == DEFAULT_POOL:
        return topology.workers
    return topology.cluster.pools[spec.pool].initial_replicas


def stack_document(cluster: ClusterFile | None = None) -> dict[str, Any]:
    """The compose 3.8 document for ``docker stack deploy`` of ``cluster``'s topology
    (default: one pool), the API published on 8080 with its token from the secret."""
    topology = build_topology(
        "mimir", workers=2, cluster=cluster, api_host="0.0.0.0", api_token="from-a-secret"
    )
    services = {
        name: _service(spec, topology, grace="45s" if spec.pool is not None else "30s")
        for name, spec in topology.services.items()
        if name != PROMETHEUS
    }
    secrets = sorted({name for spec in topology.services.values() for name in spec.secrets})
    used = {m.volume for spec in topology.services.values() for m in swarm_storage(spec)[1]}
    volumes = [name for name in topology.volumes if name in used and name not in _NOT_IN_STACK]
    return {
        "version": "3.8",
        "services": services,
        "volumes": {name: {"labels": {LABEL_VOLUME: name}} for name in volumes},
        "networks": {
            topology.network: {"driver": "overlay", "labels": {LABEL_NETWORK: topology.network}}
        },
        "secrets": {name: {"external": True} for name in secrets},
    }
