"""Reaching a Docker engine: profiles (host, TLS, SSH, API access), connecting, explaining errors.

Also the arithmetic on the engine's answers (timestamps, CPU % from two samples, memory
without page cache). Messages are for operators: no engine, socket permission, remote host
unreachable, incomplete or unusable TLS material.

One resolution path (:func:`resolve_profile`): explicit arguments > the profile > the
environment (``DOCKER_HOST``, ``DOCKER_TLS_VERIFY``, ``DOCKER_CERT_PATH``, as the docker CLI
reads them). The client :func:`connect_engine` builds ignores the environment's CA bundle and
proxies (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``HTTPS_PROXY``): requests would let them
override the profile's CA (docker-py #2433), so the engine is always reached directly.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import docker
import docker.constants
import docker.errors
import docker.tls
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from urllib3.exceptions import InsecureRequestWarning

from mimir.app.cluster.base import ClusterError

__all__ = [
    "DEFAULT_SOCKET",
    "PING_TIMEOUT",
    "DockerProfile",
    "check_tls_material",
    "connect_engine",
    "cpu_percent",
    "explain_engine_error",
    "memory_used",
    "parse_docker_time",
    "resolve_profile",
]

logger = logging.getLogger(__name__)

DEFAULT_SOCKET = "unix:///var/run/docker.sock"

#: Seconds the first exchange with an engine may take (connect and answer): a host that
#: accepts the connection and stays silent fails fast; the work then gets the longer timeout.
PING_TIMEOUT = 5.0

ApiAccess = Literal["tunnel", "published"]

_TLS_KEYS = ("tls_ca", "tls_cert", "tls_key")
_PATH_KEYS = (*_TLS_KEYS, "ssh_identity", "ssh_known_hosts")


@dataclass(frozen=True)
class DockerProfile:
    """Where the engine is and how the API is exposed (a JSON file, ``--profile``).

    ``{"docker_host": "tcp://host:2376", "tls_ca": "ca.pem", "tls_cert": "cert.pem",
    "tls_key": "key.pem", "api_bind": "0.0.0.0", "api_token": "…"}`` or
    ``{"docker_host": "ssh://user@host", "ssh_identity": "id_ed25519"}``; relative paths are
    relative to the file. ``api_access``: how this machine reaches the cluster's API,
    ``tunnel`` (default for ``ssh://`` engines: the API stays on the remote's 127.0.0.1) or
    ``published`` (default otherwise: on ``api_bind``, which a remote engine needs with a token).
    """

    docker_host: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify: bool = True
    api_bind: str | None = None
    api_port: int | None = None
    api_token: str | None = None
    ssh_identity: str | None = None
    ssh_known_hosts: str | None = None
    api_access: ApiAccess | None = None
    #: ``"swarm"``: the engine is a swarm manager and the cluster runs as Swarm services
    #: (the console's "Docker Swarm" profile); ``None``/``"docker"``: containers.
    backend: str | None = None
    #: Swarm: push images to this registry (``HOST:PORT``) instead of the in-swarm one.
    registry: str | None = None
    #: Swarm: the node (host name or id) Redis and the API server (their volumes) run on.
    data_node: str | None = None
    #: Swarm: ingress publishing and VIPs (kernels with IPVS) instead of dnsrr + host ports.
    routing_mesh: bool = False

    def __post_init__(self) -> None:
        if self.api_access not in (None, "tunnel", "published"):
            raise ClusterError(
                f"api_access must be 'tunnel' or 'published', got {self.api_access!r}"
            )
        if self.backend not in (None, "docker", "swarm"):
            raise ClusterError(f"backend must be 'docker' or 'swarm', got {self.backend!r}")

    @classmethod
    def load(cls, path: str | Path) -> DockerProfile:
        file = Path(path).expanduser()
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot read the Docker profile {file}: {exc}") from exc
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known if isinstance(data, dict) else set()
        if not isinstance(data, dict) or unknown:
            raise ClusterError(
                f"Docker profile {file}: unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        for key in _PATH_KEYS:
            if data.get(key):
                data[key] = str((file.parent / Path(data[key]).expanduser()).resolve())
        return cls(**data)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DockerProfile:
        """``DOCKER_HOST`` and, as the docker CLI reads them, the TLS material: with
        ``DOCKER_TLS_VERIFY`` (or ``DOCKER_TLS``, which skips the server check) set to
        something other than empty or ``0``, ``ca.pem``, ``cert.pem`` and ``key.pem`` of
        ``DOCKER_CERT_PATH`` (default ``DOCKER_CONFIG``, else ``~/.docker``). The files there
        are used; when none is, all three are named, so the check says which are missing."""
        env = os.environ if environ is None else environ
        host = env.get("DOCKER_HOST") or None
        verify = env.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
        if not verify and env.get("DOCKER_TLS", "") in ("", "0"):
            return cls(docker_host=host)
        folder = env.get("DOCKER_CERT_PATH") or env.get("DOCKER_CONFIG") or "~/.docker"
        certs = Path(folder).expanduser()
        files = {key: certs / f"{key.removeprefix('tls_')}.pem" for key in _TLS_KEYS}
        present = {key: str(path) for key, path in files.items() if path.is_file()}
        named = present or {key: str(path) for key, path in files.items()}
        return cls(
            docker_host=host, tls_verify=verify, tls_ca=named.get("tls_ca"),
            tls_cert=named.get("tls_cert"), tls_key=named.get("tls_key"),
        )  # fmt: skip

    @property
    def uses_tls(self) -> bool:
        return any(getattr(self, key) for key in _TLS_KEYS)

    @property
    def is_ssh(self) -> bool:
        return (self.docker_host or "").startswith("ssh://")

    @property
    def access(self) -> ApiAccess:
        """``api_access``, else its default for the engine's scheme."""
        return self.api_access or ("tunnel" if self.is_ssh else "published")


def resolve_profile(
    docker_host: str | None = None,
    profile: DockerProfile | None = None,
    environ: Mapping[str, str] | None = None,
) -> DockerProfile:
    """The engine and its TLS material: ``docker_host`` > the profile's > ``DOCKER_HOST``.

    A profile that names its engine is complete: its TLS material (or none) is used as it
    is. Otherwise a ``tcp://`` engine gets the environment's TLS material
    (:meth:`DockerProfile.from_env`: ``DOCKER_TLS_VERIFY``, ``DOCKER_CERT_PATH``), as the
    docker CLI gives it to ``-H`` and ``DOCKER_HOST`` alike."""
    profile = profile or DockerProfile()
    env = DockerProfile.from_env(environ)
    host = docker_host or profile.docker_host or env.docker_host
    resolved = replace(profile, docker_host=host or None)
    tcp = (host or "").startswith(("tcp://", "https://"))
    if not profile.docker_host and not profile.uses_tls and env.uses_tls and tcp:
        resolved = replace(
            resolved, tls_ca=env.tls_ca, tls_cert=env.tls_cert, tls_key=env.tls_key,
            tls_verify=env.tls_verify,
        )  # fmt: skip
    return resolved


def explain_engine_error(exc: BaseException, host: str) -> ClusterError:
    """Turn an SDK/transport error into a message an operator can act on."""
    text = f"{exc}"
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    every = " ".join(f"{type(e).__name__}: {e}" for e in chain)
    if any(isinstance(e, PermissionError) for e in chain) or "Permission denied" in every:
        return ClusterError(
            f"permission denied on the Docker socket ({host}): add your user to the 'docker' "
            "group (sudo usermod -aG docker $USER, then log in again) or run as root"
        )
    if host.startswith("unix://") or host == "":
        if any(isinstance(e, FileNotFoundError) for e in chain) or "No such file" in every:
            return ClusterError(
                f"no Docker engine: {host or 'the local socket'} does not exist. Start dockerd "
                "(or Docker Desktop), or use the local-process backend (--backend local)"
            )
        if "Connection refused" in every:
            return ClusterError(
                f"no Docker engine answers on {host}: is dockerd running? (or use --backend local)"
            )
    if "CERTIFICATE_VERIFY_FAILED" in every:
        return ClusterError(
            f"the Docker engine at {host} presented a certificate the CA does not vouch for "
            "(or not for this host name): check tls_ca (DOCKER_CERT_PATH/ca.pem)"
        )
    if "Client sent an HTTP request to an HTTPS server" in every:
        return ClusterError(
            f"the Docker engine at {host} speaks TLS: give the CA, client certificate and key "
            "(tls_ca, tls_cert, tls_key in the profile, or DOCKER_TLS_VERIFY=1 and "
            "DOCKER_CERT_PATH)"
        )
    if re.search(r"SSL|TLS", every) and re.search(r"certificate required|bad certificate", every):
        return ClusterError(
            f"the Docker engine at {host} refused the client certificate: give tls_cert and "
            "tls_key signed by the CA the engine trusts (dockerd --tlscacert)"
        )
    if re.search(r"ReadTimeout|ConnectTimeout|timed out", every):
        return ClusterError(
            f"cannot reach the Docker engine at {host}: it did not answer within "
            f"{PING_TIMEOUT:.0f} s; check the host and port, that dockerd listens there, and "
            "any firewall on the way"
        )
    if host.startswith(("ssh://", "tcp://", "http://", "https://")):
        if "Connection refused" in every:
            return ClusterError(
                f"cannot reach the Docker engine at {host}: nothing listens there (connection "
                "refused); check the host and port, and that dockerd serves that address"
            )
        material = "the SSH key" if host.startswith("ssh://") else "the TLS material"
        return ClusterError(
            f"cannot reach the Docker engine at {host}: {text.splitlines()[0] if text else every}"
            f" (check the host name, that it is up, and {material})"
        )
    return ClusterError(f"Docker engine error ({host or 'local socket'}): {text}")


def _read_file(label: str, path: str) -> bytes:
    """The bytes of a TLS file, or an error naming which one and where."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ClusterError(f"the TLS file {label} does not exist: {path}") from None
    except OSError as exc:
        raise ClusterError(
            f"the TLS file {label} cannot be read: {path} ({exc.strerror or exc})"
        ) from None


def _load_cert(label: str, path: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read_file(label, path))
    except ValueError as exc:
        raise ClusterError(f"the TLS file {label} is not a PEM certificate: {path}") from exc


def _check_dates(label: str, path: str, cert: x509.Certificate, now: datetime) -> None:
    subject = cert.subject.rfc4514_string() or "(no subject)"
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now > end:
        raise ClusterError(
            f"the certificate {label} ({path}, {subject}) expired on {end:%Y-%m-%d %H:%M} UTC: "
            "issue a new one"
        )
    if now < start:
        raise ClusterError(
            f"the certificate {label} ({path}, {subject}) is not valid before "
            f"{start:%Y-%m-%d %H:%M} UTC: check this machine's clock, or issue a new one"
        )


def check_tls_material(profile: DockerProfile) -> None:
    """Check the profile's TLS files here, before connecting, so that each fault gets its own
    message (which file, which dates) instead of the engine's one "bad certificate"."""
    if bool(profile.tls_cert) != bool(profile.tls_key):
        have, missing = ("tls_cert", "tls_key") if profile.tls_cert else ("tls_key", "tls_cert")
        raise ClusterError(
            f"the profile gives {have} without {missing}: a client certificate needs both "
            "its certificate and its private key"
        )
    now = datetime.now(UTC)
    ca = None
    if profile.tls_ca:
        ca = _load_cert("tls_ca", profile.tls_ca)
        _check_dates("tls_ca", profile.tls_ca, ca, now)
    if not (profile.tls_cert and profile.tls_key):
        return
    cert = _load_cert("tls_cert", profile.tls_cert)
    key_bytes = _read_file("tls_key", profile.tls_key)
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as exc:
        raise ClusterError(
            f"the TLS file tls_key is not an unencrypted PEM private key: {profile.tls_key}"
        ) from exc
    _check_dates("tls_cert", profile.tls_cert, cert, now)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) != cert.public_key().public_bytes(serialization.Encoding.DER, public):
        raise ClusterError(
            f"the key {profile.tls_key} does not belong to the certificate {profile.tls_cert}: "
            "give the key the certificate was issued for"
        )
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature) as exc:  # wrong issuer or signature
            raise ClusterError(
                f"the client certificate {profile.tls_cert} (issued by "
                f"{cert.issuer.rfc4514_string()}) is not signed by the CA {profile.tls_ca} "
                f"({ca.subject.rfc4514_string()}): use a certificate and CA of the same pair"
            ) from exc


_insecure_warned: set[str] = set()
_insecure_lock = threading.Lock()


def _warn_insecure(host: str) -> None:
    """One log warning per engine and process for ``tls_verify: false``; urllib3's own
    warning (one per request) is silenced for that engine's host only."""
    name = re.sub(r"^\w+://", "", host).rsplit(":", 1)[0].strip("[]")
    with _insecure_lock:
        if host in _insecure_warned:
            return
        _insecure_warned.add(host)
        warnings.filterwarnings(
            "ignore",
            message=rf"Unverified HTTPS request is being made to host '{re.escape(name)}'",
            category=InsecureRequestWarning,
        )
    logger.warning(
        "TLS verification is off for the Docker engine at %s (tls_verify: false): anyone on "
        "the way can impersonate it",
        host,
    )


def connect_engine(
    docker_host: str, profile: DockerProfile, timeout: int = 60
) -> docker.DockerClient:
    """A client for the engine (``docker_host``, else the profile's, else ``DOCKER_HOST``,
    else the local socket) that has answered; raise :class:`ClusterError` with an actionable
    message otherwise.

    The first exchange (``/version``, which also picks the API version) has
    :data:`PING_TIMEOUT`; the client then uses ``timeout``. ``ssh://`` engines are reached
    through :class:`~mimir.app.cluster.remote.SshTunnel` (the caller passes its socket).
    """
    resolved = resolve_profile(docker_host or None, profile)
    host = resolved.docker_host or DEFAULT_SOCKET
    if host.startswith("ssh://"):
        raise ClusterError(
            f"{host}: an ssh:// engine is reached through an SSH tunnel (the Docker backend "
            "opens one, or: mimir cluster tunnel)"
        )
    tls: docker.tls.TLSConfig | bool = False
    if resolved.uses_tls:
        check_tls_material(resolved)
        cert = (resolved.tls_cert, resolved.tls_key) if resolved.tls_cert else None
        tls = docker.tls.TLSConfig(
            client_cert=cert, ca_cert=resolved.tls_ca, verify=resolved.tls_verify
        )
        if not resolved.tls_verify:
            _warn_insecure(host)
    try:
        probe = docker.DockerClient(
            base_url=host, tls=tls, timeout=int(PING_TIMEOUT),
            version=docker.constants.MINIMUM_DOCKER_API_VERSION,
        )  # fmt: skip
        probe.api.trust_env = False  # docker-py #2433: the profile's CA, not the environment's
        try:
            version = str(probe.api.version(api_version=False)["ApiVersion"])
        finally:
            probe.close()
        client = docker.DockerClient(base_url=host, tls=tls, timeout=timeout, version=version)
        client.api.trust_env = False
    except docker.errors.TLSParameterError as exc:
        raise ClusterError(f"Docker TLS settings are incomplete: {exc}") from exc
    except Exception as exc:
        raise explain_engine_error(exc, host) from exc
    return client


def parse_docker_time(value: str) -> float:
    # Docker timestamps have nanoseconds: 2024-01-01T12:00:00.123456789Z
    try:
        head, _, frac = value.rstrip("Z").partition(".")
        stamp = datetime.fromisoformat(head + "+00:00").timestamp()
        return stamp + (float(f"0.{frac}") if frac else 0.0)
    except ValueError:
        return 0.0


def cpu_percent(sample: dict[str, Any]) -> float:
    """CPU % from a stats sample: the delta against the engine's previous sample."""
    cpu, pre = sample.get("cpu_stats", {}), sample.get("precpu_stats", {})
    total = cpu.get("cpu_usage", {}).get("total_usage", 0)
    pre_total = pre.get("cpu_usage", {}).get("total_usage", 0)
    system, pre_system = cpu.get("system_cpu_usage", 0), pre.get("system_cpu_usage", 0)
    cores = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or [1])
    if not pre_system or system <= pre_system or total < pre_total:
        return 0.0
    return round((total - pre_total) / (system - pre_system) * cores * 100.0, 1)


def memory_used(sample: dict[str, Any]) -> tuple[int, int | None]:
    memory = sample.get("memory_stats", {})
    usage = int(memory.get("usage", 0))
    stats = memory.get("stats", {})
    # Page cache is reclaimable; subtract it as `docker stats` does (cgroup v1 / v2 key).
    cache = stats.get("total_inactive_file", stats.get("inactive_file", stats.get("cache", 0)))
    limit = memory.get("limit")
    return max(usage - int(cache or 0), 0), int(limit) if limit else None
