"""Named limits on what one request, document or expression may cost, from the environment.

Every bound that protects the server and the workers from hostile or runaway input lives
here, with its environment variable and default; the README's security section lists
them. Code that enforces a bound reads it from :func:`default_limits` (or from the
``limits`` field of :class:`mimir.core.settings.Settings`), never from a constant of its own.

Each field is set by ``MIMIR_`` + its name in capitals (``max_depth`` by ``MIMIR_MAX_DEPTH``):

================  =========  ===========================================================
field             default    what it bounds
================  =========  ===========================================================
max_body_bytes    16 MiB     one HTTP request body (413 beyond)
max_upload_bytes  1 GiB      one ontology document sent as the raw body of an upload
max_yaml_bytes    1 MiB      one YAML document, as written and with aliases expanded
max_yaml_nodes    100,000    YAML nodes once aliases are expanded
max_yaml_aliases  1,000      alias uses (``*name``) in one YAML document
max_depth         64         nesting of YAML, of a pipeline mapping and of a job's context
max_steps         1,000      steps in one pipeline
expr_max_value    100,000    characters, items or digits of any value an expression builds
expr_max_work     1,000,000  work units (operations + built size) of one evaluation
execute_timeout   300 s      one synchronous ``POST /api/v1/pipelines/execute``
max_workers       64         workers of one cluster (``mimir cluster up --workers``/``scale``)
twin_max_steps    50,000,000 entities x flow steps of one twin run
twin_max_snapshots 2,000,000 entities x snapshots one twin run records
twin_max_batch_bytes 64 MiB  twin and scenario payloads of one what-if batch's jobs in all
================  =========  ===========================================================
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from mimir.core.errors import LimitExceededError

__all__ = ["LimitExceededError", "Limits", "check_depth", "default_limits"]


@dataclass(frozen=True)
class Limits:
    """Bounds on input size and work; each field has an environment variable (module doc)."""

    #: Largest HTTP request body, in bytes.
    max_body_bytes: int = 16 * 1024 * 1024
    #: Largest ontology document sent as the raw body of an upload (streamed, never held
    #: in memory); every other body, a JSON upload included, stays under ``max_body_bytes``.
    max_upload_bytes: int = 1024 * 1024 * 1024
    #: Largest YAML document, in bytes (UTF-8).
    max_yaml_bytes: int = 1024 * 1024
    #: Most YAML nodes once every alias is expanded (an alias bomb stops here).
    max_yaml_nodes: int = 100_000
    #: Most alias uses in one YAML document.
    max_yaml_aliases: int = 1_000
    #: Deepest nesting of mappings and lists (YAML, pipeline config, job context).
    max_depth: int = 64
    #: Most steps in one pipeline.
    max_steps: int = 1_000
    #: Largest string, list or integer (in characters, items or digits) an expression builds.
    expr_max_value: int = 100_000
    #: Most work units (operations plus the size of what they build) one evaluation may use.
    expr_max_work: int = 1_000_000
    #: Seconds a synchronous execute may run before it is cancelled (504).
    execute_timeout: float = 300.0
    #: Most workers one cluster may run (``up --workers N``, ``scale N``).
    max_workers: int = 64
    #: Most entity-steps (entities x duration / step) one twin run may take.
    twin_max_steps: int = 50_000_000
    #: Most entity-snapshots (entities x snapshots) one twin run may record.
    twin_max_snapshots: int = 2_000_000
    #: Most bytes of twin and scenario, all its jobs' payloads together, one what-if
    #: batch may put on the queue.
    twin_max_batch_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Limits from ``environ`` (default ``os.environ``); unset or empty keeps the default."""
        env = os.environ if environ is None else environ
        values: dict[str, int | float] = {}
        for item in fields(cls):
            name = "MIMIR_" + item.name.upper()
            raw = (env.get(name) or "").strip()
            if not raw:
                continue
            kind = float if item.type in ("float", float) else int
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {raw!r}") from None
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {raw!r}")
            values[item.name] = value
        return cls(**values)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1)
def default_limits() -> Limits:
    """The process's limits, read from the environment once."""
    return Limits.from_env()


def check_depth(value: object, max_depth: int, what: str) -> None:
    """Raise :class:`LimitExceededError` when ``value`` nests mappings/lists deeper than
    ``max_depth``. Iterative (no recursion to exhaust) and visits a shared container once."""
    stack: list[tuple[object, int]] = [(value, 1)]
    seen: dict[int, int] = {}
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > max_depth:
            raise LimitExceededError(
                f"{what} is nested more than {max_depth} levels deep (limit MIMIR_MAX_DEPTH)"
            )
        if seen.get(id(item), 0) >= depth:
            continue
        seen[id(item)] = depth
        stack.extend((child, depth + 1) for child in children)
