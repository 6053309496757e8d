"""Docker engines in containers ("nodes"), for the tests that need more than one engine.

Shared by tests/remote (a TLS host and an SSH host) and tests/swarm (a three-node swarm).
A node runs the host image (``tests/remote/host``: the local base image plus Debian's
docker.io and openssh-server, tagged by a hash of its files so it is built once and stays
cached) with its own dockerd. Each inner dockerd also listens on a unix socket in a host
directory bind-mounted into its container: the fixture's own channel (loading images,
checking what a test left), never the way the code under test reaches the engine.

The engine here cannot grant every capability (``--privileged`` fails with "unable to apply
caps" when its bounding set lacks one), so a node gets all it has, no seccomp or AppArmor
profile, unmasked /proc paths, every device in its cgroup and a private cgroup namespace
(:data:`NESTING`); its entrypoint makes /sys and the cgroup hierarchies writable for the
inner engine and falls back to the vfs storage driver when overlay cannot nest.

Every object made here carries a label whose value is the pid of the test process, so that
the leftovers of a killed run are found and removed (:func:`remove_leftovers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

#: The node image's files (its tag is a hash of them).
HOST_DIR = Path(__file__).resolve().parent / "remote" / "host"
HOST_REPOSITORY = "mimir-test/remote-host"
#: Where the inner dockerd's fixture socket is, inside the node container.
ADMIN_DIR = "/run/remote-admin"
#: Seconds for one inner engine to answer after its container started.
ENGINE_DEADLINE = 90.0

#: Instead of ``--privileged`` (refused by an engine lacking a capability, see module doc);
#: ``MaskedPaths``/``ReadonlyPaths`` empty is the CLI's ``--security-opt systempaths=unconfined``.
NESTING: dict[str, Any] = {
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rwm"],
    "cgroupns": "private",
}


@dataclass
class Node:
    """One node container: its address on the test's network and its inner engine."""

    role: str
    container: Any
    address: str
    #: The inner dockerd's fixture socket, on this machine (``unix://…``).
    admin_url: str
    _client: docker.DockerClient | None = field(default=None, repr=False)

    def engine(self) -> docker.DockerClient:
        """The inner engine through the fixture's own socket (checks, not the code under test)."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.admin_url, timeout=60)
        return self._client

    def dockerd_log(self, lines: int = 60) -> str:
        result = self.container.exec_run(["tail", "-n", str(lines), "/var/log/dockerd.log"])
        return str(result.output.decode(errors="replace"))

    def project_objects(self, project: str) -> dict[str, list[str]]:
        """Names of what the inner engine holds of ``project`` (containers, volumes, networks)."""
        engine = self.engine()
        label = {"label": f"io.mimir.project={project}"}
        return {
            "containers": [c.name for c in engine.containers.list(all=True, filters=label)],
            "volumes": [v.name for v in engine.volumes.list(filters=label)],
            "networks": [n.name for n in engine.networks.list(filters=label)],
        }

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def host_image(client: docker.DockerClient) -> str:
    """The node image, built when no image of these exact files exists yet."""
    digest = hashlib.sha256()
    for path in sorted(HOST_DIR.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    repository = HOST_REPOSITORY
    tag = f"{repository}:{digest.hexdigest()[:16]}"
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        for old in client.images.list(name=repository):  # of earlier host files
            for old_tag in old.tags:
                if re.fullmatch(rf"{repository}:[0-9a-f]{{16}}", old_tag):  # ours, by hash
                    with contextlib.suppress(docker.errors.APIError):  # in use: kept
                        client.images.remove(old_tag)
        try:
            client.images.build(path=str(HOST_DIR), tag=tag, rm=True, forcerm=True)
        except docker.errors.BuildError as exc:
            log = "".join(str(chunk.get("stream", chunk)) for chunk in exc.build_log)
            pytest.fail(f"cannot build the remote host image: {exc}\n{log[-4000:]}")
    return tag


def mimir_images() -> list[str]:
    """The backend, worker and Redis images, built on the host engine when missing."""
    from mimir.app.cluster.docker_backend import DockerBackend
    from mimir.app.cluster.topology import DEFAULT_REDIS_IMAGE, FALLBACK_REDIS_IMAGE, IMAGES

    client = docker.from_env(timeout=120)
    try:
        wanted = [IMAGES["backend"], IMAGES["worker"], FALLBACK_REDIS_IMAGE]

        def missing() -> list[str]:
            absent = []
            for name in wanted:
                try:
                    client.images.get(name)
                except docker.errors.ImageNotFound:
                    absent.append(name)
            return absent

        if missing():
            asyncio.run(DockerBackend("x").build(lambda _step, _message: None))
        if missing():  # the build used the Redis image it could have: build the fallback
            builder = DockerBackend("x")
            builder.images.build_image("redis", FALLBACK_REDIS_IMAGE, lambda _s, _m: None)
            builder.close()
        absent = missing()
        if absent:
            pytest.fail(f"the Mimir images could not be built: {absent}")
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(DEFAULT_REDIS_IMAGE)
            wanted.append(DEFAULT_REDIS_IMAGE)  # what `up` prefers, when this machine has it
        return wanted
    finally:
        client.close()


def alive(pid: str) -> bool:
    """Whether the process ``pid`` (a label's value) still runs."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(client: docker.DockerClient, label: str) -> None:
    """Nodes, networks and volumes labelled ``label`` by an earlier run whose process is gone
    (a killed session)."""
    for container in client.containers.list(all=True, filters={"label": label}):
        if not alive(container.labels.get(label, "")):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
    for network in client.networks.list(filters={"label": label}):
        if not alive(network.attrs.get("Labels", {}).get(label, "")):
            with contextlib.suppress(docker.errors.APIError):
                network.remove()
    for volume in client.volumes.list(filters={"label": label}):
        if not alive((volume.attrs.get("Labels") or {}).get(label, "")):
            with contextlib.suppress(docker.errors.APIError):
                volume.remove(force=True)


def start_node(
    client: docker.DockerClient,
    image: str,
    network: str,
    role: str,
    admin_dir: Path,
    dockerd_args: list[str],
    environment: dict[str, str] | None = None,
    *,
    name: str,
    hostname: str,
    label: str,
) -> Node:
    """Starts a node container named ``name`` on ``network`` whose dockerd gets
    ``dockerd_args`` (after its two unix sockets); its fixture socket is in ``admin_dir``.
    Privileged when the engine allows it, else with :data:`NESTING`."""
    api = client.api

    def create(privileged: bool) -> str:
        extra: dict[str, Any] = {"privileged": True} if privileged else dict(NESTING)
        host_config = api.create_host_config(
            binds={str(admin_dir): {"bind": ADMIN_DIR, "mode": "rw"}},
            network_mode=network,
            **extra,
        )
        if not privileged:
            host_config["MaskedPaths"] = []
            host_config["ReadonlyPaths"] = []
        command = [
            "-H", "unix:///var/run/docker.sock",
            "-H", f"unix://{ADMIN_DIR}/docker.sock",
            *dockerd_args,
        ]  # fmt: skip
        created = api.create_container(
            image,
            command=command,
            name=name,
            hostname=hostname,
            detach=True,
            labels={label: str(os.getpid())},
            environment=environment or {},
            host_config=host_config,
        )
        api.start(created["Id"])
        return str(created["Id"])

    try:
        ident = create(privileged=True)
    except docker.errors.APIError as exc:
        if "caps" not in str(exc):
            raise
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name).remove(force=True, v=True)
        ident = create(privileged=False)
    container = client.containers.get(ident)
    address = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    return Node(role, container, address, f"unix://{admin_dir}/docker.sock")


def put_files(container: Any, directory: str, files: dict[str, bytes], mode: int = 0o600) -> None:
    """Writes ``files`` (name → bytes) into ``directory`` of a running container."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    assert container.put_archive(directory, buffer.getvalue())


def wait_engine(node: Node, connect: Any, what: str) -> None:
    """Until ``connect()`` returns a client whose ping answers; fail with dockerd's log."""
    deadline = time.monotonic() + ENGINE_DEADLINE
    last: BaseException | None = None
    while time.monotonic() < deadline:
        node.container.reload()
        if node.container.status not in ("running", "created"):
            break
        try:
            client = connect()
            try:
                if client.ping():
                    return
            finally:
                client.close()
        except Exception as exc:
            last = exc
        time.sleep(0.25)
    pytest.fail(
        f"the {node.role} host's engine ({what}) did not answer within {ENGINE_DEADLINE:.0f} s"
        f" (container {node.container.status}): {last}\n--- dockerd log ---\n"
        f"{node.dockerd_log()}",
        pytrace=False,
    )


def load_images(nodes: list[Node], images: list[str], directory: Path) -> None:
    """``docker save`` once into a file, ``docker load`` into every inner engine at once."""
    docker_cli = shutil.which("docker")
    assert docker_cli, "the docker CLI is needed to move the images"
    archive = directory / "images.tar"
    subprocess.run(
        [docker_cli, "save", "-o", str(archive), *images],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    errors: list[str] = []

    def load(node: Node) -> None:
        result = subprocess.run(
            [docker_cli, "-H", node.admin_url, "load", "-q", "-i", str(archive)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            errors.append(f"{node.role}: {result.stderr}\n{node.dockerd_log(20)}")

    threads = [threading.Thread(target=load, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    archive.unlink()
    if errors:
        pytest.fail("loading the images into the hosts failed:\n" + "\n".join(errors))
    for node in nodes:
        present = {tag for image in node.engine().images.list() for tag in image.tags}
        assert set(images) <= present, (node.role, present)
