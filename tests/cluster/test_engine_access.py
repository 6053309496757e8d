"""How the CLI and the Docker backend reach an engine (issue 19, part A): backend selection,
the standard Docker variables, TLS material checked locally, the environment's CA bundle,
fast failures, the bind/token rule, SSH host keys.

Everything runs on 127.0.0.1. The TLS engine is the local dockerd behind a TLS proxy that
asks for a client certificate (as ``dockerd --tlsverify`` does); the certificates are made
here with ``cryptography``. Real remote hosts (TLS and SSH engines in their own containers)
are in ``tests/remote``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from urllib3.exceptions import InsecureRequestWarning

from mimir.app.cluster.base import ClusterError
from mimir.app.cluster.cli import main as cluster_main
from mimir.app.cluster.docker_backend import DockerBackend
from mimir.app.cluster.docker_engine import (
    DockerProfile,
    check_tls_material,
    connect_engine,
    resolve_profile,
)
from mimir.app.cluster.remote import (
    HostKey,
    SshTunnel,
    accept_host_key,
    known_host_status,
)
from mimir.app.cluster.selection import default_backend_name, docker_engine_answers
from mimir.core.settings import Settings
from tests.helpers import free_port, port_open, wait_until

DOCKER_SOCKET = Path("/var/run/docker.sock")
no_engine = pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers")


# ---------------------------------------------------------------- certificates


@dataclass
class Issued:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(cert_file, key_file)


def _issue(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start or now - dt.timedelta(days=1))
        .not_valid_after(end or now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


@dataclass
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    expired: Issued
    future: Issued
    other_ca: Issued
    foreign: Issued  # a client certificate of the other CA
    stray_key: Path  # a key of no certificate here


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key, other_key = _key(), _key()
    ca_cert = _issue("Mimir test CA", ca_key, ca=True)
    other_cert = _issue("Another CA", other_key, ca=True)

    def leaf(
        name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], **kw: object
    ) -> Issued:
        key = _key()
        return _write(base, name, _issue(name, key, issuer, **kw), key)  # type: ignore[arg-type]

    stray = _key()
    stray_file = _write(base, "stray", _issue("stray", stray), stray).key
    return Pki(
        ca=_write(base, "ca", ca_cert, ca_key),
        server=leaf("server", (ca_cert, ca_key), server=True),
        client=leaf("client", (ca_cert, ca_key)),
        expired=leaf(
            "expired",
            (ca_cert, ca_key),
            start=now - dt.timedelta(days=60),
            end=now - dt.timedelta(days=30),
        ),
        future=leaf(
            "future",
            (ca_cert, ca_key),
            start=now + dt.timedelta(days=30),
            end=now + dt.timedelta(days=60),
        ),
        other_ca=_write(base, "other-ca", other_cert, other_key),
        foreign=leaf("foreign", (other_cert, other_key)),
        stray_key=stray_file,
    )


def _profile(pki: Pki, host: str, **overrides: object) -> DockerProfile:
    values: dict[str, object] = {
        "docker_host": host,
        "tls_ca": str(pki.ca.cert),
        "tls_cert": str(pki.client.cert),
        "tls_key": str(pki.client.key),
    }
    values.update(overrides)
    return DockerProfile(**values)  # type: ignore[arg-type]


# ---------------------------------------------------------------- a TLS engine on 127.0.0.1


class TlsEngine:
    """The local dockerd's socket behind TLS on 127.0.0.1 that requires a client
    certificate of the test CA, as ``dockerd --tlsverify`` on ``tcp://…:2376``."""

    def __init__(self, pki: Pki) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(pki.server.cert, pki.server.key)
        self.context.load_verify_locations(pki.ca.cert)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.handshakes_failed = 0
        self._closing = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closing:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(raw,), daemon=True).start()

    def _one(self, raw: socket.socket) -> None:
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshakes_failed += 1
            raw.close()
            return
        engine = socket.socket(socket.AF_UNIX)
        engine.connect(str(DOCKER_SOCKET))

        def pump(source: socket.socket, target: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    target.sendall(data)
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(engine, conn), daemon=True)
        back.start()
        pump(conn, engine)
        back.join(timeout=30)
        conn.close()
        engine.close()

    def close(self) -> None:
        self._closing = True
        self.listener.close()


@pytest.fixture
def tls_engine(pki: Pki) -> Iterator[TlsEngine]:
    engine = TlsEngine(pki)
    yield engine
    engine.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Docker or Mimir variables of the machine; a private state directory."""
    for name in (
        "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT",
        "MIMIR_CLUSTER_BACKEND", "MIMIR_API_TOKEN", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("MIMIR_STATE_DIR", str(state))
    monkeypatch.setenv("MIMIR_PORT", str(free_port()))
    return state


# ---------------------------------------------------------------- 1. backend selection


@pytest.mark.parametrize("how", ["--docker-host", "--profile", "DOCKER_HOST"])
def test_a_named_engine_that_does_not_answer_is_the_error_never_local_processes(
    how: str, clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    closed = free_port()
    engine = f"tcp://127.0.0.1:{closed}"
    api_port = int(os.environ["MIMIR_PORT"])
    # A local cluster recorded for the project does not win over a named engine either.
    (clean_env / "mimir").mkdir(parents=True)
    (clean_env / "mimir" / "state.json").write_text("{}")
    options: list[str] = []
    if how == "--docker-host":
        options = ["--docker-host", engine]
    elif how == "--profile":
        profile = tmp_path / "remote.json"
        profile.write_text(json.dumps({"docker_host": engine}))
        options = ["--profile", str(profile)]
    else:
        monkeypatch.setenv("DOCKER_HOST", engine)

    assert cluster_main(["up", "--workers", "1", *options]) == 1
    out, err = capsys.readouterr()
    assert "using the docker backend" in err
    assert f"127.0.0.1:{closed}" in err and "connection refused" in err
    assert not port_open(api_port), "local processes were started"
    assert json.loads((clean_env / "mimir" / "state.json").read_text()) == {}

    code = cluster_main(["status", *options])
    out, err = capsys.readouterr()
    assert code == 1
    assert "(local)" not in out and f"127.0.0.1:{closed}" in err


def test_selection_names_the_docker_backend_for_every_engine_source(clean_env: Path) -> None:
    settings = Settings.from_env()
    assert default_backend_name("p", settings, docker_host="tcp://127.0.0.1:1") == "docker"
    assert default_backend_name("p", settings, profile="remote.json") == "docker"
    (clean_env / "p").mkdir(parents=True)
    (clean_env / "p" / "state.json").write_text("{}")
    assert default_backend_name("p", settings) == "local"  # the recorded local cluster
    with_host = Settings.from_env({**os.environ, "DOCKER_HOST": "ssh://me@host"})
    assert default_backend_name("p", with_host) == "docker"


def test_backend_local_with_a_named_engine_is_refused(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cluster_main(["status", "--backend", "local", "--docker-host", "tcp://127.0.0.1:1"])
    assert code == 1
    assert "leave out --backend local" in capsys.readouterr().err


# ---------------------------------------------------------------- 4. the Docker variables


def test_from_env_reads_the_docker_cli_variables(tmp_path: Path) -> None:
    assert DockerProfile.from_env({}) == DockerProfile()
    for off in ("", "0"):
        env = {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": off}
        assert DockerProfile.from_env(env) == DockerProfile(docker_host="tcp://h:2376")
    env = {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/certs"}
    profile = DockerProfile.from_env(env)  # none of the files exists: all three are named
    assert (profile.tls_ca, profile.tls_cert, profile.tls_key) == (
        "/certs/ca.pem", "/certs/cert.pem", "/certs/key.pem",
    )  # fmt: skip
    assert profile.tls_verify
    (tmp_path / "ca.pem").write_text("x")  # only a CA: the engine asks for no client cert
    only_ca = DockerProfile.from_env({**env, "DOCKER_CERT_PATH": str(tmp_path)})
    assert only_ca.tls_ca == str(tmp_path / "ca.pem") and only_ca.tls_cert is None
    unverified = DockerProfile.from_env({"DOCKER_TLS": "1", "DOCKER_CERT_PATH": str(tmp_path)})
    assert unverified.uses_tls and not unverified.tls_verify
    default = DockerProfile.from_env({"DOCKER_TLS_VERIFY": "1"})
    assert default.tls_ca == str(Path("~/.docker/ca.pem").expanduser())


def test_resolution_is_arguments_then_profile_then_environment() -> None:
    env = {"DOCKER_HOST": "tcp://env:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/e"}
    assert resolve_profile(None, None, env).docker_host == "tcp://env:2376"
    assert resolve_profile(None, None, env).tls_ca == "/e/ca.pem"
    mine = DockerProfile(docker_host="tcp://profile:2376", tls_ca="/p/ca.pem")
    assert resolve_profile(None, mine, env) == mine  # the profile's TLS, not the environment's
    # A profile that names its engine is complete: no TLS there means none.
    plain = DockerProfile(docker_host="tcp://profile:2375")
    assert resolve_profile(None, plain, env) == plain
    # --docker-host gets the environment's TLS, as docker -H does.
    assert resolve_profile("tcp://arg:2376", None, env).tls_key == "/e/key.pem"
    explicit = resolve_profile("tcp://arg:2376", mine, env)
    assert explicit.docker_host == "tcp://arg:2376" and explicit.tls_ca == "/p/ca.pem"
    # The environment's TLS goes with TCP engines only, not ssh:// or unix://.
    assert not resolve_profile("ssh://me@host", None, env).uses_tls
    assert not resolve_profile("unix:///var/run/docker.sock", None, env).uses_tls


@pytest.mark.docker
@no_engine
@pytest.mark.parametrize("via", ["connect_engine", "settings"])
@pytest.mark.usefixtures("clean_env")
def test_docker_host_tls_verify_and_cert_path_are_honoured(
    via: str, pki: Pki, tls_engine: TlsEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tmp_path / "docker-certs"
    certs.mkdir()
    shutil.copy(pki.ca.cert, certs / "ca.pem")
    shutil.copy(pki.client.cert, certs / "cert.pem")
    shutil.copy(pki.client.key, certs / "key.pem")
    monkeypatch.setenv("DOCKER_HOST", tls_engine.url)
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs))
    if via == "connect_engine":
        client = connect_engine("", DockerProfile())
        try:
            assert client.ping()
        finally:
            client.close()
    else:
        # DOCKER_HOST reaches the backend through settings.docker_host: TLS must come along.
        backend = DockerBackend("mimirenginetls", Settings.from_env())
        try:
            status = asyncio.run(backend.status())
        finally:
            backend.close()
        assert status.backend == "docker" and not status.running
    assert tls_engine.handshakes_failed == 0


# ---------------------------------------------------------------- 3. the environment's CA


@pytest.mark.docker
@no_engine
@pytest.mark.usefixtures("clean_env")
def test_the_environments_ca_bundle_does_not_override_the_profiles_ca(
    pki: Pki, tls_engine: TlsEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docker-py #2433: requests let these win over the session's CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.other_ca.cert))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki.other_ca.cert))
    # Proxies from the environment are not used for the engine either (README).
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")
    client = connect_engine(tls_engine.url, _profile(pki, tls_engine.url))
    try:
        assert client.ping()
        client.containers.list(limit=1)  # a later request than the first exchange
    finally:
        client.close()


# ---------------------------------------------------------------- 6. fast, precise failures


def test_an_engine_that_accepts_and_stays_silent_fails_within_six_seconds(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    url = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    try:
        started = time.monotonic()
        with pytest.raises(ClusterError, match="did not answer within 5 s"):
            connect_engine(url, DockerProfile())
        assert time.monotonic() - started < 6.5
        assert held, "the silent engine never saw the connection"

        started = time.monotonic()
        assert cluster_main(["status", "--docker-host", url]) == 1
        assert time.monotonic() - started < 6.5
        assert "did not answer within 5 s" in capsys.readouterr().err
    finally:
        listener.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tls_ca": "missing/ca.pem"}, r"TLS file tls_ca does not exist: .*missing/ca\.pem"),
        ({"tls_key": "missing/key.pem"}, r"TLS file tls_key does not exist: .*missing/key\.pem"),
        ({"tls_cert": "a-directory"}, r"TLS file tls_cert cannot be read: .*a-directory"),
        ({"tls_key": None}, "gives tls_cert without tls_key"),
        ({"tls_cert": None}, "gives tls_key without tls_cert"),
        ({"tls_cert": "expired"}, r"expired\.pem.*CN=expired\) expired on \d{4}-\d\d-\d\d"),
        ({"tls_cert": "future"}, r"future\.pem.*is not valid before \d{4}-\d\d-\d\d"),
        ({"tls_key": "stray"}, r"stray-key\.pem does not belong to the certificate .*client\.pem"),
        ({"tls_cert": "foreign"}, r"foreign\.pem \(issued by CN=Another CA\) is not signed by"),
        ({"tls_ca": "expired-ca"}, r"certificate tls_ca .* expired on"),
    ],
)
def test_tls_material_is_checked_here_each_fault_named(
    change: dict[str, str | None], message: str, pki: Pki, tmp_path: Path
) -> None:
    (tmp_path / "a-directory").mkdir()
    # An expired CA: the expired leaf used as one is enough for the date check.
    names = {
        "expired": pki.expired, "future": pki.future, "foreign": pki.foreign,
        "expired-ca": pki.expired,
    }  # fmt: skip
    values: dict[str, str | None] = {}
    for key, value in change.items():
        if value in names:
            issued = names[value]
            values[key] = str(issued.cert)
            if key == "tls_cert":
                values["tls_key"] = str(issued.key)
        elif value == "stray":
            values[key] = str(pki.stray_key)
        elif value is None:
            values[key] = None
        else:
            values[key] = str(tmp_path / value)
    # A port where nothing listens: the check must come first, before any connection.
    url = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError, match=message):
        connect_engine(url, _profile(pki, url, **values))


def test_good_tls_material_passes_the_local_check(pki: Pki) -> None:
    check_tls_material(_profile(pki, "tcp://127.0.0.1:2376"))
    url = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError, match="connection refused"):
        connect_engine(url, _profile(pki, url))


@pytest.mark.docker
@no_engine
@pytest.mark.usefixtures("clean_env")
def test_tls_verify_false_warns_once_not_once_per_request(
    pki: Pki, tls_engine: TlsEngine, caplog: pytest.LogCaptureFixture
) -> None:
    profile = _profile(pki, tls_engine.url, tls_ca=None, tls_verify=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with caplog.at_level(logging.WARNING):
            for _ in range(2):
                client = connect_engine(tls_engine.url, profile)
                try:
                    for _ in range(5):
                        client.containers.list(limit=1)
                finally:
                    client.close()
    insecure = [w for w in caught if issubclass(w.category, InsecureRequestWarning)]
    assert insecure == []
    said = [r for r in caplog.records if "TLS verification is off" in r.getMessage()]
    assert len(said) == 1, said


# ---------------------------------------------------------------- the bind/token rule


@pytest.mark.usefixtures("clean_env")
def test_commands_that_publish_nothing_are_not_refused_by_the_token_rule() -> None:
    # Before: the constructor applied the rule, so down/status/logs were refused.
    backend = DockerBackend("mimiraccess", docker_host="tcp://127.0.0.1:1", api_bind="0.0.0.0")
    with pytest.raises(ClusterError, match="connection refused"):
        asyncio.run(backend.down())


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ([], "its loopback, unreachable from here"),
        (["--bind", "0.0.0.0"], "without a token"),
    ],
)
@pytest.mark.usefixtures("clean_env")
def test_up_on_a_remote_engine_refuses_an_unreachable_or_open_api_before_connecting(
    options: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # engine.invalid is never resolved: the refusal comes before any connection.
    started = time.monotonic()
    assert cluster_main(["up", "--docker-host", "tcp://engine.invalid:2376", *options]) == 1
    assert time.monotonic() - started < 2.0
    err = capsys.readouterr().err
    assert f"remote engine engine.invalid ({why}" in err
    assert "set api_bind" in err and "ssh://" in err


@pytest.mark.usefixtures("clean_env")
def test_how_the_api_is_reached_is_said() -> None:
    remote = DockerBackend(
        "p", docker_host="tcp://engine.example:2376", api_bind="10.0.0.5", api_token="t",
        api_port=8080,
    )  # fmt: skip
    assert remote.api_url == "http://10.0.0.5:8080"
    assert remote.api_reach == "published on 10.0.0.5:8080 with a token"
    everywhere = DockerBackend(
        "p", docker_host="tcp://engine.example:2376", api_bind="0.0.0.0", api_token="t",
        api_port=8080,
    )  # fmt: skip
    assert everywhere.api_url == "http://engine.example:8080"
    local = DockerBackend("p", api_port=8080)
    assert local.api_url == "http://127.0.0.1:8080"
    assert local.api_reach == "published on 127.0.0.1:8080 without a token"
    ssh = DockerBackend("p", docker_host="ssh://me@engine.example", api_port=8080)
    assert ssh.tunneled and ssh.api_reach == "SSH tunnel to engine.example:8080"
    with pytest.raises(ClusterError, match="api_access 'tunnel' needs an ssh:// engine"):
        DockerBackend("p", profile=DockerProfile(docker_host="tcp://h:2376", api_access="tunnel"))


# ---------------------------------------------------------------- SSH host keys and tunnel


def _host_key(tmp_path: Path, name: str, host: str = "127.0.0.1", port: int = 2222) -> HostKey:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True
    )
    public = (tmp_path / f"{name}.pub").read_text().split()
    line = f"[{host}]:{port} {public[0]} {public[1]}"
    return HostKey(host, port, public[0], "SHA256:unused", line)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")
def test_host_keys_are_accepted_into_a_private_known_hosts_and_a_change_is_seen(
    tmp_path: Path,
) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    key, other = _host_key(tmp_path, "a"), _host_key(tmp_path, "b")
    assert known_host_status([key], known) == "unknown"
    accept_host_key(key, known)
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    assert stat.S_IMODE(known.parent.stat().st_mode) == 0o700
    assert known_host_status([key], known) == "known"
    assert known_host_status([other], known) == "changed"
    accept_host_key(_host_key(tmp_path, "c", port=2223), known)
    assert len(known.read_text().splitlines()) == 2


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client")
def test_the_tunnel_says_clearly_when_no_ssh_server_answers(tmp_path: Path) -> None:
    tunnel = SshTunnel(f"ssh://me@127.0.0.1:{free_port()}", known_hosts=tmp_path / "kh")
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"no SSH server at 127\.0\.0\.1:\d+ \(connection"):
        tunnel.start()
    assert time.monotonic() - started < 6.0
    assert tunnel._dir is None and not tunnel.running  # private directory removed
    missing = SshTunnel("ssh://me@127.0.0.1", identity=str(tmp_path / "no-key"))
    with pytest.raises(ClusterError, match="the SSH key ssh_identity does not exist"):
        missing.start()


# ---------------------------------------------------------------- a running cluster's bind


@pytest.mark.docker
@pytest.mark.slow
@no_engine
def test_up_with_another_bind_on_a_running_cluster_says_so_instead_of_keeping_the_old(
    clean_env: Path,
) -> None:
    project = "mimirbindtest"
    first = DockerBackend(project, api_port=free_port(), start_timeout=120)
    try:
        asyncio.run(first.clean())
        asyncio.run(first.build())
        asyncio.run(first.up(0))
        again = DockerBackend(
            project, api_port=first.api_port, api_bind="0.0.0.0", api_token="secret-token"
        )
        try:
            with pytest.raises(ClusterError, match=r"published on 127\.0\.0\.1, not 0\.0\.0\.0"):
                asyncio.run(again.up(0))
        finally:
            again.close()
        status = asyncio.run(first.status())
        assert status.running
        wait_until(lambda: port_open(first.api_port), timeout=10, message="the API still runs")
    finally:
        asyncio.run(first.clean())
        first.close()
