"""Bounded time series for the dashboard: ring buffers over numpy arrays, and downsampling.

Memory is fixed at construction (``capacity`` samples per series), so an hour at 1 Hz costs
~57 KB per series however long the console runs.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mimir.app.services.jobs import parse_time

__all__ = [
    "DashboardRecorder",
    "RingSeries",
    "ScaleDecision",
    "SeriesSet",
    "peak_downsample",
    "pool_order",
]


class RingSeries:
    """The last ``capacity`` ``(t, value)`` samples, oldest first when read."""

    def __init__(self, capacity: int = 3600) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self.capacity = capacity
        self._t = np.zeros(capacity, dtype=np.float64)
        self._v = np.zeros(capacity, dtype=np.float64)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, t: float, value: float) -> None:
        self._t[self._next] = t
        self._v[self._next] = value
        self._next = (self._next + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def extend(self, samples: Iterable[tuple[float, float]]) -> None:
        for t, value in samples:
            self.append(t, value)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the times and values, oldest first."""
        if self._size < self.capacity:
            return self._t[: self._size].copy(), self._v[: self._size].copy()
        order = np.r_[self._next : self.capacity, 0 : self._next]
        return self._t[order], self._v[order]

    def window(self, seconds: float, now: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Samples of the last ``seconds`` (relative to ``now``, default the newest sample)."""
        t, v = self.arrays()
        if not len(t):
            return t, v
        end = t[-1] if now is None else now
        start = int(np.searchsorted(t, end - seconds, side="left"))
        return t[start:], v[start:]

    @property
    def last(self) -> float | None:
        if not self._size:
            return None
        return float(self._v[(self._next - 1) % self.capacity])


class SeriesSet:
    """Named :class:`RingSeries` of one capacity, created on first use."""

    def __init__(self, capacity: int = 3600) -> None:
        self.capacity = capacity
        self.series: dict[str, RingSeries] = {}

    def __getitem__(self, name: str) -> RingSeries:
        if name not in self.series:
            self.series[name] = RingSeries(self.capacity)
        return self.series[name]

    def append(self, t: float, values: dict[str, float]) -> None:
        for name, value in values.items():
            self[name].append(t, value)

    def names(self) -> list[str]:
        return list(self.series)

    def discard_missing(self, keep: Iterable[str], prefix: str) -> None:
        """Forget series under ``prefix`` not in ``keep`` (workers that went away)."""
        wanted = set(keep)
        for name in [n for n in self.series if n.startswith(prefix) and n not in wanted]:
            del self.series[name]


def peak_downsample(t: np.ndarray, v: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~``max_points`` samples keeping each bucket's min and max (spikes stay visible)."""
    n = len(t)
    if n <= max_points or max_points < 4:
        return t, v
    buckets = max_points // 2
    size = n // buckets
    usable = size * buckets
    tb = t[:usable].reshape(buckets, size)
    vb = v[:usable].reshape(buckets, size)
    lo = vb.argmin(axis=1)
    hi = vb.argmax(axis=1)
    rows = np.arange(buckets)
    first = np.minimum(lo, hi)
    second = np.maximum(lo, hi)
    out_t = np.empty(buckets * 2)
    out_v = np.empty(buckets * 2)
    out_t[0::2], out_v[0::2] = tb[rows, first], vb[rows, first]
    out_t[1::2], out_v[1::2] = tb[rows, second], vb[rows, second]
    if usable < n:  # keep the tail, which holds the newest samples
        out_t = np.r_[out_t, t[usable:]]
        out_v = np.r_[out_v, v[usable:]]
    return out_t, out_v


def _seconds(value: Any) -> float | None:
    """Epoch seconds from a number or an ISO 8601 text (``...Z`` too); None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    moment = parse_time(value)
    return moment.timestamp() if moment is not None else None


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    return next((data[k] for k in keys if data.get(k) is not None), None)


@dataclass(frozen=True)
class ScaleDecision:
    """One autoscaler decision: at ``t`` (epoch seconds) pool ``pool`` went ``old`` → ``new``."""

    t: float
    pool: str
    old: int
    new: int
    reason: str = ""
    #: The decision's id in the server's record (its stream entry), when it has one.
    id: str = ""

    @property
    def label(self) -> str:
        """What the time axis shows: ``default 1→4``."""
        return f"{self.pool} {self.old}→{self.new}"

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> ScaleDecision | None:
        """A decision from a ``scale`` event or ``GET /api/v1/autoscaler``'s list; None
        when it lacks a time, a pool or the two replica counts, and for the other
        ``scale`` events (``kind: result``, a scaling command's end)."""
        if data.get("kind", "decision") != "decision":
            return None
        t = _seconds(_first(data, "at", "time", "t", "timestamp", "decided_at"))
        pool = _first(data, "pool")
        old = _first(data, "from", "from_replicas", "current", "old")
        new = _first(data, "to", "to_replicas", "replicas", "new")
        if t is None or not pool:
            return None
        try:
            return cls(
                t,
                str(pool),
                int(old),
                int(new),
                str(data.get("reason") or ""),
                str(data.get("id") or ""),
            )
        except (TypeError, ValueError):
            return None


def pool_order(names: Iterable[str]) -> list[str]:
    """Pools as the console lists them: ``default`` first, then by name."""
    return sorted(set(names), key=lambda name: (name != "default", name))


class DashboardRecorder:
    """The dashboard's data, recorded from the first second whether or not it is on screen.

    Queue series: ``q:high``, ``q:normal``, ``q:low``, ``running``, ``completed``,
    ``failed``, ``workers``; per worker: ``cpu:<id>`` (%) and ``mem:<id>`` (MiB); per pool
    (``GET /api/v1/pools``): ``replicas:<pool>`` (running) and ``queued:<pool>``; and the
    autoscaler's last :attr:`MAX_DECISIONS` decisions, oldest first, each once.
    """

    MAX_DECISIONS = 200

    QUEUE_SERIES = ("q:high", "q:normal", "q:low", "running", "completed", "failed", "workers")

    def __init__(self, capacity: int = 3600) -> None:
        self.series = SeriesSet(capacity)
        self.last_stats: dict[str, object] = {}
        self.worker_ids: list[str] = []
        self.pool_names: list[str] = []
        self.decisions: deque[ScaleDecision] = deque(maxlen=self.MAX_DECISIONS)
        self._decided: set[object] = set()

    def add_pools(self, pools: Mapping[str, Mapping[str, Any]], t: float) -> None:
        """One ``GET /api/v1/pools`` reading: each pool's running replicas and queued jobs."""
        for name, pool in pools.items():
            replicas = pool.get("replicas")
            running = replicas.get("running") if isinstance(replicas, Mapping) else replicas
            self.series[f"replicas:{name}"].append(t, float(running or 0))
            self.series[f"queued:{name}"].append(t, float(pool.get("queued") or 0))
        names = pool_order(pools)
        self.series.discard_missing([f"replicas:{n}" for n in names], "replicas:")
        self.series.discard_missing([f"queued:{n}" for n in names], "queued:")
        self.pool_names = names

    def add_decision(self, payload: Mapping[str, Any]) -> ScaleDecision | None:
        """Record a decision (a ``scale`` event or one of the autoscaler's list) unless it
        is known already; the decision, or None when it was not new or not readable."""
        decision = ScaleDecision.from_payload(payload)
        if decision is None:
            return None
        # The same decision arrives as an event and again in the autoscaler's list.
        key = self._key(decision)
        if key in self._decided:
            return None
        if len(self.decisions) == self.decisions.maxlen:
            self._decided.discard(self._key(self.decisions[0]))
        self._decided.add(key)
        self.decisions.append(decision)
        if len(self.decisions) > 1 and self.decisions[-2].t > decision.t:
            ordered = sorted(self.decisions, key=lambda d: d.t)
            self.decisions.clear()
            self.decisions.extend(ordered)
        return decision

    @staticmethod
    def _key(decision: ScaleDecision) -> object:
        return decision.id or (round(decision.t, 3), decision.pool, decision.old, decision.new)

    def add_autoscaler(self, answer: Mapping[str, Any]) -> None:
        """``GET /api/v1/autoscaler``: its decisions (those not seen yet)."""
        for payload in answer.get("decisions") or []:
            if isinstance(payload, Mapping):
                self.add_decision(payload)

    def add_stats(self, stats: dict, t: float) -> None:
        by_priority = stats.get("by_priority") or {}
        self.series.append(
            t,
            {
                "q:high": float(by_priority.get("high", 0)),
                "q:normal": float(by_priority.get("normal", 0)),
                "q:low": float(by_priority.get("low", 0)),
                "running": float(stats.get("running", 0)),
                "completed": float(stats.get("completed_per_sec", 0.0)),
                "failed": float(stats.get("failed_per_sec", 0.0)),
                "workers": float(stats.get("workers", 0)),
            },
        )
        self.last_stats = stats

    def add_workers(self, workers: list[dict], t: float) -> None:
        ids = [str(w.get("worker_id", "")) for w in workers]
        for worker in workers:
            wid = str(worker.get("worker_id", ""))
            self.series[f"cpu:{wid}"].append(t, float(worker.get("cpu_percent", 0.0)))
            self.series[f"mem:{wid}"].append(t, float(worker.get("memory_bytes", 0)) / 2**20)
        self.series.discard_missing([f"cpu:{i}" for i in ids], "cpu:")
        self.series.discard_missing([f"mem:{i}" for i in ids], "mem:")
        self.worker_ids = ids
