"""Write ``packaging/docker-compose.{distributed,unified,pools}.yml`` from :mod:`.topology`.

``docker-compose.pools.yml`` is the topology of the example cluster file
``packaging/mimir-cluster.example.yml`` (two pools: one service each, ``worker`` and
``worker-slow``).

The distributed and pools files carry the service ``prometheus`` in the compose profile
``monitoring`` (started only with ``docker-compose --profile monitoring up``), configured by
``packaging/prometheus/prometheus.yml``, generated here from the same topology.

The API token comes from the operator's environment (``MIMIR_API_TOKEN``, required: compose
refuses to start without it), never from the file, and no file passes ``--insecure``; the
monitoring profile's Prometheus scrapes ``/metrics`` with the same token, written at its
start to a file only its user can read.

It writes ``packaging/docker-stack.yml`` too: the same topology for ``docker stack deploy``
(:mod:`.stack`: compose 3.8, ``deploy:`` keys, Docker secrets).

``python -m mimir.app.cluster.compose [DIR]`` regenerates them; the tests check that the
files in the repository equal what this module renders, so they never drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from mimir.app.cluster.monitoring import prometheus_document
from mimir.app.cluster.stack import STACK_USAGE, stack_document
from mimir.app.cluster.topology import (
    API_PORT,
    IMAGES,
    LABEL_SERVICE,
    LABEL_VOLUME,
    MIMIR_UID,
    PROMETHEUS,
    Topology,
    build_topology,
    compose_file,
)
from mimir.core.pools import ClusterFile, load_cluster_file
from mimir.core.resources import packaging_dir

__all__ = [
    "EXAMPLE_CLUSTER_FILE",
    "PROMETHEUS_CONFIG",
    "compose_prometheus_config",
    "distributed_compose",
    "pools_compose",
    "render",
    "render_stack",
    "unified_compose",
    "write_compose_files",
]

#: The example cluster file ``docker-compose.pools.yml`` is generated from.
EXAMPLE_CLUSTER_FILE = "mimir-cluster.example.yml"
#: Prometheus's configuration for the compose files' profile ``monitoring``.
PROMETHEUS_CONFIG = "prometheus/prometheus.yml"

HEADER = """\
# Generated from mimir.app.cluster.topology by `python -m mimir.app.cluster.compose`;
# do not edit by hand (tests/cluster/test_topology.py checks it matches).
# {usage}
"""


#: The compose files' API token: compose substitutes the operator's ``MIMIR_API_TOKEN``,
#: and refuses to start without one (``${VAR:?message}``).
TOKEN_FROM_ENV = (
    "${MIMIR_API_TOKEN:?set MIMIR_API_TOKEN to a long random secret, "
    "e.g. the output of openssl rand -hex 32}"
)
#: Where the compose files' Prometheus writes the token at start (its user's only).
PROMETHEUS_TOKEN_FILE = "/tmp/mimir-api-token"


def _compose_topology(cluster: ClusterFile | None = None) -> Topology:
    return build_topology(
        "mimir", workers=2, cluster=cluster, monitoring=True, api_token=TOKEN_FROM_ENV
    )


def distributed_compose(cluster: ClusterFile | None = None) -> dict[str, Any]:
    """Redis, backend and a scalable worker service per pool of ``cluster`` (default: one,
    ``worker``; ``--scale worker=N``), and Prometheus in the profile ``monitoring``; the
    token from the environment (:data:`TOKEN_FROM_ENV`)."""
    document = compose_file(_compose_topology(cluster))
    prometheus = document["services"].get(PROMETHEUS)
    if prometheus is not None:
        # The scrape's bearer token: from the environment into a 0600 file, then Prometheus.
        prometheus["environment"] = {
            **prometheus.get("environment", {}),
            "MIMIR_API_TOKEN": TOKEN_FROM_ENV,
        }
        command = " ".join(prometheus["command"])
        prometheus["command"] = [
            "sh",
            "-c",
            f'umask 077 && printf %s "$$MIMIR_API_TOKEN" > {PROMETHEUS_TOKEN_FILE} '
            f"&& exec {command}",
        ]
    return document


def compose_prometheus_config() -> dict[str, Any]:
    """The scrape configuration the compose files mount (``packaging/prometheus/``): the
    API server's ``/metrics`` with the token the Prometheus service wrote at its start."""
    return prometheus_document(_compose_topology(), credentials_file=PROMETHEUS_TOKEN_FILE)


def pools_compose(directory: Path | None = None) -> dict[str, Any]:
    """:func:`distributed_compose` of the example cluster file in ``directory`` (default:
    the packaging directory)."""
    path = (directory or packaging_dir()) / EXAMPLE_CLUSTER_FILE
    return distributed_compose(load_cluster_file(path))


#: The unified container's volumes (volume → target): everything it writes but /tmp.
UNIFIED_VOLUMES = {
    "unified_data": "/app/data",
    "unified_logs": "/app/logs",
    "unified_pipelines": "/app/pipelines",
    "unified_plugins": "/app/plugins",
    "unified_redis": "/app/redis",
}


def unified_compose() -> dict[str, Any]:
    """One container with Redis, the server and ``WORKERS`` workers."""
    return {
        "version": "2.4",
        "services": {
            "mimir": {
                "build": {
                    "context": ".",
                    "dockerfile": "Dockerfile.unified",
                    "args": {"BASE_IMAGE": "${BASE_IMAGE:-python:3.11-slim}"},
                },
                "image": IMAGES["unified"],
                "restart": "unless-stopped",
                "environment": {
                    "WORKERS": "${WORKERS:-2}",
                    "WORKER_CONCURRENCY": "${WORKER_CONCURRENCY:-5}",
                    "MIMIR_LOG_LEVEL": "INFO",
                    # Optional here: without it the server is open, so publish on loopback.
                    "MIMIR_API_TOKEN": "${MIMIR_API_TOKEN:-}",
                },
                "ports": [f"${{MIMIR_BIND:-127.0.0.1}}:${{MIMIR_PORT:-{API_PORT}}}:{API_PORT}"],
                "volumes": [f"{volume}:{target}" for volume, target in UNIFIED_VOLUMES.items()],
                "user": f"{MIMIR_UID}:{MIMIR_UID}",
                "read_only": True,
                "tmpfs": ["/tmp:rw,noexec,nosuid,nodev,size=256m,mode=1777"],
                "security_opt": ["no-new-privileges:true"],
                "cap_drop": ["ALL"],
                "pids_limit": 1024,
                "cpus": 2.0,
                "mem_limit": "2g",
                "stop_grace_period": "45s",
                "labels": {LABEL_SERVICE: "unified"},
            }
        },
        "volumes": {name: {"labels": {LABEL_VOLUME: name}} for name in UNIFIED_VOLUMES},
    }


def render(document: dict[str, Any], usage: str) -> str:
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=100)
    return HEADER.format(usage=usage) + body


#: The stack file beside the compose files (:mod:`.stack`).
STACK_FILE = "docker-stack.yml"


def render_stack() -> str:
    """``packaging/docker-stack.yml``: :func:`~.stack.stack_document`, with its usage."""
    body = yaml.safe_dump(stack_document(), sort_keys=False, default_flow_style=False, width=100)
    header = (
        HEADER.splitlines()[0]
        + "\n# do not edit by hand (tests/cluster/test_swarm_spec.py checks it matches).\n"
    )
    return header + STACK_USAGE + "\n" + body


def write_compose_files(directory: Path) -> list[Path]:
    files = {
        "docker-compose.distributed.yml": render(
            distributed_compose(),
            "cd packaging && docker-compose -p mimir -f docker-compose.distributed.yml "
            "[--profile monitoring] up -d --scale worker=3",
        ),
        "docker-compose.pools.yml": render(
            pools_compose(directory),
            f"from {EXAMPLE_CLUSTER_FILE}: cd packaging && docker-compose -p mimir "
            "-f docker-compose.pools.yml up -d --scale worker=2 --scale worker-slow=1",
        ),
        "docker-compose.unified.yml": render(
            unified_compose(),
            "cd packaging && WORKERS=4 docker-compose -p mimir-unified "
            "-f docker-compose.unified.yml up -d",
        ),
    }
    files[STACK_FILE] = render_stack()
    files[PROMETHEUS_CONFIG] = HEADER.format(
        usage="mounted by the compose files' service prometheus (--profile monitoring)"
    ) + yaml.safe_dump(compose_prometheus_config(), sort_keys=False, default_flow_style=False)
    written = []
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else packaging_dir()
    for path in write_compose_files(directory):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
