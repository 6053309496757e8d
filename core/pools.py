"""Worker pools and their autoscaling policies, and the cluster file that declares them.

A **pool** is a named group of identical workers: the queues they serve, how many jobs each
runs at once, the job types they accept, their image (Docker), environment, CPU and memory
limits, and the replicas it may run (``min``..``max``). Its **policy** says whether and how
the server's autoscaler changes its replicas. A cluster that declares nothing has one pool,
``default``, serving the queue ``default``: nothing changes for whoever ignores pools.

The cluster file (``mimir-cluster.yaml``)::

    version: 1
    autoscaler:
      period: 5            # seconds between evaluations
    pools:
      default:
        replicas: 2        # started by `mimir cluster up` (within min..max)
        min: 1
        max: 4
        autoscale:
          target_backlog: 10
      slow:
        queues: [slow]
        concurrency: 2
        job_types: [pipeline]
        memory: 1g
        min: 0
        max: 2
        autoscale: {target_backlog: 5, target_age: 30, cooldown_down: 120}

It is read with the pipelines' YAML loader (:func:`mimir.core.pipeline.loader.parse_yaml`:
the same bounds, the same line-exact errors). Qt-free, Docker-free, Redis-free: the
console, ``mimir cluster``, the server and the worker all read pools through this module.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mimir.core.errors import MimirError
from mimir.core.pipeline.issues import ValidationIssue, node_position

__all__ = [
    "DEFAULT_POOL",
    "POOLS_ENV",
    "POOL_NAME_PATTERN",
    "AutoscalePolicy",
    "AutoscalerConfig",
    "ClusterFile",
    "ClusterFileError",
    "PoolSpec",
    "default_cluster",
    "load_cluster_file",
    "parse_cluster_file",
    "pool_for_queue",
    "pools_from_env",
    "pools_to_env",
    "unserved_queues",
    "validate_pool_name",
]

#: The pool every cluster has unless its file says otherwise.
DEFAULT_POOL = "default"
#: How ``mimir cluster up`` tells the server (and nobody else) the cluster's pools: the
#: :class:`ClusterFile` as JSON. Not secret: names, queues, limits and policies.
POOLS_ENV = "MIMIR_POOLS"
#: A pool's name: a service name part (``worker-<pool>``) and a label value, so lowercase,
#: starting with a letter, no ``-`` (``worker-2`` is replica 2 of ``default``, never a pool).
POOL_NAME_PATTERN = r"[a-z][a-z0-9_]{0,30}"
_POOL_NAME_RE = re.compile(POOL_NAME_PATTERN)
#: A queue name as ``mimir worker --queues`` and the enqueue API take it.
_QUEUE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_MEMORY_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgKMG]?)[bB]?\s*")


class ClusterFileError(MimirError):
    """A cluster file (or a pool or policy given over the API) is invalid; ``errors`` holds
    one :class:`ValidationIssue` per problem, located by line when there is a source."""

    def __init__(self, errors: Sequence[ValidationIssue], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        where = f" ({source})" if source else ""
        if len(self.errors) == 1:
            message = f"invalid cluster file{where}: {self.errors[0]}"
        else:
            listed = "\n".join(f"  - {issue}" for issue in self.errors)
            message = f"invalid cluster file{where}: {len(self.errors)} problems\n{listed}"
        super().__init__(message)


def validate_pool_name(name: str) -> str:
    """``name`` if it is a usable pool name, else :class:`ValueError`."""
    if not isinstance(name, str) or not _POOL_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid pool name {name!r}: use 1-31 lowercase letters, digits or '_', "
            "starting with a letter"
        )
    return name


class AutoscalePolicy(BaseModel):
    """How the autoscaler sizes one pool.

    The wanted replicas are the pool's *backlog* (jobs of its queues waiting or running)
    divided by ``target_backlog``, rounded up; more when the oldest waiting job is older
    than ``target_age``; always within ``min``..``max`` (the pool's). A change moves at
    most ``step_up``/``step_down`` replicas, and waits ``cooldown_up``/``cooldown_down``
    seconds after the previous change; scaling down also waits until the backlog has been
    low for ``cooldown_down`` seconds. A pool at zero with work waiting wakes at once.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    #: Jobs (waiting or running) per replica the autoscaler aims at.
    target_backlog: float = Field(default=10.0, gt=0, le=1_000_000)
    #: Seconds the oldest waiting job may wait before one more step up (``None``: no aim).
    target_age: float | None = Field(default=None, gt=0, le=86_400)
    step_up: int = Field(default=4, ge=1, le=1000)
    step_down: int = Field(default=1, ge=1, le=1000)
    cooldown_up: float = Field(default=15.0, ge=0, le=86_400)
    cooldown_down: float = Field(default=60.0, ge=0, le=86_400)


class PoolSpec(BaseModel):
    """One pool as declared (the cluster file's ``pools.<name>``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = DEFAULT_POOL
    #: Queues its workers serve (``mimir worker --queues``); default: ``[<name>]``.
    queues: list[str] = Field(default_factory=list)
    #: Jobs one worker runs at once (``WORKER_CONCURRENCY``); default: the settings'.
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    #: Job types its workers run (``pipeline``, ``digital_twin`` …); ``None``: all.
    job_types: list[str] | None = None
    #: Docker image of its workers (default: the project's worker image).
    image: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    #: CPU limit in cores and memory limit per worker (``None``: unlimited).
    cpus: float | None = Field(default=0.5, gt=0, le=1024)
    memory: str | None = "512m"
    #: Replicas ``mimir cluster up`` starts (``None``: ``min``, or 2 for ``default``).
    replicas: int | None = Field(default=None, ge=0)
    min: int = Field(default=0, ge=0)
    #: ``None``: as many as the cluster allows (``MIMIR_MAX_WORKERS``).
    max: int | None = Field(default=None, ge=0)
    #: Autoscaling policy; ``None``: the pool is scaled by hand only.
    autoscale: AutoscalePolicy | None = None

    @model_validator(mode="before")
    @classmethod
    def _autoscale_shorthand(cls, data: Any) -> Any:
        # ``autoscale: true`` is the default policy; ``autoscale: false`` is none.
        if isinstance(data, Mapping) and isinstance(data.get("autoscale"), bool):
            data = dict(data)
            data["autoscale"] = {} if data["autoscale"] else None
        return data

    @model_validator(mode="after")
    def _consistent(self) -> PoolSpec:
        validate_pool_name(self.name)
        if not self.queues:
            self.queues = [self.name]
        for queue in self.queues:
            if not isinstance(queue, str) or not _QUEUE_NAME_RE.fullmatch(queue):
                raise ValueError(
                    f"queues: invalid queue name {queue!r}: 1-64 letters, digits, '_', '.', "
                    "':' or '-'"
                )
        if len(set(self.queues)) != len(self.queues):
            raise ValueError("queues: a queue is listed twice")
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is less than min ({self.min})")
        # (Each message starts with the field it is about: the file's errors point there.)
        if self.replicas is not None and (
            self.replicas < self.min or (self.max is not None and self.replicas > self.max)
        ):
            raise ValueError(
                f"replicas ({self.replicas}) is outside min..max ({self.min}..{self.max})"
            )
        if self.memory is not None and not _MEMORY_RE.fullmatch(self.memory):
            raise ValueError(f"memory: invalid size {self.memory!r}; use e.g. 512m or 1g")
        for key in self.environment:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"environment: invalid variable name {key!r}")
        return self

    @property
    def initial_replicas(self) -> int:
        """What ``mimir cluster up`` starts when not told a number."""
        if self.replicas is not None:
            return self.replicas
        if self.name == DEFAULT_POOL:
            return max(self.min, 2 if self.max is None else min(2, self.max))
        return self.min

    def max_replicas(self, limit: int) -> int:
        """``max``, or the cluster's ``limit`` when the pool sets none."""
        return limit if self.max is None else min(self.max, limit)

    @property
    def autoscaled(self) -> bool:
        return self.autoscale is not None and self.autoscale.enabled

    def memory_bytes(self) -> int | None:
        if self.memory is None:
            return None
        match = _MEMORY_RE.fullmatch(self.memory)
        assert match is not None  # validated
        unit = match.group(2).lower()
        return int(float(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit])


class AutoscalerConfig(BaseModel):
    """The cluster file's ``autoscaler:`` section."""

    model_config = ConfigDict(extra="forbid")

    #: Seconds between two evaluations.
    period: float = Field(default=5.0, ge=0.5, le=3600)


class ClusterFile(BaseModel):
    """A whole cluster file: its pools (by name, in file order) and the autoscaler."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    autoscaler: AutoscalerConfig = Field(default_factory=lambda: AutoscalerConfig())
    pools: dict[str, PoolSpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("pools"), Mapping):
            data = dict(data)
            pools = {}
            for name, pool in data["pools"].items():
                if isinstance(pool, Mapping) and "name" not in pool:
                    pool = {**pool, "name": name}
                elif pool is None:
                    pool = {"name": name}
                pools[name] = pool
            data["pools"] = pools
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ClusterFile:
        if self.version != 1:
            raise ValueError(f"version {self.version} is not supported; this Mimir reads 1")
        if not self.pools:
            self.pools = {DEFAULT_POOL: PoolSpec()}
        for name, pool in self.pools.items():
            if pool.name != name:
                raise ValueError(f"pool {name!r} says its name is {pool.name!r}")
        return self

    def pool(self, name: str) -> PoolSpec:
        """The pool called ``name``, else :class:`KeyError` naming the known ones."""
        try:
            return self.pools[name]
        except KeyError:
            known = ", ".join(self.pools)
            raise KeyError(f"unknown pool {name!r}; this cluster has {known}") from None

    def queues_by_pool(self) -> dict[str, list[str]]:
        return {name: list(pool.queues) for name, pool in self.pools.items()}


def default_cluster() -> ClusterFile:
    """One pool, ``default``, serving ``default``: the cluster of whoever declares nothing."""
    return ClusterFile()


def pool_for_queue(cluster: ClusterFile, queue: str) -> list[str]:
    """Names of the pools serving ``queue`` (empty: nothing will run its jobs)."""
    return [name for name, pool in cluster.pools.items() if queue in pool.queues]


def unserved_queues(served: Mapping[str, Sequence[str]], queues: Sequence[str]) -> list[str]:
    """Those of ``queues`` that no pool (``served``: pool → its queues) serves, sorted."""
    covered = {queue for pool_queues in served.values() for queue in pool_queues}
    return sorted(set(queues) - covered)


# -- reading ------------------------------------------------------------------------------

_KNOWN_FIELDS: dict[str, list[str]] = {
    "": list(ClusterFile.model_fields),
    "pool": list(PoolSpec.model_fields),
    "autoscale": list(AutoscalePolicy.model_fields),
    "autoscaler": list(AutoscalerConfig.model_fields),
}


def _known_at(loc: tuple[Any, ...]) -> list[str]:
    if len(loc) >= 3 and loc[0] == "pools" and loc[2] == "autoscale":
        return _KNOWN_FIELDS["autoscale"]
    if len(loc) >= 2 and loc[0] == "pools":
        return _KNOWN_FIELDS["pool"]
    if loc and loc[0] == "autoscaler":
        return _KNOWN_FIELDS["autoscaler"]
    return _KNOWN_FIELDS[""]


def _issues(
    exc: ValidationError, lines: Mapping[tuple[Any, ...], tuple[int, int]]
) -> list[ValidationIssue]:
    issues = []
    for error in exc.errors():
        # Pydantic puts the model validators' failures at the model (no field); the
        # wrapped value of a "before" validator is marked with a function name: drop it.
        loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
        message = str(error["msg"]).removeprefix("Value error, ")
        suggestions: list[str] = []
        if error["type"] == "extra_forbidden" and loc:
            suggestions = difflib.get_close_matches(str(loc[-1]), _known_at(loc[:-1]), n=3)
            message = f"unknown field {loc[-1]!r}" + (
                f" (did you mean {', '.join(suggestions)}?)" if suggestions else ""
            )
        elif error["type"] == "missing":
            message = "required field is missing"
        else:
            # A model's own check names its field first ("max (2) is less than min (3)").
            first = re.split(r"[ :(]", message, maxsplit=1)[0]
            if first in _known_at(loc) and (not loc or loc[-1] != first):
                loc = (*loc, first)
                message = message.removeprefix(f"{first}: ")
        line, column = node_position(lines, loc)
        issues.append(
            ValidationIssue(
                message=message,
                line=line,
                column=column,
                field=".".join(map(str, loc)) or None,
                suggestions=suggestions,
            )
        )
    return issues


def parse_cluster_file(text: str, source: str | None = None) -> ClusterFile:
    """The cluster file in ``text``; :class:`ClusterFileError` with every problem, by line."""
    from mimir.core.errors import PipelineValidationError
    from mimir.core.pipeline.loader import parse_yaml

    try:
        data, lines = parse_yaml(text, source)
    except PipelineValidationError as exc:  # the YAML itself, or its size
        raise ClusterFileError(exc.errors, source) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ClusterFileError(
            [
                ValidationIssue(
                    message="a cluster file is a mapping (version, autoscaler, pools)",
                    line=1,
                    column=1,
                )
            ],
            source,
        )
    pools = data.get("pools")
    if pools is not None and not isinstance(pools, Mapping):
        line, column = node_position(lines, ("pools",))
        raise ClusterFileError(
            [
                ValidationIssue(
                    message="'pools' is a mapping of pool name to pool",
                    line=line,
                    column=column,
                    field="pools",
                )
            ],
            source,
        )
    problems: list[ValidationIssue] = []
    for name in pools or {}:
        try:
            validate_pool_name(str(name))
        except ValueError as exc:
            line, column = node_position(lines, ("pools", name))
            problems.append(
                ValidationIssue(message=str(exc), line=line, column=column, field=f"pools.{name}")
            )
    if problems:
        raise ClusterFileError(problems, source)
    try:
        return ClusterFile.model_validate(data)
    except ValidationError as exc:
        raise ClusterFileError(_issues(exc, lines), source) from None


def load_cluster_file(path: Path | str) -> ClusterFile:
    """Read and validate the cluster file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClusterFileError(
            [ValidationIssue(message=f"cannot read it: {exc}")], str(path)
        ) from exc
    return parse_cluster_file(text, str(path))


def pools_to_env(cluster: ClusterFile) -> str:
    """The value of :data:`POOLS_ENV` for ``cluster`` (compact JSON)."""
    return json.dumps(cluster.model_dump(mode="json", exclude_none=True), separators=(",", ":"))


def pools_from_env(environ: Mapping[str, str]) -> ClusterFile | None:
    """The cluster :data:`POOLS_ENV` describes, ``None`` when unset; a bad value is a
    :class:`ClusterFileError` (whoever set it made a mistake the server must not hide)."""
    text = environ.get(POOLS_ENV, "").strip()
    if not text:
        return None
    try:
        return ClusterFile.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise ClusterFileError(
            [ValidationIssue(message=f"{POOLS_ENV} is not a valid cluster: {exc}")]
        ) from None


def wanted_replicas(backlog: int, target_backlog: float) -> int:
    """Replicas that give each at most ``target_backlog`` jobs of ``backlog``."""
    return math.ceil(backlog / target_backlog) if backlog > 0 else 0
