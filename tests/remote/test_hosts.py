"""The fixture's hosts themselves: both inner engines answer the way the code under test
reaches them (TLS with the client certificate; ssh with the key and known_hosts) and hold
the Mimir images."""

from __future__ import annotations

import subprocess

import pytest

from mimir.app.cluster.topology import FALLBACK_REDIS_IMAGE, IMAGES
from tests.remote.conftest import REMOTE_TIMEOUT, RemoteHosts

pytestmark = [pytest.mark.docker, REMOTE_TIMEOUT]

WANTED = {IMAGES["backend"], IMAGES["worker"], FALLBACK_REDIS_IMAGE}


def test_both_engines_answer_and_hold_the_images(remote_hosts: RemoteHosts) -> None:
    print("fixture timings:", {k: round(v, 1) for k, v in remote_hosts.timings.items()})
    tls, ssh = remote_hosts.tls, remote_hosts.ssh
    client = tls.client()
    try:
        assert client.ping()
        tags = {tag for image in client.images.list() for tag in image.tags}
        assert tags >= WANTED
        info = client.info()
        assert info["Name"] == "remote-tls"
        # overlay2 nests on the host container's volume; vfs is the entrypoint's fallback.
        assert info["Driver"] in ("overlay2", "vfs"), info["Driver"]
        print("inner storage driver:", info["Driver"])
    finally:
        client.close()
    listing = subprocess.run(
        [*ssh.ssh_command(), "docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert set(listing.stdout.split()) >= WANTED
    # An inner container runs (cgroups, storage and networking nest).
    engine = ssh.host.engine()
    output = engine.containers.run(
        FALLBACK_REDIS_IMAGE, ["redis-server", "--version"], remove=True, mem_limit="128m"
    )
    assert b"Redis server" in output


def test_the_tls_engine_refuses_a_client_without_a_certificate(remote_hosts: RemoteHosts) -> None:
    import docker
    import docker.tls

    tls = remote_hosts.tls
    client = docker.DockerClient(
        base_url=tls.docker_host,
        tls=docker.tls.TLSConfig(ca_cert=str(tls.ca_path), verify=True),
        timeout=5,
        version="1.41",
    )
    client.api.trust_env = False
    with pytest.raises(Exception, match=r"(?i)certificate|handshake|ssl"):
        client.ping()
    client.close()
