"""Real remote hosts on this machine: containers with their own dockerd, over TLS and SSH.

The session builds a "host" image (``host/Dockerfile``: the local base image with Debian's
docker.io and openssh-server, tagged by a hash of its files so it is built once), creates a
Docker network of its own and runs two hosts on it:

- ``tls``: dockerd on ``tcp://0.0.0.0:2376`` with ``--tlsverify`` (a CA, a server certificate
  naming the container's address, a client certificate: all made here with
  ``cryptography``), and on its unix socket;
- ``ssh``: sshd with a key made here in root's ``authorized_keys``; dockerd on its unix
  socket only.

Each inner dockerd also listens on a socket in a host directory bind-mounted into its
container: the fixture's own channel (loading the images, checking what a test left), never
the way the code under test reaches the engine. The three Mimir images are loaded into both
engines once per session. Everything is removed at the end (the host image stays cached).

The engine here cannot grant every capability (``--privileged`` fails with "unable to apply
caps" when its bounding set lacks one), so the hosts get all it has, no seccomp or AppArmor
profile, unmasked /proc paths, every device in their cgroup and a private cgroup namespace;
their entrypoint makes /sys and the cgroup hierarchies writable for the inner engine. The
node helpers (image, start, engine wait, image loading, leftovers) are in tests/dind.py,
shared with tests/swarm.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.tls
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.dind import (
    Node,
    host_image,
    load_images,
    mimir_images,
    put_files,
    remove_leftovers,
    start_node,
    wait_engine,
)

#: Labels every object the fixture creates (leftovers of a killed run are found by it).
LABEL = "io.mimir.test.remote"
TLS_PORT = 2376

#: Per test, instead of the suite's 300 s: whichever test comes first sets the session's
#: hosts up, and on a fresh machine that includes building the host and Mimir images.
#: (Every wait inside the tests has its own, much shorter deadline.)
REMOTE_TIMEOUT = pytest.mark.timeout(900)


# ------------------------------------------------------------------ certificates


_CA_USAGE = dict.fromkeys(
    ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
     "encipher_only", "decipher_only"),
    False,
) | {"digital_signature": True, "key_cert_sign": True, "crl_sign": True}  # fmt: skip


@dataclass
class Authority:
    """A certificate authority made for the test: its key, certificate and PEM file."""

    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    path: Path

    @classmethod
    def create(cls, directory: Path, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(**_CA_USAGE),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        path = directory / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(name, key, cert, path)

    def issue(
        self,
        directory: Path,
        stem: str,
        *,
        server_names: list[str] | None = None,
        valid_from: datetime.datetime | None = None,
        valid_until: datetime.datetime | None = None,
    ) -> tuple[Path, Path]:
        """A certificate and key (``<stem>-cert.pem``, ``<stem>-key.pem``): a server's
        naming ``server_names`` (IP addresses or DNS names), else a client's."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from or now - datetime.timedelta(minutes=5))
            .not_valid_after(valid_until or now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server_names:
            alt: list[x509.GeneralName] = []
            for name in server_names:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    alt.append(x509.DNSName(name))
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alt), critical=False
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = directory / f"{stem}-cert.pem", directory / f"{stem}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path


# ------------------------------------------------------------------ the hosts


#: One host container (tests.dind.Node: its address, its inner engine).
RemoteHost = Node


@dataclass
class TlsHost:
    """The host serving its engine over TLS on ``tcp://address:2376``."""

    host: RemoteHost
    directory: Path
    ca: Authority
    ca_path: Path
    cert_path: Path
    key_path: Path
    token: str
    profile_path: Path

    @property
    def address(self) -> str:
        return self.host.address

    @property
    def port(self) -> int:
        return TLS_PORT

    @property
    def docker_host(self) -> str:
        return f"tcp://{self.address}:{TLS_PORT}"

    def profile(self, **changes: Any) -> dict[str, Any]:
        data = json.loads(self.profile_path.read_text())
        data.update(changes)
        return {key: value for key, value in data.items() if value is not None}

    def write_profile(self, path: Path, **changes: Any) -> Path:
        """The TLS profile with ``changes`` (``None`` removes a key), written to ``path``."""
        path.write_text(json.dumps(self.profile(**changes), indent=2))
        return path

    def client(self, timeout: int = 10) -> docker.DockerClient:
        """The fixture's own TLS client (not the code under test)."""
        return tls_client(self.docker_host, self.ca_path, self.cert_path, self.key_path, timeout)


@dataclass
class SshHost:
    """The host whose engine is reached over SSH (``ssh://root@address``)."""

    host: RemoteHost
    directory: Path
    user: str
    identity: Path
    known_hosts: Path
    #: The host's ed25519 key as ``ssh-keyscan`` printed it (``address ssh-ed25519 AAAA…``).
    host_key_line: str
    profile_path: Path

    @property
    def address(self) -> str:
        return self.host.address

    @property
    def docker_host(self) -> str:
        return f"ssh://{self.user}@{self.address}"

    def ssh_command(self, known_hosts: Path | None = None) -> list[str]:
        return [
            "ssh", "-i", str(self.identity), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "ConnectTimeout=5", f"{self.user}@{self.address}",
        ]  # fmt: skip

    def profile(self, **changes: Any) -> dict[str, Any]:
        data = json.loads(self.profile_path.read_text())
        data.update(changes)
        return {key: value for key, value in data.items() if value is not None}

    def write_profile(self, path: Path, **changes: Any) -> Path:
        path.write_text(json.dumps(self.profile(**changes), indent=2))
        return path


@dataclass
class RemoteHosts:
    network: str
    tls: TlsHost
    ssh: SshHost
    #: Seconds each stage took (image, hosts, engines, loading), for the report.
    timings: dict[str, float]


def tls_client(
    base_url: str, ca: Path, cert: Path, key: Path, timeout: int = 10
) -> docker.DockerClient:
    """A client of a TLS engine that trusts ``ca`` whatever the environment says: requests
    lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override a session's CA (docker-py
    #2433, defect 3 of issue 19), and this machine sets them. No version probe in the
    constructor (it would run before ``trust_env`` is off)."""
    config = docker.tls.TLSConfig(client_cert=(str(cert), str(key)), ca_cert=str(ca), verify=True)
    client = docker.DockerClient(base_url=base_url, tls=config, timeout=timeout, version="1.41")
    client.api.trust_env = False
    return client


def _start_host(
    client: docker.DockerClient,
    image: str,
    network: str,
    role: str,
    admin_dir: Path,
    dockerd_args: list[str],
    environment: dict[str, str] | None = None,
) -> RemoteHost:
    return start_node(
        client, image, network, role, admin_dir, dockerd_args, environment,
        name=f"mimir-remote-{os.getpid()}-{role}", hostname=f"remote-{role}", label=LABEL,
    )  # fmt: skip


def _keyscan(address: str, deadline: float) -> str:
    """``ssh-keyscan`` of the host's ed25519 key, once sshd answers."""
    while True:
        result = subprocess.run(
            ["ssh-keyscan", "-T", "3", "-t", "ed25519", address],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
        if lines:
            return lines[0]
        if time.monotonic() > deadline:
            pytest.fail(f"ssh-keyscan {address}: no key: {result.stderr}", pytrace=False)
        time.sleep(0.2)


def ed25519_identity(path: Path) -> str:
    """A new ed25519 key at ``path`` (OpenSSH format, 0600); its public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode() + " mimir-remote-test"


@pytest.fixture(scope="session")
def remote_hosts() -> Generator[RemoteHosts]:
    """Both hosts, engines answering, images loaded; removed at the end of the session."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine on this machine for the remote hosts: {exc}")
    timings: dict[str, float] = {}
    started = time.monotonic()
    remove_leftovers(client, LABEL)
    image = host_image(client)
    images = mimir_images()
    timings["images"] = time.monotonic() - started
    # Short: a unix socket path has at most 107 characters.
    workdir = Path(tempfile.mkdtemp(prefix="mimir-rh-"))
    network = client.networks.create(
        f"mimir-remote-{os.getpid()}", driver="bridge", labels={LABEL: str(os.getpid())}
    )
    hosts: list[RemoteHost] = []
    try:
        stage = time.monotonic()
        # TLS: the server's certificate names the address, known once the container runs.
        tls_dir, ssh_dir = workdir / "tls", workdir / "ssh"
        for directory in (tls_dir, ssh_dir, workdir / "admin-tls", workdir / "admin-ssh"):
            directory.mkdir()
        tls = _start_host(
            client, image, network.name, "tls", workdir / "admin-tls",
            [
                "--tlsverify", "--tlscacert", "/etc/docker/tls/ca.pem",
                "--tlscert", "/etc/docker/tls/server-cert.pem",
                "--tlskey", "/etc/docker/tls/server-key.pem",
                "-H", f"tcp://0.0.0.0:{TLS_PORT}",
            ],
            {"REMOTE_HOST_WAIT_FOR": "/etc/docker/tls/server-key.pem"},
        )  # fmt: skip
        hosts.append(tls)
        ssh = _start_host(client, image, network.name, "ssh", workdir / "admin-ssh", [])
        hosts.append(ssh)
        ca = Authority.create(tls_dir, "ca")
        server_cert, server_key = ca.issue(
            tls_dir, "server", server_names=[tls.address, tls.container.name, "remote-tls"]
        )
        client_cert, client_key = ca.issue(tls_dir, "client")
        put_files(
            tls.container, "/etc/docker/tls",
            {"ca.pem": ca.path.read_bytes(), "server-cert.pem": server_cert.read_bytes(),
             "server-key.pem": server_key.read_bytes()},
        )  # fmt: skip
        identity = ssh_dir / "id_ed25519"
        public = ed25519_identity(identity)
        put_files(ssh.container, "/root/.ssh", {"authorized_keys": public.encode() + b"\n"})
        timings["hosts"] = time.monotonic() - stage

        stage = time.monotonic()
        wait_engine(
            tls,
            lambda: tls_client(
                f"tcp://{tls.address}:{TLS_PORT}", ca.path, client_cert, client_key, 5
            ),
            f"tcp://{tls.address}:{TLS_PORT} with TLS",
        )
        wait_engine(ssh, lambda: docker.DockerClient(base_url=ssh.admin_url, timeout=5), "unix")
        host_key = _keyscan(ssh.address, time.monotonic() + 30)
        known_hosts = ssh_dir / "known_hosts"
        known_hosts.write_text(host_key + "\n")
        ssh_host = SshHost(
            ssh, ssh_dir, "root", identity, known_hosts, host_key, ssh_dir / "profile.json"
        )
        # The path the code under test takes: ssh, then the remote docker CLI.
        probe = subprocess.run(
            [*ssh_host.ssh_command(), "docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert probe.returncode == 0, f"docker over ssh: {probe.stderr}\n{ssh.dockerd_log()}"
        timings["engines"] = time.monotonic() - stage

        stage = time.monotonic()
        load_images([tls, ssh], images, workdir)
        timings["load"] = time.monotonic() - stage

        token = secrets.token_urlsafe(24)
        tls_profile = tls_dir / "profile.json"
        tls_profile.write_text(
            json.dumps(
                {
                    "docker_host": f"tcp://{tls.address}:{TLS_PORT}",
                    "tls_ca": str(ca.path),
                    "tls_cert": str(client_cert),
                    "tls_key": str(client_key),
                    "api_bind": "0.0.0.0",
                    "api_token": token,
                },
                indent=2,
            )
        )
        ssh_host.profile_path.write_text(
            json.dumps(
                {
                    "docker_host": ssh_host.docker_host,
                    "ssh_identity": str(identity),
                    "ssh_known_hosts": str(known_hosts),
                },
                indent=2,
            )
        )
        timings["total"] = time.monotonic() - started
        _ACTIVE.extend(hosts)
        yield RemoteHosts(
            network=network.name,
            tls=TlsHost(tls, tls_dir, ca, ca.path, client_cert, client_key, token, tls_profile),
            ssh=ssh_host,
            timings=timings,
        )
    finally:
        _ACTIVE.clear()
        for host in hosts:
            host.close()
            with contextlib.suppress(docker.errors.APIError):
                host.container.remove(force=True, v=True)
        with contextlib.suppress(docker.errors.APIError):
            network.remove()
        shutil.rmtree(workdir, ignore_errors=True)
        client.close()


@pytest.fixture(scope="session")
def tls_host(remote_hosts: RemoteHosts) -> TlsHost:
    return remote_hosts.tls


@pytest.fixture(scope="session")
def ssh_host(remote_hosts: RemoteHosts) -> SshHost:
    return remote_hosts.ssh


# ------------------------------------------------------------------ the CLI under test

#: ``mimir cluster …`` in a child process (the console script's entry point, as installed).
CLI = [
    sys.executable,
    "-c",
    "import sys; from mimir.app.cluster.cli import main; sys.exit(main(sys.argv[1:]))",
]

#: Variables of this machine that would change what the command under test does.
SCRUBBED = (
    "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "MIMIR_CLUSTER_BACKEND", "MIMIR_API_TOKEN",
    "MIMIR_PORT", "MIMIR_REDIS_IMAGE", "MIMIR_PROJECT",
)  # fmt: skip


@dataclass
class CliResult:
    code: int
    out: str
    err: str
    seconds: float

    def __str__(self) -> str:
        return (
            f"exit {self.code} after {self.seconds:.1f} s\n--- stdout ---\n{self.out}"
            f"\n--- stderr ---\n{self.err}"
        )


@dataclass
class Cli:
    """Runs ``mimir cluster`` with a clean environment: none of this machine's Docker or CA
    variables, a state directory of its own (no local cluster recorded)."""

    state_dir: Path

    def env(self, changes: dict[str, str | None] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env["MIMIR_STATE_DIR"] = str(self.state_dir)
        for key, value in (changes or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def __call__(
        self,
        *args: str,
        env: dict[str, str | None] | None = None,
        timeout: float = 300,
        prefix: list[str] | None = None,
    ) -> CliResult:
        started = time.monotonic()
        result = subprocess.run(
            [*(prefix or []), *CLI, *args],
            env=self.env(env), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        return CliResult(
            result.returncode, result.stdout, result.stderr, time.monotonic() - started
        )

    def local_state(self) -> list[str]:
        """What a local-process cluster would have recorded here (must stay empty)."""
        return sorted(p.name for p in self.state_dir.iterdir()) if self.state_dir.exists() else []


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    state = tmp_path_factory.mktemp("state")
    return Cli(state)


#: Hosts of the session, for the failure report below.
_ACTIVE: list[RemoteHost] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    """A failed test carries the last log lines of every Mimir container on the hosts."""
    outcome: Any = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for host in list(_ACTIVE):
        try:
            engine = host.engine()
            for container in engine.containers.list(
                all=True, filters={"label": "io.mimir.project"}
            ):
                text = container.logs(tail=60, timestamps=True).decode(errors="replace")
                report.sections.append((f"{host.role} host: docker logs {container.name}", text))
        except Exception as exc:  # the report must not fail
            report.sections.append((f"{host.role} host", f"cannot read its containers: {exc}"))
