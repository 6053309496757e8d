"""packaging/kubernetes/ is what mimir.app.cluster.kubernetes renders from the topology, and
every document validates offline: the Kubernetes ones against the schemas of
KUBERNETES_VERSION (kubernetes-validate, strict), the ScaledObjects against KEDA's CRD
(tests/data/keda/, jsonschema). No cluster is reached."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mimir.app.cluster.kubernetes import (
    GRACE_MARGIN,
    KUBERNETES_VERSION,
    WORKER_GRACE,
    example_cluster,
    pool_streams,
    render_files,
    worker_name,
)

ROOT = Path(__file__).resolve().parents[2]
TREE = ROOT / "packaging" / "kubernetes"
KEDA_CRD = ROOT / "tests" / "data" / "keda" / "keda.sh_scaledobjects.yaml"
OVERLAYS = ["base", "overlays/external-redis", "overlays/pools"]


def _documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _keda_schema() -> dict[str, Any]:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


def _validate(doc: dict[str, Any], keda: dict[str, Any]) -> None:
    if doc["kind"] == "ScaledObject":
        jsonschema.validate(doc, keda)
    elif doc["kind"] != "Kustomization":
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_manifests_match_the_topology() -> None:
    rendered = render_files(example_cluster())
    on_disk = {
        str(path.relative_to(TREE)): path.read_text()
        for path in TREE.rglob("*.yaml")
        if "crds" not in path.parts
    }
    assert sorted(on_disk) == sorted(rendered), "run python -m mimir.app.cluster.kubernetes"
    for name, text in rendered.items():
        assert on_disk[name] == text, (
            f"packaging/kubernetes/{name} is out of date: run python -m "
            "mimir.app.cluster.kubernetes"
        )


def test_every_file_validates_against_the_schemas() -> None:
    keda = _keda_schema()
    count = 0
    for path in sorted(TREE.rglob("*.yaml")):
        for doc in _documents(path.read_text()):
            if path.name == "api-pools.yaml":
                continue  # a patch, not a whole object: validated merged (kustomize) below
            _validate(doc, keda)
            count += 1
    assert count > 20


def test_each_pool_has_its_deployment_budget_and_scaledobject() -> None:
    cluster = example_cluster()
    documents = [
        doc
        for path in (TREE / "overlays" / "pools").glob("mimir-worker-*.yaml")
        for doc in _documents(path.read_text())
    ]
    by_kind = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    for pool in cluster.pools.values():
        name = worker_name(pool.name)
        deployment = by_kind[("Deployment", name)]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"][:4] == ["mimir", "worker", "--pool", pool.name]
        assert container["command"][5] == ",".join(pool.queues)
        assert pod["terminationGracePeriodSeconds"] == WORKER_GRACE + GRACE_MARGIN
        env = {e["name"]: e for e in container["env"]}
        assert env["MIMIR_WORKER_GRACE"]["value"] == str(WORKER_GRACE)
        assert "secretKeyRef" in env["REDIS_PASSWORD"]["valueFrom"]
        assert container["resources"]["limits"] == container["resources"]["requests"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert ("PodDisruptionBudget", name) in by_kind
        scaled = by_kind[("ScaledObject", name)]["spec"]
        assert scaled["minReplicaCount"] == pool.min
        assert scaled["maxReplicaCount"] == pool.max
        triggers = scaled["triggers"]
        assert {t["type"] for t in triggers} == {"redis-streams"}
        assert [t["metadata"]["stream"] for t in triggers] == pool_streams(pool)
        # The stream's length (waiting + running jobs), not the group's lag or pending.
        assert all("consumerGroup" not in t["metadata"] for t in triggers)
        target = pool.autoscale.target_backlog if pool.autoscale else 10
        assert {t["metadata"]["streamLength"] for t in triggers} == {str(math.ceil(target))}
    assert pool_streams(cluster.pool("slow")) == [
        "mimir:stream:slow:high",
        "mimir:stream:slow:normal",
        "mimir:stream:slow:low",
    ]


def test_the_api_token_and_redis_password_come_from_secrets() -> None:
    api = _documents((TREE / "base" / "api.yaml").read_text())
    (deployment,) = [d for d in api if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    # Both are files of the pod's Secret volume, never environment variables.
    assert "MIMIR_API_TOKEN" not in env and "REDIS_PASSWORD" not in env
    assert env["MIMIR_API_TOKEN_FILE"]["value"] == "/run/secrets/mimir_api_token"
    assert env["MIMIR_REDIS_PASSWORD_FILE"]["value"] == "/run/secrets/mimir_redis_password"
    assert env["REDIS_URL"]["value"] == "redis://$(REDIS_ADDRESS)/0"
    pod = deployment["spec"]["template"]["spec"]
    (secrets,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    sources = {
        (s["secret"]["name"], item["key"], item["path"])
        for s in secrets["projected"]["sources"]
        for item in s["secret"]["items"]
    }
    assert sources == {
        ("mimir-api-token", "token", "mimir_api_token"),
        ("mimir-redis", "password", "mimir_redis_password"),
    }
    assert secrets["projected"]["defaultMode"] == 0o440  # the pod's fsGroup reads them
    assert {"name": "secrets", "mountPath": "/run/secrets", "readOnly": True} in container[
        "volumeMounts"
    ]
    # Redis: the password from its file into a config on the emptyDir, never in argv/env.
    redis = _documents((TREE / "base" / "redis.yaml").read_text())
    (statefulset,) = [d for d in redis if d["kind"] == "StatefulSet"]
    (server,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert "/run/secrets/mimir_redis_password" in server["command"][2]
    assert "requirepass" in server["command"][2] and "--requirepass" not in server["command"][2]
    assert "maxmemory-policy noeviction" in server["command"][2]
    assert {e["name"] for e in server["env"]} == {"MIMIR_REDIS_MAXMEMORY"}
    # The server's own autoscaler is off: KEDA scales the pools.
    assert env["MIMIR_CLUSTER_BACKEND"]["value"] == ""
    assert "--insecure" not in container["command"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"


@pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="no kubectl on PATH (its kustomize renders the overlays; Debian 12's "
    "kubernetes-client 1.20 fails on them; kubectl 1.32 renders them)",
)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_output_validates(overlay: str) -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(TREE / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    documents = _documents(built.stdout)
    keda = _keda_schema()
    for doc in documents:
        _validate(doc, keda)
    kinds = [(d["kind"], d["metadata"]["name"]) for d in documents]
    has_redis = ("StatefulSet", "redis") in kinds
    assert has_redis == (overlay != "overlays/external-redis")
    if overlay == "overlays/pools":
        assert ("ScaledObject", "mimir-worker-slow") in kinds
        (api,) = [
            d for d in documents if d["kind"] == "Deployment" and "api" in d["metadata"]["name"]
        ]
        env = {e["name"] for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert {"MIMIR_POOLS", "MIMIR_API_TOKEN_FILE", "REDIS_URL"} <= env


def test_mimir_cluster_manifests_writes_the_tree(tmp_path: Path) -> None:
    from mimir.app.cluster.cli import main

    example = ROOT / "packaging" / "mimir-cluster.example.yml"
    assert main(["manifests", "--kubernetes", str(tmp_path), "--file", str(example)]) == 0
    for name, text in render_files(example_cluster()).items():
        assert (tmp_path / name).read_text() == text
