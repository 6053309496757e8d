"""Connection profiles: which cluster the console drives and which API it talks to.

Profiles are kept as JSON under one key of a settings store with the ``value``/``setValue``
interface (a ``QSettings`` in the console, a dict-backed store in tests). Tokens never go
there: they go to the platform keyring (``keyring``) when one is usable, else they live in
memory for the session only, and :attr:`TokenStore.secure` says which.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_PROFILES",
    "PROFILE_KINDS",
    "ConnectionProfile",
    "DictSettings",
    "ProfileKind",
    "ProfileStore",
    "SettingsLike",
    "TokenStore",
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

_KEYRING_SERVICE = "mimir-aip-console"


@dataclass(frozen=True)
class ConnectionProfile:
    """How to reach one cluster. ``docker_host`` is for ``remote_docker`` (``ssh://…``,
    ``tcp://…``); ``remote_api`` has no cluster control, only ``api_url``."""

    name: str
    kind: ProfileKind = "local_processes"
    api_url: str = "http://127.0.0.1:8080"
    docker_host: str = ""
    project: str = "mimir"
    workers: int = 2
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
    def backend(self) -> Literal["local", "docker"] | None:
        if self.kind == "local_processes":
            return "local"
        if self.kind in ("local_docker", "remote_docker"):
            return "docker"
        return None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
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
        if not 0 <= self.workers <= 64:
            raise ValueError(f"profile {self.name!r}: workers must be 0..64")

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
