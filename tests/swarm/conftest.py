"""A real three-node Docker swarm on this machine, for tests/swarm.

Three node containers (tests/dind.py: the remote-host image, each with its own dockerd) on a
bridge network the fixture creates with a free /24 of 172.30-31.x: ``swarm-1`` is the
manager, ``swarm-2`` and ``swarm-3`` join it as workers. Every dockerd trusts the test
subnet as an insecure registry (the in-swarm registry runs on the manager's address, port
5000) and gives its own networks addresses from 10.231.0.0/16 (the swarm's overlays: from
10.232.0.0/16). The ingress network is removed (this kernel has no IPVS: no routing mesh).
The Mimir images (backend, worker, Redis, registry) are loaded into the manager only; the
other nodes get them from the registry, as an operator's would.

Traffic stays on the machine: the host reaches the nodes on the test's network, the nodes
reach each other there (2377/tcp, 7946/tcp+udp, 4789/udp). Everything carries the label
:data:`LABEL` (value: this process's pid); the teardown leaves the swarm, removes the nodes
(with their /var/lib/docker volumes) and the network, and checks that nothing it labelled
is left on the host engine. A killed run's leftovers are removed by the next one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import pytest

from tests.dind import (
    Node,
    host_image,
    load_images,
    mimir_images,
    remove_leftovers,
    start_node,
    wait_engine,
)

#: Labels every object the fixture creates on the host engine.
LABEL = "io.mimir.test.swarm"
NODE_NAMES = ("swarm-1", "swarm-2", "swarm-3")
#: Address pools of the inner engines (their own bridges) and of the swarm's overlays.
NODE_POOL = "base=10.231.0.0/16,size=24"
OVERLAY_POOL = "10.232.0.0/16"
#: Seconds for the three nodes to show up ready in ``docker node ls``.
JOIN_DEADLINE = 60.0


@dataclass
class Swarm:
    """The swarm: its nodes by host name, the manager's engine for the code under test."""

    network: str
    subnet: str
    nodes: dict[str, Node]
    ipvs: bool
    #: Seconds each stage took (printed by the test).
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def manager(self) -> Node:
        return self.nodes[NODE_NAMES[0]]

    @property
    def docker_host(self) -> str:
        """The manager's engine (its fixture socket on this machine), for the code under test."""
        return self.manager.admin_url

    def node_ids(self) -> dict[str, str]:
        """Node id → host name, as the manager knows them."""
        return {
            n.id: str(n.attrs["Description"]["Hostname"])
            for n in self.manager.engine().nodes.list()
        }

    def drain(self, hostname: str) -> None:
        """``docker node update --availability drain <hostname>`` on the manager."""
        for node in self.manager.engine().nodes.list():
            if node.attrs["Description"]["Hostname"] == hostname:
                spec = dict(node.attrs["Spec"])
                spec["Availability"] = "drain"
                node.update(spec)
                return
        raise AssertionError(f"no node {hostname} in the swarm")

    def project_leftovers(self, project: str) -> dict[str, list[str]]:
        """What the manager still holds of ``project``: services, secrets, networks,
        volumes, containers."""
        engine = self.manager.engine()
        label = {"label": f"io.mimir.project={project}"}
        return {
            "services": [s.name for s in engine.services.list(filters=label)],
            "secrets": [s.name for s in engine.secrets.list(filters=label)],
            "networks": [n.name for n in engine.networks.list(filters=label)],
            "volumes": [v.name for v in engine.volumes.list(filters=label)],
            "containers": [c.name for c in engine.containers.list(all=True, filters=label)],
        }


def _free_subnet(client: docker.DockerClient) -> ipaddress.IPv4Network:
    """A /24 of 172.30.0.0/15 that no network of the host engine overlaps (the start
    depends on the pid, so two runs at once rarely try the same one first)."""
    taken = []
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError, KeyError):
                taken.append(ipaddress.ip_network(config["Subnet"], strict=False))
    space = list(ipaddress.ip_network("172.30.0.0/15").subnets(new_prefix=24))
    start = os.getpid() % len(space)
    for candidate in space[start:] + space[:start]:
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    pytest.fail("no free /24 in 172.30.0.0/15 for the swarm's network")


def _stage(timings: dict[str, float], name: str, started: float) -> float:
    now = time.monotonic()
    timings[name] = round(now - started, 1)
    return now


def _registry_image() -> str:
    """The in-swarm registry's image, built on the host engine when missing."""
    from mimir.app.cluster.docker_backend import DockerBackend
    from mimir.app.cluster.topology import IMAGES

    image = IMAGES["registry"]
    client = docker.from_env(timeout=120)
    try:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            builder = DockerBackend("x")
            try:
                builder.images.build_registry_image(lambda _step, _message: None)
            finally:
                builder.close()
        return image
    finally:
        client.close()


def _in_parallel(calls: list[Callable[[], Any]]) -> list[Any]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


@pytest.fixture(scope="module")
def swarm() -> Generator[Swarm]:
    """Three nodes in one swarm, the Mimir images on the manager; all removed at the end."""
    # The test says it needs an engine (a skipif marker): here one answers.
    client = docker.from_env(timeout=120)
    timings: dict[str, float] = {}
    started = stage = time.monotonic()
    pid = str(os.getpid())
    remove_leftovers(client, LABEL)
    image = host_image(client)
    images = [*mimir_images(), _registry_image()]
    stage = _stage(timings, "images", stage)
    # Short: a unix socket path has at most 107 characters.
    workdir = Path(tempfile.mkdtemp(prefix="mimir-sw-"))
    subnet = _free_subnet(client)
    network = client.networks.create(
        f"mimir-swarm-{pid}",
        driver="bridge",
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet))]),
        labels={LABEL: pid},
    )
    nodes: dict[str, Node] = {}
    _ACTIVE.clear()
    try:
        args = ["--insecure-registry", str(subnet), "--default-address-pool", NODE_POOL]

        def start(name: str) -> Node:
            admin = workdir / name
            admin.mkdir()
            return start_node(
                client, image, network.name, name, admin, args,
                name=f"mimir-swarm-{pid}-{name}", hostname=name, label=LABEL,
            )  # fmt: skip

        for node in _in_parallel([lambda n=n: start(n) for n in NODE_NAMES]):
            nodes[node.role] = node
        _ACTIVE.extend(nodes.values())
        _in_parallel(
            [
                lambda n=n: wait_engine(
                    n, lambda: docker.DockerClient(base_url=n.admin_url, timeout=5), "unix"
                )
                for n in nodes.values()
            ]
        )
        stage = _stage(timings, "nodes", stage)

        manager = nodes[NODE_NAMES[0]]
        load_images([manager], images, workdir)
        stage = _stage(timings, "load", stage)

        engine = manager.engine()
        engine.swarm.init(
            advertise_addr=manager.address,
            listen_addr="0.0.0.0:2377",
            default_addr_pool=[OVERLAY_POOL],
            subnet_size=24,
        )
        token = engine.swarm.attrs["JoinTokens"]["Worker"]
        for name in NODE_NAMES[1:]:
            nodes[name].engine().swarm.join(
                remote_addrs=[f"{manager.address}:2377"],
                join_token=token,
                advertise_addr=nodes[name].address,
                listen_addr="0.0.0.0:2377",
            )
        deadline = time.monotonic() + JOIN_DEADLINE
        while True:
            ready = {
                n.attrs["Description"]["Hostname"]
                for n in engine.nodes.list()
                if n.attrs["Status"]["State"] == "ready"
            }
            if ready == set(NODE_NAMES):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"swarm nodes ready after {JOIN_DEADLINE:.0f} s: {sorted(ready)}")
            time.sleep(0.25)
        # No IPVS on this kernel: no routing mesh, so no ingress network to half-work.
        with contextlib.suppress(docker.errors.NotFound):
            engine.networks.get("ingress").remove()
        probe = manager.container.exec_run(["test", "-e", "/proc/net/ip_vs"])
        ipvs = probe.exit_code == 0
        if not ipvs:
            print("IPVS missing (no /proc/net/ip_vs): endpoint_mode dnsrr, host-mode ports")
        _stage(timings, "swarm", stage)
        timings["fixture"] = round(time.monotonic() - started, 1)
        yield Swarm(network.name, str(subnet), nodes, ipvs, timings)
    finally:
        stage = time.monotonic()
        _ACTIVE.clear()
        for node in nodes.values():
            with contextlib.suppress(Exception):
                node.engine().swarm.leave(force=True)
            node.close()

        def remove(node: Node) -> None:
            with contextlib.suppress(docker.errors.APIError):
                node.container.remove(force=True, v=True)

        if nodes:
            _in_parallel([lambda n=n: remove(n) for n in nodes.values()])
        with contextlib.suppress(docker.errors.APIError):
            network.remove()
        shutil.rmtree(workdir, ignore_errors=True)
        mine = {"label": f"{LABEL}={pid}"}  # another run may have its swarm up meanwhile
        left = {
            "containers": [c.name for c in client.containers.list(all=True, filters=mine)],
            "networks": [n.name for n in client.networks.list(filters=mine)],
            "volumes": [v.name for v in client.volumes.list(filters=mine)],
        }
        client.close()
        print(f"swarm teardown: {time.monotonic() - stage:.1f} s")
        assert left == {"containers": [], "networks": [], "volumes": []}, left


#: Nodes of the module, for the failure report below.
_ACTIVE: list[Node] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    """A failed test carries each node's tasks, the last log lines of every Mimir service
    (from the manager) and each dockerd's log tail."""
    outcome: Any = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or not _ACTIVE:
        return
    manager = _ACTIVE[0]
    try:
        engine = manager.engine()
        for service in engine.services.list(filters={"label": "io.mimir.project"}):
            tasks = [
                f"{t.get('Slot')} {t.get('NodeID', '')[:8]} {t['Status'].get('State')} "
                f"{t['Status'].get('Err') or ''}"
                for t in service.tasks()
            ]
            raw = engine.api.service_logs(
                service.id, stdout=True, stderr=True, tail=40, timestamps=True
            )
            text = "".join(chunk.decode("utf-8", "replace") for chunk in raw)
            report.sections.append(
                (f"swarm service {service.name}", "\n".join(tasks) + "\n--- logs ---\n" + text)
            )
    except Exception as exc:  # the report must not fail
        report.sections.append(("swarm services", f"cannot read them: {exc}"))
    for node in list(_ACTIVE):
        with contextlib.suppress(Exception):
            report.sections.append((f"{node.role} dockerd log", node.dockerd_log(30)))
