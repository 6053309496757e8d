"""Workers' own metrics: counted in each worker's memory, added into Redis hashes with
its heartbeat, rendered by the server's ``GET /metrics`` (``mimir.server.routes.metrics``).

Why the server aggregates rather than each worker serving ``/metrics``: workers are
autoscaled and short-lived, run in containers or on other hosts without published ports,
and one scrape target (the API server) needs no service discovery. The counts accumulate
per pool in Redis, so a worker that exits or restarts takes nothing with it.

A worker counts (:class:`WorkerMetrics`):

- every attempt whose outcome it wrote, by ``pool``, ``queue`` and ``outcome``
  (:data:`OUTCOMES`);
- the run time of the attempts that ended (not handed back), by ``pool``, ``queue`` and
  ``pipeline`` (histogram, :data:`JOB_BUCKETS`);
- the run time of each pipeline step, by ``pool``, ``plugin`` and ``status`` (histogram,
  :data:`STEP_BUCKETS`), from the run's capture.

With each heartbeat (one round trip, the one it makes anyway) it sends what it counted
since the last one: one ``EVAL`` of :data:`FLUSH_SCRIPT` that ``HINCRBY``s /
``HINCRBYFLOAT``s the hashes (see :class:`~mimir.core.queue.keys.QueueKeys`)::

    {p}metrics:jobs       hash  ["pool","queue","outcome"] -> attempts
    {p}metrics:job_time   hash  ["pool","queue","pipeline","le_B"|"sum"|"count"] -> n
    {p}metrics:step_time  hash  ["pool","plugin","status","le_B"|"sum"|"count"] -> n
    {p}metrics:pipelines  set   pipeline label values admitted (at most LABEL_CAP)
    {p}metrics:plugins    set   plugin label values admitted (at most LABEL_CAP)

Fields are JSON arrays of the label values (then the series: a bucket's upper bound, the
sum or the count); histogram buckets are stored per bucket (not cumulative), like the
queue's own ``{p}duration``.

Cardinality: pipeline names and plugin names come from users, so each label admits at
most :data:`LABEL_CAP` distinct values cluster-wide (the first seen, kept in the two
sets; the script checks and adds atomically); the rest are counted as ``other``. Pools,
queues, outcomes and statuses are bounded by the configuration.

If Redis is away, the counts are kept and sent with a later heartbeat; if a heartbeat's
reply is lost after Redis applied it, those counts are added again with the next one
(counters may over-count by one heartbeat's worth across a Redis outage).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FLUSH_SCRIPT",
    "JOB_BUCKETS",
    "LABEL_CAP",
    "OTHER",
    "OUTCOMES",
    "STEP_BUCKETS",
    "STEP_STATUSES",
    "Histogram",
    "WorkerMetrics",
    "decode_counter",
    "decode_histograms",
    "flush_args",
]

#: Upper bounds (seconds) of the job duration histogram's buckets.
JOB_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
)  # fmt: skip
#: Upper bounds (seconds) of the step duration histogram's buckets.
STEP_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
)  # fmt: skip
#: Distinct values kept per user-named label (``pipeline``, ``plugin``); beyond: OTHER.
LABEL_CAP = 200
#: The label value counting whatever is beyond the cap.
OTHER = "other"
#: A worker's outcomes of an attempt: ``retried`` is a failure with attempts left,
#: ``requeued`` a job handed back unrun or unfinished (shutdown). A job the queue gives up
#: on after too many deliveries never reaches a worker's outcome: that is
#: ``mimir_jobs_total{status="dead"}``.
OUTCOMES = ("succeeded", "failed", "retried", "cancelled", "requeued")
#: A step's statuses (a step still running when its job stopped counts as failed).
STEP_STATUSES = ("succeeded", "failed", "skipped")

#: The outcome label of each ``Outcome.applied`` (what the finish script wrote).
_OUTCOME_OF = {
    "succeeded": "succeeded",
    "failed": "failed",
    "retry": "retried",
    "cancelled": "cancelled",
    "requeue": "requeued",
}

# KEYS: 1 jobs, 2 job_time, 3 step_time, 4 pipelines set, 5 plugins set.
# ARGV[1]: the cap; ARGV[2]: JSON list of [hash index, set index (0: none), name to admit,
# field, field if not admitted, value, 1 for HINCRBY | 0 for HINCRBYFLOAT].
FLUSH_SCRIPT = """
local cap = tonumber(ARGV[1])
local seen = {}
for _, e in ipairs(cjson.decode(ARGV[2])) do
  local hash, set, name, f, other, value, int = e[1], e[2], e[3], e[4], e[5], e[6], e[7]
  if set > 0 then
    local mark = set .. ':' .. name
    local ok = seen[mark]
    if ok == nil then
      ok = redis.call('SISMEMBER', KEYS[set], name) == 1
      if not ok and redis.call('SCARD', KEYS[set]) < cap then
        redis.call('SADD', KEYS[set], name)
        ok = true
      end
      seen[mark] = ok
    end
    if not ok then f = other end
  end
  if int == 1 then
    redis.call('HINCRBY', KEYS[hash], f, value)
  else
    redis.call('HINCRBYFLOAT', KEYS[hash], f, value)
  end
end
return 1
"""

_JOBS, _JOB_TIME, _STEP_TIME, _PIPELINES, _PLUGINS = 1, 2, 3, 4, 5


def _field(*parts: str) -> str:
    return json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)


def _bucket(bound: float) -> str:
    return "le_inf" if math.isinf(bound) else f"le_{bound:g}"


def _bucket_of(seconds: float, bounds: tuple[float, ...]) -> str:
    for bound in bounds:
        if seconds <= bound:
            return _bucket(bound)
    return _bucket(math.inf)


@dataclass
class _Deltas:
    #: (queue, outcome) -> attempts
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (queue, pipeline) -> {bucket|"count": n, "sum": seconds}
    job_time: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    #: (plugin, status) -> the same
    step_time: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.jobs or self.job_time or self.step_time)


def _observe(series: dict[str, float], seconds: float, bounds: tuple[float, ...]) -> None:
    bucket = _bucket_of(seconds, bounds)
    series[bucket] = series.get(bucket, 0) + 1
    series["count"] = series.get("count", 0) + 1
    series["sum"] = series.get("sum", 0.0) + seconds


def _merge(into: dict[Any, dict[str, float]], more: Mapping[Any, dict[str, float]]) -> None:
    for key, series in more.items():
        mine = into.setdefault(key, {})
        for name, value in series.items():
            mine[name] = mine.get(name, 0) + value


class WorkerMetrics:
    """What one worker of ``pool`` counted since its last heartbeat (one event loop: no
    locking). :meth:`take` hands the counts over for sending; :meth:`restore` puts them
    back when the send failed."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self._d = _Deltas()

    def attempt(self, queue: str, applied: str, pipeline: str, seconds: float | None) -> None:
        """An attempt's outcome was written (``applied``: what the finish script did)."""
        outcome = _OUTCOME_OF.get(applied)
        if outcome is None:  # stale: another worker's now
            return
        key = (queue, outcome)
        self._d.jobs[key] = self._d.jobs.get(key, 0) + 1
        if seconds is not None and outcome != "requeued":
            _observe(self._d.job_time.setdefault((queue, pipeline), {}), seconds, JOB_BUCKETS)

    def steps(self, steps: Iterable[Mapping[str, Any]]) -> None:
        """A run's steps as its capture holds them (``plugin``, ``status``, ``duration_ms``)."""
        for step in steps:
            status = step.get("status") or "failed"  # still running when the job stopped
            plugin = str(step.get("plugin") or "")
            seconds = max(0.0, float(step.get("duration_ms") or 0.0) / 1000)
            _observe(self._d.step_time.setdefault((plugin, status), {}), seconds, STEP_BUCKETS)

    def take(self) -> _Deltas | None:
        """The counts so far (``None``: nothing counted); the worker counts anew."""
        if self._d.empty():
            return None
        taken, self._d = self._d, _Deltas()
        return taken

    def restore(self, taken: _Deltas | None) -> None:
        """Put back counts whose sending failed."""
        if taken is None:
            return
        for key, count in taken.jobs.items():
            self._d.jobs[key] = self._d.jobs.get(key, 0) + count
        _merge(self._d.job_time, taken.job_time)
        _merge(self._d.step_time, taken.step_time)

    def entries(self, taken: _Deltas) -> list[list[Any]]:
        """The script's entries for ``taken`` (see :data:`FLUSH_SCRIPT`)."""
        pool = self.pool
        out: list[list[Any]] = []
        for (queue, outcome), count in sorted(taken.jobs.items()):
            out.append([_JOBS, 0, "", _field(pool, queue, outcome), "", str(count), 1])
        for (queue, pipeline), series in sorted(taken.job_time.items()):
            for name, value in sorted(series.items()):
                admitted, other = (
                    _field(pool, queue, pipeline, name),
                    _field(pool, queue, OTHER, name),
                )
                out.append(_entry(_JOB_TIME, _PIPELINES, pipeline, admitted, other, name, value))
        for (plugin, status), series in sorted(taken.step_time.items()):
            for name, value in sorted(series.items()):
                admitted, other = (
                    _field(pool, plugin, status, name),
                    _field(pool, OTHER, status, name),
                )
                out.append(_entry(_STEP_TIME, _PLUGINS, plugin, admitted, other, name, value))
        return out


def _entry(
    hash_index: int, set_index: int, label: str, admitted: str, other: str, name: str, value: float
) -> list[Any]:
    if name == "sum":
        return [hash_index, set_index, label, admitted, other, repr(float(value)), 0]
    return [hash_index, set_index, label, admitted, other, str(int(value)), 1]


def flush_args(keys: Any, metrics: WorkerMetrics, taken: _Deltas) -> list[Any]:
    """``EVAL`` arguments (after the script) sending ``taken``: ``keys`` is the
    :class:`~mimir.core.queue.keys.QueueKeys`."""
    entries = metrics.entries(taken)
    return [
        5,
        keys.metrics_jobs,
        keys.metrics_job_time,
        keys.metrics_step_time,
        keys.metrics_pipelines,
        keys.metrics_plugins,
        LABEL_CAP,
        json.dumps(entries, separators=(",", ":"), ensure_ascii=False),
    ]


# -- reading (the server) --------------------------------------------------------------


@dataclass
class Histogram:
    """One histogram series: cumulative ``(upper bound, count)`` (the last ``inf``), sum."""

    buckets: list[tuple[float, int]]
    sum: float
    count: int


def decode_counter(raw: Mapping[str, str]) -> dict[tuple[str, ...], float]:
    """A counter hash: label values -> count (fields that do not parse are skipped)."""
    out: dict[tuple[str, ...], float] = {}
    for name, value in raw.items():
        try:
            labels = tuple(str(part) for part in json.loads(name))
            out[labels] = out.get(labels, 0.0) + float(value)
        except (ValueError, TypeError):
            continue
    return out


def decode_histograms(
    raw: Mapping[str, str], bounds: tuple[float, ...]
) -> dict[tuple[str, ...], Histogram]:
    """A histogram hash: label values -> :class:`Histogram`."""
    parts: dict[tuple[str, ...], dict[str, float]] = {}
    for name, value in raw.items():
        try:
            *values, part = (str(item) for item in json.loads(name))
            parts.setdefault(tuple(values), {})[part] = float(value)
        except (ValueError, TypeError):
            continue
    out: dict[tuple[str, ...], Histogram] = {}
    for labels, series in parts.items():
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound in (*bounds, math.inf):
            running += int(series.get(_bucket(bound), 0))
            cumulative.append((bound, running))
        out[labels] = Histogram(cumulative, series.get("sum", 0.0), int(series.get("count", 0)))
    return out
