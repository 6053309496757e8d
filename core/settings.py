"""Settings read from the environment, with the seed's variable names.

One frozen dataclass, built by :meth:`Settings.from_env`; every part of Mimir
(server, worker, console, CLI) reads its configuration through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

from mimir.core.limits import Limits
from mimir.core.logtext import parse_log_format
from mimir.core.secretfiles import read_secret_file

__all__ = [
    "Settings",
    "default_data_dir",
    "default_pipelines_dir",
    "normalise_redis_url",
    "sentinel_url_from_env",
    "trace_url_template",
]


def _user_dir(kind: str) -> Path:
    """Per-user base directory (XDG on Linux, the usual places elsewhere)."""
    if kind == "data":
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    else:
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mimir"


def default_data_dir() -> Path:
    """Where plugins read and write files and the stores live, unless ``MIMIR_DATA_DIR``."""
    return _user_dir("data") / "data"


def default_pipelines_dir() -> Path:
    """Where pipeline YAML files live, unless ``MIMIR_PIPELINES_DIR``."""
    return _user_dir("data") / "pipelines"


def default_state_dir() -> Path:
    """Where local clusters keep their state file and logs."""
    return _user_dir("state")


def normalise_redis_url(value: str) -> str:
    """Accept ``host:port``, ``host`` or a ``redis://``/``rediss://``/``unix://`` URL."""
    value = value.strip()
    if "://" in value:
        return value
    parsed = urlparse(f"redis://{value}")
    host = parsed.hostname or "localhost"
    port = parsed.port or 6379
    return f"redis://{host}:{port}/0"


def sentinel_url_from_env(env: Mapping[str, str]) -> str:
    """``redis+sentinel://…`` built from ``MIMIR_REDIS_SENTINELS=host:port,…`` and
    ``MIMIR_REDIS_SERVICE`` (default ``mymaster``), with the password and db of
    ``REDIS_URL`` if that is set too; ``""`` without ``MIMIR_REDIS_SENTINELS``."""
    sentinels = (env.get("MIMIR_REDIS_SENTINELS") or "").strip()
    if not sentinels:
        return ""
    service = (env.get("MIMIR_REDIS_SERVICE") or "").strip() or "mymaster"
    auth, db = "", "0"
    base = (env.get("REDIS_URL") or "").strip()
    if "://" in base:
        parsed = urlparse(base)
        if parsed.password is not None:
            auth = f"{parsed.username or ''}:{parsed.password}@"
        db = parsed.path.strip("/").split("/")[-1] or "0"
        if not db.isdigit():
            db = "0"
    hosts = ",".join(h.strip() for h in sentinels.split(",") if h.strip())
    return f"redis+sentinel://{auth}{hosts}/{service}/{db}"


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _env_count(env: Mapping[str, str], name: str, default: int) -> int:
    value = _env_int(env, name, default)
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, got {value}")
    return value


def _env_seconds(env: Mapping[str, str], name: str, default: float, unit: str = "seconds") -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number of {unit}, got {raw!r}") from exc
    if value < 0:
        raise ValueError(f"{name} must be 0 or more {unit}, got {raw!r}")
    return value


def _worker_block(env: Mapping[str, str]) -> float:
    value = _env_seconds(env, "MIMIR_WORKER_BLOCK", 1.0)
    # 0 would be Redis's "block for ever"; a stop waits for the read before the grace
    # starts, so a long one would eat into what whoever stops the worker allows.
    if not 0 < value <= 5:
        raise ValueError(f"MIMIR_WORKER_BLOCK must be over 0 and at most 5 seconds, got {value:g}")
    return value


def _env_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name) or ""
    return tuple(part.strip() for part in raw.replace(";", ",").split(",") if part.strip())


def _env_path(env: Mapping[str, str], name: str, default: Path) -> Path:
    raw = env.get(name)
    return Path(raw).expanduser() if raw else default


def _optional_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = (env.get(name) or "").strip()
    return Path(raw).expanduser() if raw else None


def _api_token(env: Mapping[str, str]) -> str | None:
    """``MIMIR_API_TOKEN``, else the contents of ``MIMIR_API_TOKEN_FILE`` (whitespace
    stripped); a file that cannot be read or is empty is an error at startup."""
    token = env.get("MIMIR_API_TOKEN") or None
    raw = (env.get("MIMIR_API_TOKEN_FILE") or "").strip()
    if token or not raw:
        return token
    return read_secret_file("MIMIR_API_TOKEN_FILE", raw)


def _key_prefix(env: Mapping[str, str], redis_url: str, min_replicas: int) -> str:
    """``MIMIR_KEY_PREFIX`` (default ``mimir:``); for a ``redis+cluster://`` URL given a
    hash tag (``mimir:`` -> ``{mimir}:``, see :func:`mimir.core.queue.keys.hash_tagged`)
    so every key of the queue is in one slot, and checked: the URL (one database, 0) and
    ``MIMIR_REDIS_MIN_REPLICAS`` (refused there) raise ``ValueError`` at startup. The
    server, workers, ``mimir enqueue`` and the backends all read the prefix here, so they
    agree on it."""
    prefix = env.get("MIMIR_KEY_PREFIX", "mimir:")
    if not redis_url.lower().startswith("redis+cluster://"):
        return prefix
    from mimir.core.queue.connection import MIN_REPLICAS_ON_CLUSTER, parse_cluster_url
    from mimir.core.queue.keys import hash_tagged

    parse_cluster_url(redis_url)
    if min_replicas > 0:
        raise ValueError(MIN_REPLICAS_ON_CLUSTER)
    return hash_tagged(prefix)


def _backup_schedule(env: Mapping[str, str]) -> str | None:
    """``MIMIR_BACKUP_SCHEDULE``: a cron expression (5 fields, or 6 with seconds first, as
    schedules take them), checked here so a bad one stops the server at startup."""
    raw = " ".join((env.get("MIMIR_BACKUP_SCHEDULE") or "").split())
    if not raw:
        return None
    fields = raw.split(" ")
    if len(fields) not in (5, 6):
        raise ValueError(
            "MIMIR_BACKUP_SCHEDULE must be a cron expression of 5 fields (minute hour day "
            f"month weekday) or 6 (seconds first), got {len(fields)}: {raw!r}"
        )
    from datetime import datetime

    from croniter import croniter

    try:
        croniter(raw, datetime(2026, 1, 1), second_at_beginning=True).get_next(datetime)
    except Exception as exc:  # croniter's errors have no common public base
        raise ValueError(
            f"MIMIR_BACKUP_SCHEDULE is not a valid cron expression {raw!r}: {exc}"
        ) from None
    return raw


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in {"", "0", "false", "no", "off"}:
        return False
    if raw in {"1", "true", "yes", "on"}:
        return True
    raise ValueError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def _backup_include_secrets(env: Mapping[str, str]) -> bool:
    include = _env_flag(env, "MIMIR_BACKUP_INCLUDE_SECRETS")
    if include and not (env.get("MIMIR_BACKUP_PASSPHRASE_FILE") or "").strip():
        raise ValueError(
            "MIMIR_BACKUP_INCLUDE_SECRETS needs MIMIR_BACKUP_PASSPHRASE_FILE: secrets are "
            "never written in clear"
        )
    return include


def trace_url_template(env: Mapping[str, str] | None = None) -> str | None:
    """``MIMIR_TRACE_URL``: an http(s) URL template holding ``{trace_id}``, or ``None``
    when unset; ``ValueError`` for a value that is not one."""
    env = os.environ if env is None else env
    raw = (env.get("MIMIR_TRACE_URL") or "").strip()
    if not raw:
        return None
    if "{trace_id}" not in raw or urlparse(raw).scheme not in {"http", "https"}:
        raise ValueError(
            "MIMIR_TRACE_URL must be an http(s) URL holding {trace_id}, e.g. "
            f"http://jaeger:16686/trace/{{trace_id}}; got {raw!r}"
        )
    return raw


def _sparql_federation(env: Mapping[str, str]) -> str:
    mode = (env.get("MIMIR_SPARQL_FEDERATION") or "off").strip().lower()
    if mode not in {"off", "allowlist"}:
        raise ValueError(f"MIMIR_SPARQL_FEDERATION must be 'off' or 'allowlist', got {mode!r}")
    return mode


@dataclass(frozen=True)
class Settings:
    """Configuration shared by every part of Mimir."""

    #: API server port (``MIMIR_PORT``).
    port: int = 8080
    #: Redis URL (``REDIS_URL``; a bare ``host:port`` is accepted; ``redis+sentinel://``
    #: ``[:password@]host:26379,host:26379/service_name/db`` follows a Sentinel failover,
    #: as does ``MIMIR_REDIS_SENTINELS=host:port,…`` with ``MIMIR_REDIS_SERVICE``;
    #: ``redis+cluster://[:password@]host:port[,host:port…]`` a Redis Cluster).
    redis_url: str = "redis://redis:6379/0"
    #: Whether REDIS_URL was given explicitly (the embedded default starts its own Redis otherwise).
    redis_url_set: bool = False
    #: External SPARQL 1.1 endpoint (``FUSEKI_URL``); ``None`` means the built-in store.
    fuseki_url: str | None = None
    #: Log level name (``MIMIR_LOG_LEVEL``).
    log_level: str = "INFO"
    #: ``text`` (default) or ``json``: one JSON object per log line (``MIMIR_LOG_FORMAT``).
    log_format: str = "text"
    #: The console's link to a job's trace: a URL with ``{trace_id}`` (``MIMIR_TRACE_URL``,
    #: e.g. ``http://jaeger:16686/trace/{trace_id}``); ``None``: the id alone.
    trace_url: str | None = None
    #: Files plugins may read and write; stores (``MIMIR_DATA_DIR``).
    data_dir: Path = field(default_factory=default_data_dir)
    #: Pipeline YAML files (``MIMIR_PIPELINES_DIR``).
    pipelines_dir: Path = field(default_factory=default_pipelines_dir)
    #: Local cluster state and logs (``MIMIR_STATE_DIR``).
    state_dir: Path = field(default_factory=default_state_dir)
    #: Where the server and each worker also write their log, one file each
    #: (``MIMIR_LOG_DIR``; unset: stderr only).
    log_dir: Path | None = None
    #: Bearer token required by a server that listens beyond loopback (``MIMIR_API_TOKEN``,
    #: or the contents of the file ``MIMIR_API_TOKEN_FILE``).
    api_token: str | None = field(default=None, repr=False)
    #: Prefix of every Redis key (``MIMIR_KEY_PREFIX``; with a ``redis+cluster://`` URL
    #: given a hash tag: ``mimir:`` -> ``{mimir}:``).
    key_prefix: str = "mimir:"
    #: The cluster this process belongs to (``MIMIR_PROJECT``, set by ``mimir cluster``):
    #: names backups; empty for a server started by hand.
    project: str = ""
    #: Seconds job records and results are kept (``MIMIR_JOB_TTL``).
    job_ttl: int = 24 * 3600
    #: Concurrent jobs per worker (``WORKER_CONCURRENCY``).
    worker_concurrency: int = 5
    #: Seconds a stopping worker lets running jobs finish before it hands them back
    #: (``MIMIR_WORKER_GRACE``).
    worker_grace: float = 30.0
    #: A job whose lease is not renewed for this long is taken over (``MIMIR_WORKER_LEASE``).
    worker_lease: float = 30.0
    #: Worker heartbeat period (``MIMIR_WORKER_HEARTBEAT``).
    worker_heartbeat: float = 2.0
    #: Seconds of Redis outage after which a worker gives up (``MIMIR_WORKER_MAX_OUTAGE``).
    worker_max_outage: float = 300.0
    #: Longest blocking read of an idle worker (``MIMIR_WORKER_BLOCK``, over 0, at most 5):
    #: a stopping worker waits for it to end before it says ``draining`` and its grace
    #: starts.
    worker_block: float = 1.0
    #: Console's API URL (``MIMIR_API_URL``, or the seed's ``NEXT_PUBLIC_API_URL``).
    api_url: str = "http://localhost:8080"
    #: The server's TLS certificate and key, PEM (``MIMIR_TLS_CERT``, ``MIMIR_TLS_KEY``;
    #: ``mimir server --tls-cert/--tls-key``): both set, the API is served over HTTPS.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: A private CA (PEM) that clients of the API trust besides the default CAs
    #: (``MIMIR_CA_FILE``; see :func:`mimir.core.tls.api_verify`).
    ca_file: Path | None = None
    #: Bounds on request, document and expression size and work (``MIMIR_MAX_*``, see limits).
    limits: Limits = field(default_factory=Limits)
    #: Hosts, CIDRs or ``host:port`` that outbound HTTP of plugins may reach
    #: (``MIMIR_HTTP_ALLOW``, comma-separated; empty means any host not denied).
    http_allow: tuple[str, ...] = ()
    #: Hosts, CIDRs or ``host:port`` that outbound HTTP of plugins may never reach, on top of
    #: the built-in denials (``MIMIR_HTTP_DENY``).
    http_deny: tuple[str, ...] = ()
    #: ``FROM=TO`` URL prefixes: a plugin's request to a URL starting with ``FROM`` goes to
    #: ``TO`` instead, e.g. a local stand-in for an outside service (``MIMIR_HTTP_REWRITE``,
    #: comma-separated). The outbound checks apply to where the request really goes.
    http_rewrite: tuple[str, ...] = ()
    #: SPARQL ``SERVICE`` and ``LOAD``: ``off`` (default) or ``allowlist``
    #: (``MIMIR_SPARQL_FEDERATION``).
    sparql_federation: str = "off"
    #: Hosts that ``SERVICE``/``LOAD`` may reach when federation is ``allowlist``
    #: (``MIMIR_SPARQL_ALLOW``, comma-separated).
    sparql_allow: tuple[str, ...] = ()
    #: Web origins allowed to call the API from a browser (CORS, e.g. YASGUI on another
    #: host): ``MIMIR_CORS_ORIGINS``, comma-separated; empty (default) allows none.
    cors_origins: tuple[str, ...] = ()
    #: The run store's database (``MIMIR_DATABASE_URL``, a SQLAlchemy URL such as
    #: ``postgresql+psycopg://user@host/db``); ``None``: SQLite in ``data_dir``.
    database_url: str | None = field(default=None, repr=False)
    #: Where the server writes backup archives (``MIMIR_BACKUP_DIR``; ``None``:
    #: ``<data_dir>/backups``, see :attr:`backups_path`).
    backup_dir: Path | None = None
    #: When the server takes backups by itself (``MIMIR_BACKUP_SCHEDULE``, cron in UTC, 5
    #: fields or 6 with seconds first; ``None``: never). One server of the cluster takes them.
    backup_schedule: str | None = None
    #: Scheduled backups keep this many newest archives (``MIMIR_BACKUP_KEEP``; 0: no count).
    backup_keep: int = 7
    #: ... and none older than this many days (``MIMIR_BACKUP_KEEP_DAYS``; 0: no age limit).
    backup_keep_days: float = 0.0
    #: A file whose first line is the passphrase that encrypts scheduled backups
    #: (``MIMIR_BACKUP_PASSPHRASE_FILE``; ``None``: they are written in clear, secrets left out).
    backup_passphrase_file: Path | None = None
    #: Scheduled backups keep the secrets (``MIMIR_BACKUP_INCLUDE_SECRETS=1``; needs the
    #: passphrase file: secrets are never written in clear).
    backup_include_secrets: bool = False
    #: Days a run is kept in the run store (``MIMIR_RUN_RETENTION``, default 30).
    run_retention_days: float = 30.0
    #: At most this many runs are kept, the oldest pruned first (``MIMIR_RUN_MAX``; 0: no cap).
    run_max_count: int = 0
    #: Where alert e-mail goes out (``MIMIR_SMTP_URL``: ``smtp://user:pass@host:port``,
    #: ``smtps://`` for TLS from the start; STARTTLS is used when the server offers it).
    smtp_url: str | None = field(default=None, repr=False)
    #: The ``From`` address of alert e-mail (``MIMIR_SMTP_FROM``).
    smtp_from: str = "mimir@localhost"
    #: Cluster control: ``docker``, ``local`` or ``None`` to guess (``MIMIR_CLUSTER_BACKEND``).
    cluster_backend: str | None = None
    #: Docker engine URL (``DOCKER_HOST``; ``None``: the local socket).
    docker_host: str | None = None
    #: Redis image of Docker clusters (``MIMIR_REDIS_IMAGE``; ``None``: ``redis:7-alpine``).
    redis_image: str | None = None
    #: ``BASE_IMAGE`` of the image builds (``MIMIR_BASE_IMAGE``; ``None``: ``python:3.11-slim``).
    base_image: str | None = None
    #: Replicas an enqueue and a job's outcome wait for (``WAIT``) before they count as
    #: written (``MIMIR_REDIS_MIN_REPLICAS``; 0: no wait), and for how long
    #: (``MIMIR_REDIS_WAIT_TIMEOUT_MS``, default 2000).
    redis_min_replicas: int = 0
    redis_wait_timeout_ms: int = 2000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        redis_raw = sentinel_url_from_env(env) or env.get("REDIS_URL", "")
        redis_url = normalise_redis_url(redis_raw) if redis_raw else "redis://redis:6379/0"
        min_replicas = _env_count(env, "MIMIR_REDIS_MIN_REPLICAS", 0)
        key_prefix = _key_prefix(env, redis_url, min_replicas)
        return cls(
            port=_env_int(env, "MIMIR_PORT", 8080),
            redis_url=redis_url,
            redis_url_set=bool(redis_raw),
            fuseki_url=env.get("FUSEKI_URL") or None,
            log_level=(env.get("MIMIR_LOG_LEVEL") or "INFO").upper(),
            log_format=parse_log_format(env.get("MIMIR_LOG_FORMAT")),
            trace_url=trace_url_template(env),
            data_dir=_env_path(env, "MIMIR_DATA_DIR", default_data_dir()),
            pipelines_dir=_env_path(env, "MIMIR_PIPELINES_DIR", default_pipelines_dir()),
            state_dir=_env_path(env, "MIMIR_STATE_DIR", default_state_dir()),
            log_dir=Path(env["MIMIR_LOG_DIR"]).expanduser() if env.get("MIMIR_LOG_DIR") else None,
            api_token=_api_token(env),
            key_prefix=key_prefix,
            project=(env.get("MIMIR_PROJECT") or "").strip(),
            job_ttl=_env_int(env, "MIMIR_JOB_TTL", 24 * 3600),
            worker_concurrency=_env_int(env, "WORKER_CONCURRENCY", 5),
            worker_grace=_env_seconds(env, "MIMIR_WORKER_GRACE", 30.0),
            worker_lease=_env_seconds(env, "MIMIR_WORKER_LEASE", 30.0),
            worker_heartbeat=_env_seconds(env, "MIMIR_WORKER_HEARTBEAT", 2.0),
            worker_max_outage=_env_seconds(env, "MIMIR_WORKER_MAX_OUTAGE", 300.0),
            worker_block=_worker_block(env),
            api_url=(
                env.get("MIMIR_API_URL")
                or env.get("NEXT_PUBLIC_API_URL")
                or "http://localhost:8080"
            ),
            tls_cert=_optional_path(env, "MIMIR_TLS_CERT"),
            tls_key=_optional_path(env, "MIMIR_TLS_KEY"),
            ca_file=_optional_path(env, "MIMIR_CA_FILE"),
            limits=Limits.from_env(env),
            http_allow=_env_list(env, "MIMIR_HTTP_ALLOW"),
            http_deny=_env_list(env, "MIMIR_HTTP_DENY"),
            http_rewrite=_env_list(env, "MIMIR_HTTP_REWRITE"),
            sparql_federation=_sparql_federation(env),
            sparql_allow=_env_list(env, "MIMIR_SPARQL_ALLOW"),
            cors_origins=_env_list(env, "MIMIR_CORS_ORIGINS"),
            database_url=(env.get("MIMIR_DATABASE_URL") or "").strip() or None,
            backup_dir=(
                Path(env["MIMIR_BACKUP_DIR"]).expanduser() if env.get("MIMIR_BACKUP_DIR") else None
            ),
            backup_schedule=_backup_schedule(env),
            backup_keep=_env_count(env, "MIMIR_BACKUP_KEEP", 7),
            backup_keep_days=_env_seconds(env, "MIMIR_BACKUP_KEEP_DAYS", 0.0, "days"),
            backup_passphrase_file=(
                Path(env["MIMIR_BACKUP_PASSPHRASE_FILE"]).expanduser()
                if (env.get("MIMIR_BACKUP_PASSPHRASE_FILE") or "").strip()
                else None
            ),
            backup_include_secrets=_backup_include_secrets(env),
            run_retention_days=_env_seconds(env, "MIMIR_RUN_RETENTION", 30.0, "days"),
            run_max_count=_env_int(env, "MIMIR_RUN_MAX", 0),
            smtp_url=(env.get("MIMIR_SMTP_URL") or "").strip() or None,
            smtp_from=(env.get("MIMIR_SMTP_FROM") or "").strip() or "mimir@localhost",
            cluster_backend=(env.get("MIMIR_CLUSTER_BACKEND") or "").strip().lower() or None,
            docker_host=env.get("DOCKER_HOST") or None,
            redis_image=env.get("MIMIR_REDIS_IMAGE") or None,
            base_image=env.get("MIMIR_BASE_IMAGE") or None,
            redis_min_replicas=min_replicas,
            redis_wait_timeout_ms=max(1, _env_int(env, "MIMIR_REDIS_WAIT_TIMEOUT_MS", 2000)),
        )

    @property
    def backups_path(self) -> Path:
        """Where backup archives go: ``MIMIR_BACKUP_DIR``, else ``<data_dir>/backups``."""
        return self.backup_dir if self.backup_dir is not None else self.data_dir / "backups"

    @property
    def backup_dir_explicit(self) -> bool:
        """Whether ``MIMIR_BACKUP_DIR`` was given (the CLI keeps its downloads there too)."""
        return self.backup_dir is not None

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]
