"""Connection profiles: which cluster the console drives and which API it talks to.

Profiles are kept as JSON under one key of a settings store with the ``value``/``setValue``
interface (a ``QSettings`` in the console, a dict-backed store in tests). Tokens never go
there: they go to the platform keyring (``keyring``) when one is usable, else they live in
memory for the session only, and :attr:`TokenStore.secure` says which.

A ``remote_docker`` profile also says how the engine is reached (TLS material for
``tcp://``, an SSH identity and known-hosts file for ``ssh://``) and how the API is
(through an SSH tunnel, or published on an interface with a token):
:meth:`ConnectionProfile.docker_profile` turns it into the Docker backend's
:class:`~mimir.app.cluster.docker_engine.DockerProfile`. Profiles can be imported from the
standard Docker variables (:func:`profile_from_env`) and from Docker contexts
(:func:`docker_contexts`, :func:`profile_from_context`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from mimir.app.cluster.docker_engine import DockerProfile

__all__ = [
    "API_ACCESS",
    "DEFAULT_KNOWN_HOSTS",
    "DEFAULT_PROFILES",
    "PROFILE_KINDS",
    "ApiAccess",
    "ConnectionProfile",
    "DictSettings",
    "DockerContext",
    "ProfileKind",
    "ProfileStore",
    "SettingsLike",
    "TokenStore",
    "docker_config_dir",
    "docker_contexts",
    "is_loopback",
    "profile_from_context",
    "profile_from_env",
]

logger = logging.getLogger(__name__)

ProfileKind = Literal["local_processes", "local_docker", "remote_docker", "remote_api"]

#: Kind → label shown to the operator.
PROFILE_KINDS: dict[str, str] = {
    "local_processes": "Local processes",
    "local_docker": "Local Docker",
    "remote_docker": "Remote Docker host",
    "remote_api": "Remote API only",
}

ApiAccess = Literal["tunnel", "published"]

#: How the console reaches a remote cluster's API → label shown to the operator.
API_ACCESS: dict[str, str] = {
    "tunnel": "SSH tunnel (nothing exposed on the host)",
    "published": "Published on an interface, with a token",
}

#: Where host keys are checked and kept unless a profile names another file.
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"

_KEYRING_SERVICE = "mimir-aip-console"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.1``, ``::1``, ``127.x``)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConnectionProfile:
    """How to reach one cluster. ``docker_host`` is for ``remote_docker`` (``ssh://…``,
    ``tcp://…``); ``remote_api`` has no cluster control, only ``api_url``.

    The engine fields (TLS files, SSH identity and known-hosts file, API access and bind)
    are kept in the profile; paths are stored as the operator gave them (``~`` allowed).
    The API token is not a field: it lives in the :class:`TokenStore`.
    """

    name: str
    kind: ProfileKind = "local_processes"
    api_url: str = "http://127.0.0.1:8080"
    #: A PEM CA file trusted (besides the default CAs) for an ``https://`` :attr:`api_url`
    #: ("": the default CAs, or ``$MIMIR_CA_FILE``).
    api_ca: str = ""
    docker_host: str = ""
    project: str = "mimir"
    workers: int = 2
    #: CA certificate, client certificate and its key (``tcp://`` engines).
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    #: Check the engine's certificate against the CA (off: anyone on the path can pose
    #: as the engine).
    tls_verify: bool = True
    #: The private key for ``ssh://`` engines ("": the ssh-agent and ~/.ssh/config).
    ssh_identity: str = ""
    #: Where host keys are checked and accepted ones written ("": ~/.ssh/known_hosts).
    ssh_known_hosts: str = ""
    #: ``tunnel``, ``published``, or "" for the default (tunnel over ssh://, else published).
    api_access: str = ""
    #: The interface a published API listens on (on the engine's host).
    api_bind: str = ""
    #: Docker Swarm: the engine (local or remote) is a swarm manager and the cluster runs as
    #: Swarm services on its nodes (the Swarm backend; it needs an API token).
    swarm: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def controls_cluster(self) -> bool:
        return self.kind != "remote_api"

    @property
    def api_port(self) -> int | None:
        """The port of :attr:`api_url` (``None`` when it names none): where a cluster
        this profile starts publishes its API."""
        try:
            parsed = urlsplit(self.api_url)
            if parsed.port is not None:
                return parsed.port
        except ValueError:
            return None
        return {"http": 80, "https": 443}.get(parsed.scheme) if parsed.hostname else None

    @property
    def backend(self) -> Literal["local", "docker", "swarm"] | None:
        if self.kind == "local_processes":
            return "local"
        if self.kind in ("local_docker", "remote_docker"):
            return "swarm" if self.swarm else "docker"
        return None

    @property
    def engine_scheme(self) -> str:
        """``ssh``, ``tcp``, ``unix`` … of :attr:`docker_host` ("" when none)."""
        return self.docker_host.partition("://")[0].lower() if "://" in self.docker_host else ""

    @property
    def engine_host(self) -> str:
        """The engine's host name from :attr:`docker_host` ("" for a socket)."""
        try:
            return urlsplit(self.docker_host).hostname or ""
        except ValueError:
            return ""

    @property
    def effective_api_access(self) -> ApiAccess | None:
        """How the API of this profile's cluster is reached: the chosen way, else a tunnel
        over ``ssh://`` and published otherwise; ``None`` when no remote engine."""
        if self.kind != "remote_docker":
            return None
        if self.api_access in API_ACCESS:
            return self.api_access  # type: ignore[return-value]
        return "tunnel" if self.engine_scheme == "ssh" else "published"

    @property
    def known_hosts_path(self) -> Path:
        """The known-hosts file host keys are checked against and accepted into."""
        return Path(self.ssh_known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()

    def docker_profile(self, token: str | None = None) -> DockerProfile:
        """The Docker backend's profile for this one (``token``: the API token from the
        :class:`TokenStore`). Fields the installed backend does not know are left out."""
        from mimir.app.cluster.docker_engine import DockerProfile

        def path(value: str) -> str | None:
            return str(Path(value).expanduser()) if value else None

        values: dict[str, Any] = {
            "docker_host": self.docker_host or None,
            "tls_ca": path(self.tls_ca),
            "tls_cert": path(self.tls_cert),
            "tls_key": path(self.tls_key),
            "tls_verify": self.tls_verify,
            "api_bind": self.api_bind or None,
            "api_port": self.api_port,
            "api_token": token or None,
            "ssh_identity": path(self.ssh_identity),
            "ssh_known_hosts": str(self.known_hosts_path)
            if self.engine_scheme == "ssh"
            else path(self.ssh_known_hosts),
            "api_access": self.effective_api_access,
            "backend": "swarm" if self.swarm else None,
        }
        known = {f.name for f in dataclasses.fields(DockerProfile)}
        return DockerProfile(**{k: v for k, v in values.items() if k in known and v is not None})

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field (what the profile says on its own;
        :meth:`problems` also checks the files and the token)."""
        if not self.name.strip():
            raise ValueError("profile name: must not be empty")
        if self.kind not in PROFILE_KINDS:
            raise ValueError(f"profile {self.name!r}: unknown kind {self.kind!r}")
        if not self.api_url.startswith(("http://", "https://")):
            raise ValueError(f"profile {self.name!r}: API URL must start with http:// or https://")
        try:
            port = urlsplit(self.api_url).port
        except ValueError:  # not a number, or out of range
            port = -1
        if port is not None and not 1 <= port <= 65535:
            raise ValueError(
                f"profile {self.name!r}: the API URL's port must be a number from 1 to 65535"
            )
        if self.kind == "remote_docker" and not self.docker_host.startswith(
            ("ssh://", "tcp://", "unix://")
        ):
            raise ValueError(
                f"profile {self.name!r}: Docker host must be ssh://, tcp:// or unix://"
            )
        if self.swarm and self.kind not in ("local_docker", "remote_docker"):
            raise ValueError(f"profile {self.name!r}: Docker Swarm needs a Docker engine")
        if not 0 <= self.workers <= 64:
            raise ValueError(f"profile {self.name!r}: workers must be 0..64")
        if self.api_access not in ("", *API_ACCESS):
            raise ValueError(
                f"profile {self.name!r}: API access must be 'tunnel' or 'published', "
                f"not {self.api_access!r}"
            )
        if self.tls_cert and not self.tls_key:
            raise ValueError(
                f"profile {self.name!r}: the client certificate needs its key (TLS key)"
            )
        if self.tls_key and not self.tls_cert:
            raise ValueError(f"profile {self.name!r}: the TLS key needs its client certificate")
        if self.effective_api_access == "tunnel" and self.engine_scheme != "ssh":
            raise ValueError(
                f"profile {self.name!r}: an SSH tunnel to the API needs an ssh:// engine URL; "
                "choose 'published' for a tcp:// engine"
            )

    def problems(self, token: str | None) -> list[str]:
        """Everything that stops this profile from working, in words for the operator:
        :meth:`validate`'s rule, each missing file named, and for an API published by an
        engine on another host a non-loopback interface and a token. Empty when the
        profile can be saved."""
        found: list[str] = []
        try:
            self.validate()
        except ValueError as exc:
            found.append(str(exc).removeprefix(f"profile {self.name!r}: "))
        if self.api_ca and not Path(self.api_ca).expanduser().is_file():
            found.append(f"the API CA file {self.api_ca} does not exist")
        if self.swarm and not token:
            found.append(
                "a Docker Swarm cluster needs a token: Swarm publishes the API on every "
                "address of its node (moby#32299)"
            )
        if self.kind != "remote_docker":
            return found
        files = [("TLS CA", self.tls_ca), ("client certificate", self.tls_cert),
                 ("TLS key", self.tls_key), ("SSH identity", self.ssh_identity)]  # fmt: skip
        for label, value in files:
            if value and not Path(value).expanduser().is_file():
                found.append(f"the {label} file {value} does not exist")
        if (
            self.engine_scheme == "tcp"
            and not (self.tls_ca or self.tls_cert)
            and not is_loopback(self.engine_host)
        ):
            found.append(
                "a tcp:// engine needs TLS: give at least the CA (and the client certificate "
                "and key the engine asks for)"
            )
        elsewhere = self.engine_scheme in ("tcp", "ssh") and not is_loopback(self.engine_host)
        if self.effective_api_access == "published" and elsewhere:
            if not self.api_bind or is_loopback(self.api_bind):
                found.append(
                    "a published API must listen on an interface this machine reaches "
                    "(not 127.0.0.1): set the bind address, e.g. the host's address"
                )
            if not token:
                found.append("a published API needs a token (anyone who reaches it could use it)")
        return found

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConnectionProfile:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


DEFAULT_PROFILES = [
    ConnectionProfile("Local processes", "local_processes"),
    ConnectionProfile("Local Docker", "local_docker"),
]


class SettingsLike(Protocol):
    """The part of ``QSettings`` the store needs."""

    def value(self, key: str, defaultValue: Any = None) -> Any: ...

    def setValue(self, key: str, value: Any) -> None: ...


class DictSettings:
    """An in-memory :class:`SettingsLike` (tests, headless use)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def value(self, key: str, defaultValue: Any = None) -> Any:
        return self.data.get(key, defaultValue)

    def setValue(self, key: str, value: Any) -> None:
        self.data[key] = value


class TokenStore:
    """API tokens per profile: the keyring when usable, else memory (this session only)."""

    def __init__(self, use_keyring: bool = True) -> None:
        self._memory: dict[str, str] = {}
        self._keyring: Any = None
        if use_keyring:
            try:
                import keyring
                from keyring.backends import fail

                backend = keyring.get_keyring()
                if not isinstance(backend, fail.Keyring) and backend.priority > 0:
                    self._keyring = keyring
            except Exception as exc:  # no keyring package, or no usable backend
                logger.info("no usable keyring (%s): tokens kept for this session only", exc)

    @property
    def secure(self) -> bool:
        """True when tokens persist in the platform keyring."""
        return self._keyring is not None

    def get(self, profile: str) -> str | None:
        if self._keyring is not None:
            try:
                return self._keyring.get_password(_KEYRING_SERVICE, profile)
            except Exception as exc:
                logger.warning("keyring read failed for profile %r: %s", profile, exc)
        return self._memory.get(profile)

    def set(self, profile: str, token: str | None) -> None:
        if not token:
            self.delete(profile)
            return
        if self._keyring is not None:
            try:
                self._keyring.set_password(_KEYRING_SERVICE, profile, token)
                return
            except Exception as exc:
                logger.warning("keyring write failed for profile %r: %s", profile, exc)
        self._memory[profile] = token

    def delete(self, profile: str) -> None:
        self._memory.pop(profile, None)
        if self._keyring is not None:
            with contextlib.suppress(Exception):  # nothing stored is fine
                self._keyring.delete_password(_KEYRING_SERVICE, profile)


class ProfileStore:
    """Profiles in a settings store (key ``profiles/list``) plus the current one's name."""

    LIST_KEY = "profiles/list"
    CURRENT_KEY = "profiles/current"

    def __init__(self, settings: SettingsLike, tokens: TokenStore | None = None) -> None:
        self.settings = settings
        self.tokens = tokens or TokenStore()

    def load(self) -> list[ConnectionProfile]:
        raw = self.settings.value(self.LIST_KEY, "")
        if not raw:
            return list(DEFAULT_PROFILES)
        try:
            items = json.loads(str(raw))
            profiles = [ConnectionProfile.from_dict(item) for item in items]
        except (ValueError, TypeError) as exc:
            logger.warning("stored profiles unreadable (%s); using the defaults", exc)
            return list(DEFAULT_PROFILES)
        return profiles or list(DEFAULT_PROFILES)

    def save_all(self, profiles: list[ConnectionProfile]) -> None:
        for profile in profiles:
            profile.validate()
        names = [p.name for p in profiles]
        if len(set(names)) != len(names):
            raise ValueError("profile names must be unique")
        self.settings.setValue(self.LIST_KEY, json.dumps([asdict(p) for p in profiles]))

    def upsert(self, profile: ConnectionProfile, token: str | None = None) -> None:
        """Add or replace ``profile`` by name; store its token (``""`` removes it)."""
        profile.validate()
        profiles = [p for p in self.load() if p.name != profile.name]
        profiles.append(profile)
        self.save_all(profiles)
        if token is not None:
            self.tokens.set(profile.name, token)

    def remove(self, name: str) -> None:
        self.save_all([p for p in self.load() if p.name != name])
        self.tokens.delete(name)

    def get(self, name: str) -> ConnectionProfile | None:
        return next((p for p in self.load() if p.name == name), None)

    @property
    def current_name(self) -> str:
        return str(self.settings.value(self.CURRENT_KEY, "") or "")

    def set_current(self, name: str) -> None:
        self.settings.setValue(self.CURRENT_KEY, name)

    def current(self) -> ConnectionProfile:
        profiles = self.load()
        return next((p for p in profiles if p.name == self.current_name), profiles[0])

    def token(self, name: str) -> str | None:
        return self.tokens.get(name)

    @staticmethod
    def renamed(profile: ConnectionProfile, name: str) -> ConnectionProfile:
        return replace(profile, name=name)


# ---------------------------------------------------------------- importing Docker's settings


def docker_config_dir(env: Mapping[str, str] | None = None) -> Path:
    """Docker's configuration folder: ``DOCKER_CONFIG``, else ``~/.docker``."""
    env = os.environ if env is None else env
    return Path(env.get("DOCKER_CONFIG") or "~/.docker").expanduser()


def _api_url(docker_host: str, access: str, port: int = 8080) -> str:
    """Where a remote cluster's API is before it runs (a tunnel's local port comes later)."""
    host = ""
    with contextlib.suppress(ValueError):
        host = urlsplit(docker_host).hostname or ""
    if access == "tunnel" or not host:
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def _remote_profile(name: str, docker_host: str, **fields: Any) -> ConnectionProfile:
    base = ConnectionProfile(name, "remote_docker", docker_host=docker_host, **fields)
    access = base.effective_api_access or "published"
    bind = ""
    if access == "published":
        # The address this machine reaches the engine at, when it is one (not a name).
        with contextlib.suppress(ValueError):
            bind = str(ipaddress.ip_address(base.engine_host))
    return replace(base, api_url=_api_url(docker_host, access), api_bind=bind)


def profile_from_env(
    env: Mapping[str, str] | None = None, name: str = "Docker environment"
) -> ConnectionProfile | None:
    """A profile from ``DOCKER_HOST``, ``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH`` (as
    the docker CLI and SDK read them); ``None`` when ``DOCKER_HOST`` names no remote engine.

    TLS is on when ``DOCKER_TLS_VERIFY`` (the engine's certificate checked) or
    ``DOCKER_TLS`` is set (not empty, not ``0``), as for the docker CLI; the material is
    ``ca.pem``, ``cert.pem`` and ``key.pem`` in ``DOCKER_CERT_PATH`` (default: Docker's
    configuration folder). Files that are not there are left out unless none is, then all
    three are named so the check says so.
    """
    env = os.environ if env is None else env
    host = env.get("DOCKER_HOST", "").strip()
    if not host.startswith(("tcp://", "ssh://")):
        return None
    verify = env.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
    cert_path = env.get("DOCKER_CERT_PATH", "")
    tls: dict[str, Any] = {}
    if host.startswith("tcp://") and (verify or env.get("DOCKER_TLS", "") not in ("", "0")):
        folder = Path(cert_path).expanduser() if cert_path else docker_config_dir(env)
        files = {key: folder / f"{key.removeprefix('tls_')}.pem" for key in
                 ("tls_ca", "tls_cert", "tls_key")}  # fmt: skip
        present: dict[str, Any] = {k: str(path) for k, path in files.items() if path.is_file()}
        tls = present or {key: str(path) for key, path in files.items()}
        tls["tls_verify"] = verify
    return _remote_profile(name, host, **tls)


@dataclass(frozen=True)
class DockerContext:
    """One ``docker context`` as stored under Docker's configuration folder."""

    name: str
    docker_host: str
    skip_tls_verify: bool = False
    description: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""


def docker_contexts(env: Mapping[str, str] | None = None) -> list[DockerContext]:
    """The contexts in ``<config>/contexts/meta/<sha256 of name>/meta.json`` (their TLS
    files in ``<config>/contexts/tls/<same>/docker/``), by name. Unreadable ones are
    skipped with a log line; the built-in ``default`` context is not stored, so not here."""
    root = docker_config_dir(env) / "contexts"
    found: list[DockerContext] = []
    meta_dir = root / "meta"
    if not meta_dir.is_dir():
        return found
    for meta_file in sorted(meta_dir.glob("*/meta.json")):
        try:
            meta = json.loads(meta_file.read_text())
            name = str(meta["Name"])
            endpoint = meta.get("Endpoints", {}).get("docker") or {}
            host = str(endpoint.get("Host") or "")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("Docker context %s unreadable: %s", meta_file, exc)
            continue
        if not host:
            continue
        digest = meta_file.parent.name
        if digest != hashlib.sha256(name.encode()).hexdigest():
            logger.info("Docker context %r is stored under an unexpected folder %s", name, digest)
        tls_dir = root / "tls" / digest / "docker"
        files = {key: tls_dir / f"{key.removeprefix('tls_')}.pem" for key in
                 ("tls_ca", "tls_cert", "tls_key")}  # fmt: skip
        description = (meta.get("Metadata") or {}).get("Description", "")
        found.append(
            DockerContext(
                name=name,
                docker_host=host,
                skip_tls_verify=bool(endpoint.get("SkipTLSVerify", False)),
                description=str(description or ""),
                **{key: str(path) for key, path in files.items() if path.is_file()},
            )
        )
    return sorted(found, key=lambda c: c.name)


def profile_from_context(context: DockerContext, name: str | None = None) -> ConnectionProfile:
    """A ``remote_docker`` profile from a Docker context (named ``context <name>``)."""
    return _remote_profile(
        name or f"context {context.name}",
        context.docker_host,
        tls_ca=context.tls_ca,
        tls_cert=context.tls_cert,
        tls_key=context.tls_key,
        # SkipTLSVerify means nothing to an ssh:// engine.
        tls_verify=not (context.skip_tls_verify and context.docker_host.startswith("tcp://")),
    )
