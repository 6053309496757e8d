"""Write ``packaging/kubernetes/`` (plain YAML + kustomize) from :mod:`.topology`.

``base/`` is the cluster of the default cluster file (one pool, ``default``); the overlays:

* ``overlays/external-redis/``: no Redis StatefulSet; the API and the workers reach the
  Redis named by the Secret ``mimir-redis`` (keys ``address`` = ``host:port`` and
  ``password``), which you create.
* ``overlays/pools/``: the pools of ``packaging/mimir-cluster.example.yml`` (``default`` and
  ``slow``): the default pool patched to that file's figures, plus the ``slow`` pool's
  Deployment, PodDisruptionBudget and ScaledObject.

Every pool has a worker Deployment (``mimir worker --pool P --queues …``, the pool's
concurrency, its CPU/memory as requests = limits), a PodDisruptionBudget and a KEDA
``ScaledObject`` with one ``redis-streams`` trigger per stream the pool's workers read
(``<prefix>stream:<queue>:<priority>``) on ``streamLength``, the pool's ``target_backlog``.
The queue deletes a stream entry when its job ends (or is cancelled, or dropped), so a
stream's length is the jobs waiting plus those running: the backlog the server's own
autoscaler aims at. Not on the consumer group (``workers``): its ``pendingEntriesCount``
counts only delivered jobs, 0 with no workers, so a pool at ``min: 0`` would never wake;
and its ``lagCount`` becomes unknown (Redis answers nil) as soon as a waiting job is
cancelled (its entry deleted before the group read it) until the group reads past it,
which a pool at zero never does. The server's own autoscaler is off
(``MIMIR_CLUSTER_BACKEND`` empty). Workers stop on SIGTERM by draining: no new jobs, the
running ones get ``MIMIR_WORKER_GRACE`` seconds; ``terminationGracePeriodSeconds`` is that
grace plus :data:`GRACE_MARGIN`.

``python -m mimir.app.cluster.kubernetes [DIR] [--file cluster.yml]`` regenerates them
(``DIR`` default ``packaging/kubernetes``); tests/cluster/test_kubernetes.py checks the files
in the repository equal what this module renders.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from mimir.app.cluster.topology import (
    API_PORT,
    API_TOKEN_SECRET,
    IMAGES,
    REDIS_PASSWORD_SECRET,
    REDIS_PORT,
    SECRETS_DIR,
    ServiceSpec,
    build_topology,
)
from mimir.core.limits import Limits
from mimir.core.pools import (
    POOLS_ENV,
    AutoscalePolicy,
    ClusterFile,
    PoolSpec,
    load_cluster_file,
)
from mimir.core.queue.keys import PRIORITIES, QueueKeys
from mimir.core.resources import packaging_dir

__all__ = [
    "GRACE_MARGIN",
    "KUBERNETES_VERSION",
    "WORKER_GRACE",
    "base_documents",
    "main",
    "pool_documents",
    "render_tree",
    "write_tree",
]

#: The Kubernetes version whose schemas the tests validate the manifests against.
KUBERNETES_VERSION = "1.32.0"
NAMESPACE = "mimir"
#: Where KEDA's operator runs (its release manifests and Helm chart's default).
KEDA_NAMESPACE = "keda"
#: Seconds a stopping worker lets its jobs finish (``MIMIR_WORKER_GRACE``, the default).
WORKER_GRACE = 30
#: Seconds beyond the grace before the kubelet kills a worker (handing its jobs back).
GRACE_MARGIN = 15
REDIS_IMAGE = "redis:7-alpine"
#: The redis:7-alpine image's user ``redis``; the Mimir images' user ``mimir``.
REDIS_UID = 999
MIMIR_UID = 10001
SECRET_TOKEN = "mimir-api-token"
SECRET_REDIS = "mimir-redis"
#: Label of every pod that may open a connection to Redis (the NetworkPolicy's selector).
REDIS_CLIENT_LABEL = "mimir.io/redis-client"
POOL_LABEL = "mimir.io/pool"
PLACEHOLDER = "REPLACE-ME"

HEADER = """\
# Generated from mimir.app.cluster.topology by `python -m mimir.app.cluster.kubernetes`;
# do not edit by hand (tests/cluster/test_kubernetes.py checks it matches).
"""


def _labels(component: str, pool: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "mimir", "app.kubernetes.io/component": component}
    if pool is not None:
        labels[POOL_LABEL] = pool
    return labels


def _meta(name: str, component: str, pool: str | None = None) -> dict[str, Any]:
    return {"name": name, "labels": _labels(component, pool)}


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _redis_env(*, for_keda: bool = False) -> list[dict[str, Any]]:
    """REDIS_URL from the Secret ``mimir-redis``'s address (``$(VAR)`` is expanded by the
    kubelet from the variables listed before it); the password is a file of the Secret
    volume (``MIMIR_REDIS_PASSWORD_FILE``, in the topology's environment), never in the
    URL. KEDA's triggers read ``REDIS_ADDRESS`` and ``REDIS_PASSWORD`` from the workers'
    containers (``addressFromEnv``/``passwordFromEnv``): ``for_keda`` adds the password's
    variable for them (the worker itself reads the file)."""
    env = [_secret_env("REDIS_ADDRESS", SECRET_REDIS, "address")]
    if for_keda:
        env.append(_secret_env("REDIS_PASSWORD", SECRET_REDIS, "password"))
    env.append({"name": "REDIS_URL", "value": "redis://$(REDIS_ADDRESS)/0"})
    return env


#: The Secret keys each secret file comes from: file name → (Secret, key).
_SECRET_FILES = {
    API_TOKEN_SECRET: (SECRET_TOKEN, "token"),
    REDIS_PASSWORD_SECRET: (SECRET_REDIS, "password"),
}


def _secrets_volume(spec: ServiceSpec) -> dict[str, Any]:
    """The service's secret files (:data:`~.topology.SECRETS_DIR`), projected from the
    Secrets: readable by the pod's group (``fsGroup``) only."""
    return {
        "name": "secrets",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {
                    "secret": {
                        "name": _SECRET_FILES[secret][0],
                        "items": [{"key": _SECRET_FILES[secret][1], "path": secret}],
                    }
                }
                for secret in spec.secrets
            ],
        },
    }


_SECRETS_MOUNT = {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True}


def _plain_env(spec: ServiceSpec, drop: set[str]) -> list[dict[str, Any]]:
    return [
        {"name": key, "value": value}
        for key, value in spec.environment.items()
        if key not in drop and key != "REDIS_URL"
    ]


def _quantity_memory(spec: ServiceSpec) -> str | None:
    size = spec.memory_bytes
    return None if size is None else f"{math.ceil(size / 1024**2)}Mi"


def _resources(spec: ServiceSpec) -> dict[str, Any]:
    amounts: dict[str, str] = {}
    if spec.cpus is not None:
        amounts["cpu"] = f"{round(spec.cpus * 1000)}m"
    memory = _quantity_memory(spec)
    if memory is not None:
        amounts["memory"] = memory
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def _namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}


def _secrets() -> list[dict[str, Any]]:
    note = {
        "mimir.io/note": f"placeholder values: replace every {PLACEHOLDER} before applying "
        "(README, Kubernetes)"
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {**_meta(SECRET_TOKEN, "api"), "annotations": note},
            "type": "Opaque",
            "stringData": {"token": PLACEHOLDER},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {**_meta(SECRET_REDIS, "redis"), "annotations": note},
            "type": "Opaque",
            # Fully qualified: KEDA's operator (namespace keda) reads it too.
            "stringData": {
                "password": PLACEHOLDER,
                "address": f"redis.{NAMESPACE}.svc:{REDIS_PORT}",
            },
        },
    ]


def _redis(spec: ServiceSpec) -> list[dict[str, Any]]:
    labels = _labels("redis")
    # The topology's start: the password from the Secret's file into /tmp/redis.conf
    # (an emptyDir, only its user's), never on the command line or in the environment;
    # maxmemory 768mb (3/4 of the 1Gi limit), noeviction. The probe reads the file too.
    probe = {
        "exec": {"command": ["sh", "-c", (spec.healthcheck or ["", ""])[1]]},
        "periodSeconds": 10,
    }
    container = {
        "name": "redis",
        "image": REDIS_IMAGE,
        "command": list(spec.command),
        "env": [{"name": k, "value": v} for k, v in spec.environment.items()],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
        "readinessProbe": {**probe, "initialDelaySeconds": 2},
        "livenessProbe": {**probe, "initialDelaySeconds": 15, "failureThreshold": 6},
        "resources": {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "1000m", "memory": "1024Mi"},
        },
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "redis-data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},
            _SECRETS_MOUNT,
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("redis", "redis"),
            "spec": {
                "clusterIP": "None",
                "selector": labels,
                "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta("redis", "redis"),
            "spec": {
                "serviceName": "redis",
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": _pod_security(REDIS_UID),
                        "automountServiceAccountToken": False,
                        "containers": [container],
                        "volumes": [{"name": "tmp", "emptyDir": {}}, _secrets_volume(spec)],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "redis-data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "8Gi"}},
                        },
                    }
                ],
            },
        },
    ]


def _api(spec: ServiceSpec) -> list[dict[str, Any]]:
    labels = _labels("api")
    env = [
        *_redis_env(),
        # MIMIR_API_TOKEN_FILE and MIMIR_REDIS_PASSWORD_FILE: the Secret volume's files.
        *_plain_env(spec, {"MIMIR_CLUSTER_BACKEND"}),
        # Empty: the server's own autoscaler is off (it scales only through a backend it
        # knows, docker or local); KEDA scales the pools' Deployments.
        {"name": "MIMIR_CLUSTER_BACKEND", "value": ""},
    ]
    command = [part for part in spec.command if part != "--insecure"]
    container = {
        "name": "api",
        "image": spec.image,
        "command": command,
        "env": env,
        "ports": [{"name": "http", "containerPort": API_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 4,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 4,
            "failureThreshold": 6,
        },
        # Out of the Service's endpoints before SIGTERM reaches the server.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "resources": _resources(spec),
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "data", "mountPath": "/app/data", "subPath": "data"},
            {"name": "data", "mountPath": "/app/pipelines", "subPath": "pipelines"},
            {"name": "data", "mountPath": "/app/plugins", "subPath": "plugins"},
            {"name": "logs", "mountPath": "/app/logs"},
            {"name": "tmp", "mountPath": "/tmp"},
            _SECRETS_MOUNT,
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta("mimir-api-data", "api"),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "10Gi"}},
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta("mimir-api", "api"),
            "spec": {
                # One replica on a ReadWriteOnce volume: replaced, not rolled.
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": {**labels, REDIS_CLIENT_LABEL: "true"}},
                    "spec": {
                        "securityContext": _pod_security(MIMIR_UID),
                        "automountServiceAccountToken": False,
                        "terminationGracePeriodSeconds": 30,
                        "containers": [container],
                        "volumes": [
                            {
                                "name": "data",
                                "persistentVolumeClaim": {"claimName": "mimir-api-data"},
                            },
                            {"name": "logs", "emptyDir": {}},
                            {"name": "tmp", "emptyDir": {}},
                            _secrets_volume(spec),
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("mimir-api", "api"),
            "spec": {
                "type": "ClusterIP",
                "selector": labels,
                "ports": [{"name": "http", "port": API_PORT, "targetPort": "http"}],
            },
        },
        _pdb("mimir-api", "api", None, {"maxUnavailable": 1}),
    ]


def _pdb(name: str, component: str, pool: str | None, budget: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, component, pool),
        "spec": {**budget, "selector": {"matchLabels": _labels(component, pool)}},
    }


def _network_policies() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta("mimir-default-deny-ingress", "network"),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta("redis-from-mimir", "network"),
            "spec": {
                "podSelector": {"matchLabels": _labels("redis")},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchLabels": {REDIS_CLIENT_LABEL: "true"}}},
                            # KEDA's operator reads the streams' lag (its redis-streams
                            # scalers), from its own namespace.
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": KEDA_NAMESPACE}
                                },
                                "podSelector": {"matchLabels": {"app": "keda-operator"}},
                            },
                        ],
                        "ports": [{"protocol": "TCP", "port": REDIS_PORT}],
                    }
                ],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta("api-http", "network"),
            "spec": {
                "podSelector": {"matchLabels": _labels("api")},
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"protocol": "TCP", "port": API_PORT}]}],
            },
        },
    ]


def worker_name(pool: str) -> str:
    return f"mimir-worker-{pool.replace('_', '-')}"


def pool_streams(pool: PoolSpec, prefix: str = "mimir:") -> list[str]:
    """Every stream the pool's workers read: one per queue and priority."""
    keys = QueueKeys(prefix)
    return [keys.stream(queue, priority) for queue in pool.queues for priority in PRIORITIES]


def _worker_deployment(pool: PoolSpec, spec: ServiceSpec) -> dict[str, Any]:
    labels = _labels("worker", pool.name)
    env = [
        *_redis_env(for_keda=True),
        *_plain_env(spec, {"MIMIR_WORKER_GRACE"}),
        {"name": "MIMIR_WORKER_GRACE", "value": str(WORKER_GRACE)},
    ]
    container = {
        "name": "worker",
        "image": spec.image,
        "command": list(spec.command),
        "env": env,
        "resources": _resources(spec),
        # The heartbeat file is fresh (the topology's healthcheck): a worker stuck for
        # three heartbeats is restarted.
        "livenessProbe": {
            "exec": {"command": list(spec.healthcheck or [])[1:]},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "data", "mountPath": "/app/data"},
            {"name": "logs", "mountPath": "/app/logs"},
            {"name": "tmp", "mountPath": "/tmp"},
            _SECRETS_MOUNT,
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(worker_name(pool.name), "worker", pool.name),
        "spec": {
            "replicas": pool.initial_replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, REDIS_CLIENT_LABEL: "true"}},
                "spec": {
                    "securityContext": _pod_security(MIMIR_UID),
                    "automountServiceAccountToken": False,
                    # SIGTERM is the drain (no new jobs; running ones get the grace), so
                    # no preStop hook: one that signalled would make the kubelet's SIGTERM
                    # the second, which skips the grace.
                    "terminationGracePeriodSeconds": WORKER_GRACE + GRACE_MARGIN,
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {"name": "logs", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                        _secrets_volume(spec),
                    ],
                },
            },
        },
    }


def _scaled_object(pool: PoolSpec, limit: int) -> dict[str, Any]:
    policy = pool.autoscale or AutoscalePolicy()
    target = max(1, math.ceil(policy.target_backlog))
    triggers = [
        {
            "type": "redis-streams",
            "metadata": {
                "addressFromEnv": "REDIS_ADDRESS",
                "passwordFromEnv": "REDIS_PASSWORD",
                "stream": stream,
                # No consumerGroup: with one, KEDA reads the group's lag or its pending
                # entries instead of the stream's length (module doc says why not those).
                "streamLength": str(target),
            },
        }
        for stream in pool_streams(pool)
    ]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(worker_name(pool.name), "worker", pool.name),
        "spec": {
            "scaleTargetRef": {"name": worker_name(pool.name)},
            "minReplicaCount": pool.min,
            "maxReplicaCount": pool.max_replicas(limit),
            "pollingInterval": 15,
            # Seconds without work before the pool goes to zero (KEDA), and the HPA's
            # scale-down window: the policy's cooldown_down for both.
            "cooldownPeriod": max(1, round(policy.cooldown_down)),
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {"stabilizationWindowSeconds": round(policy.cooldown_down)}
                    }
                }
            },
            "triggers": triggers,
        },
    }


def pool_documents(
    pool: PoolSpec, spec: ServiceSpec, limit: int | None = None
) -> list[dict[str, Any]]:
    """The worker Deployment, PodDisruptionBudget and ScaledObject of ``pool``."""
    limit = Limits().max_workers if limit is None else limit
    name = worker_name(pool.name)
    return [
        _worker_deployment(pool, spec),
        _pdb(name, "worker", pool.name, {"maxUnavailable": 1}),
        _scaled_object(pool, limit),
    ]


def _topology(cluster: ClusterFile | None) -> Any:
    return build_topology(
        "mimir",
        cluster=cluster,
        api_host="0.0.0.0",
        api_token="from-a-secret",
        backend_image=IMAGES["backend"],
        worker_image=IMAGES["worker"],
    )


def base_documents(cluster: ClusterFile | None = None) -> dict[str, list[dict[str, Any]]]:
    """File name → documents of ``base/`` for ``cluster`` (default: one pool)."""
    topology = _topology(cluster)
    files: dict[str, list[dict[str, Any]]] = {
        "namespace.yaml": [_namespace()],
        "secrets.yaml": _secrets(),
        "redis.yaml": _redis(topology.services["redis"]),
        "api.yaml": _api(topology.services["backend"]),
        "network-policies.yaml": _network_policies(),
    }
    for pool in topology.cluster.pools.values():
        spec = topology.pool_spec(pool.name)
        files[f"{worker_name(pool.name)}.yaml"] = pool_documents(pool, spec)
    return files


def _kustomization(resources: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        **extra,
        "resources": resources,
    }


def render_tree(cluster: ClusterFile) -> dict[str, list[dict[str, Any]]]:
    """Relative path → documents of the whole tree; ``cluster`` is the pools overlay's."""
    tree: dict[str, list[dict[str, Any]]] = {}
    base = base_documents()
    for name, documents in base.items():
        tree[f"base/{name}"] = documents
    tree["base/kustomization.yaml"] = [
        _kustomization(
            list(base),
            namespace=NAMESPACE,
            labels=[{"pairs": {"app.kubernetes.io/part-of": "mimir"}}],
        )
    ]

    # external-redis: the Redis objects removed; the Secret mimir-redis names the server.
    deletions = [
        ("apps/v1", "StatefulSet", "redis"),
        ("v1", "Service", "redis"),
        ("networking.k8s.io/v1", "NetworkPolicy", "redis-from-mimir"),
    ]
    tree["overlays/external-redis/kustomization.yaml"] = [
        _kustomization(
            ["../../base"],
            patches=[
                {
                    "patch": yaml.safe_dump(
                        {
                            "$patch": "delete",
                            "apiVersion": api,
                            "kind": kind,
                            "metadata": {"name": name},
                        },
                        sort_keys=False,
                    ),
                }
                for api, kind, name in deletions
            ],
        )
    ]

    # pools: the example cluster file's pools over the base's one.
    topology = _topology(cluster)
    base_pools = _topology(None).cluster.pools
    resources = ["../../base"]
    patches = []
    for pool in topology.cluster.pools.values():
        spec = topology.pool_spec(pool.name)
        documents = pool_documents(pool, spec)
        filename = f"{worker_name(pool.name)}.yaml"
        if pool.name in base_pools:
            # Replace the base's Deployment, PDB and ScaledObject of this pool wholesale.
            tree[f"overlays/pools/{filename}"] = documents
            patches.append({"path": filename})
        else:
            tree[f"overlays/pools/{filename}"] = documents
            resources.append(filename)
    # The server learns the pools (their queues, for its figures) from MIMIR_POOLS.
    api_env = {"name": POOLS_ENV, "value": topology.services["backend"].environment[POOLS_ENV]}
    tree["overlays/pools/api-pools.yaml"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "mimir-api"},
            "spec": {"template": {"spec": {"containers": [{"name": "api", "env": [api_env]}]}}},
        }
    ]
    patches.append({"path": "api-pools.yaml"})
    tree["overlays/pools/kustomization.yaml"] = [_kustomization(resources, patches=patches)]
    return tree


def _dump(documents: list[dict[str, Any]]) -> str:
    return HEADER + "---\n".join(
        yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=100)
        for doc in documents
    )


def render_files(cluster: ClusterFile) -> dict[str, str]:
    return {path: _dump(documents) for path, documents in render_tree(cluster).items()}


def example_cluster() -> ClusterFile:
    return load_cluster_file(packaging_dir() / "mimir-cluster.example.yml")


def write_tree(directory: Path, cluster: ClusterFile | None = None) -> list[Path]:
    written = []
    for name, text in render_files(cluster or example_cluster()).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mimir.app.cluster.kubernetes",
        description="write the Kubernetes manifests (base, overlays) from the topology",
    )
    parser.add_argument("directory", nargs="?", type=Path, default=None)
    parser.add_argument("--file", type=Path, default=None, help="cluster file of the pools overlay")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    directory = args.directory or packaging_dir() / "kubernetes"
    cluster = load_cluster_file(args.file) if args.file else None
    for path in write_tree(directory, cluster):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
