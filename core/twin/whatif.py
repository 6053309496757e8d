"""What-if analysis: a base scenario against a variant of it, over several seeds.

A what-if names a twin's scenario (the base) and a list of :class:`Change`: twin
parameter changes (``{"target": "SteelCo", "parameter": "capacity", "factor": 0.7}``: its
capacity -30 %; ``"value"`` sets the parameter instead) and added scenario events
(``{"event": {"at": 10, "type": "resource.unavailable", "target": "SteelCo",
"duration": 10}}``: the supplier out for 10 days). :func:`apply_changes` makes the variant
(twin and scenario); each seed runs the base and the variant (the API queues them as
``digital_twin`` jobs); :func:`summarise` answers the distribution of the key metrics over
the seeds (mean, 5th and 95th percentiles) for the base, the variant and their paired
difference, and which entities are the bottleneck how often.

Percentiles interpolate linearly between the closest ranks (numpy's default, method 7 of
Hyndman and Fan): for ``n`` sorted values ``x[0] … x[n-1]`` the ``p`` percentile is at rank
``h = (n - 1) * p / 100``, ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``;
one value is its own every percentile.

:class:`WhatIfStore` keeps the batches in the twin store's SQLite file (table
``whatif_batches``, deleted with their twin).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mimir.core.twin.models import (
    Entity,
    RunRecord,
    Scenario,
    ScenarioEvent,
    SimulationResult,
    Twin,
)
from mimir.core.twin.simulation import TwinError, resolve_target
from mimir.core.twin.store import TwinNotFoundError, TwinsFile, utc_now

__all__ = [
    "ENDED",
    "MAX_CHANGES",
    "METRICS",
    "PARAMETERS",
    "BatchRun",
    "Change",
    "WhatIfBatch",
    "WhatIfStore",
    "apply_changes",
    "batch_status",
    "digest",
    "percentile",
    "stats",
    "summarise",
    "variant_scenario_id",
]

#: Entity parameters a change may set or scale.
PARAMETERS = ("capacity", "demand", "inventory", "lead_time", "target_stock", "buffer")
Parameter = Literal["capacity", "demand", "inventory", "lead_time", "target_stock", "buffer"]
#: System metrics (``SimulationResult.metrics``) whose distribution a what-if answers.
METRICS = ("fill_rate", "delivered", "throughput", "backlog", "peak_backlog", "avg_utilisation")
#: Most changes one what-if applies.
MAX_CHANGES = 100


class Change(BaseModel):
    """One change of the variant: a twin parameter (``target``, ``parameter`` and either a
    ``factor`` that scales it or a ``value`` that replaces it), or an added scenario
    ``event``. Changes apply in order: two factors on one parameter multiply."""

    model_config = ConfigDict(extra="forbid")

    #: Entity id, label or local name (as a scenario event's target).
    target: str | None = Field(default=None, min_length=1)
    parameter: Parameter | None = None
    #: Multiplies the parameter (0.7: -30 %).
    factor: float | None = Field(default=None, strict=True, ge=0, allow_inf_nan=False)
    #: Replaces the parameter.
    value: float | None = Field(default=None, strict=True, ge=0, allow_inf_nan=False)
    #: An event added to the scenario's own.
    event: ScenarioEvent | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Change:
        if self.event is not None:
            extra = [
                name
                for name in ("target", "parameter", "factor", "value")
                if getattr(self, name) is not None
            ]
            if extra:
                raise ValueError(
                    f"a change is an event or a parameter change, not both: drop {extra[0]!r}"
                )
            return self
        if self.target is None:
            raise ValueError("a parameter change needs a target (or give an event)")
        if self.parameter is None:
            raise ValueError(
                f"a parameter change needs a parameter: one of {', '.join(PARAMETERS)}"
            )
        if (self.factor is None) == (self.value is None):
            raise ValueError("a parameter change needs exactly one of factor and value")
        return self


def variant_scenario_id(scenario_id: str, batch_id: str) -> str:
    """The id the variant's runs carry as their ``scenario_id`` (not a stored scenario):
    ``<base id>.whatif-<batch id>``, cut to the 128 characters an id may have."""
    suffix = f".whatif-{batch_id}"
    return (scenario_id or "scenario")[: 128 - len(suffix)] + suffix


def apply_changes(
    twin: Twin, scenario: Scenario, changes: Sequence[Change], *, variant_id: str | None = None
) -> tuple[Twin, Scenario]:
    """The variant of ``twin`` and ``scenario``: copies with ``changes`` applied in order
    (the arguments are left as they are). :class:`TwinError` naming the change (``changes[i]``)
    when its target is not an entity of the twin, a factor would scale an unbounded capacity
    or buffer, or an added event starts at or after the scenario's end."""
    entities = {e.id: e.model_dump() for e in twin.entities}
    events = list(scenario.events)
    for index, change in enumerate(changes):
        where = f"changes[{index}]"
        if change.event is not None:
            event = change.event
            try:
                resolve_target(twin, event.target)
            except TwinError as exc:
                raise TwinError(f"{where}.event: {exc}") from None
            if event.at >= scenario.duration:
                raise TwinError(
                    f"{where}.event: at {event.at:g} is at or after the end of scenario "
                    f"{scenario.id or scenario.name!r} ({scenario.duration:g}): it would change "
                    "nothing"
                )
            events.append(event)
            continue
        assert change.target is not None and change.parameter is not None  # the validator's
        try:
            entity_id = resolve_target(twin, change.target)
        except TwinError:
            raise TwinError(
                f"{where}.target: {change.target!r} is not an entity of twin {twin.name!r}"
            ) from None
        fields = entities[entity_id]
        if change.value is not None:
            fields[change.parameter] = float(change.value)
            continue
        assert change.factor is not None
        current = fields[change.parameter]
        if current is None:
            raise TwinError(
                f"{where}.factor: the {change.parameter} of {change.target!r} is unbounded, "
                "which no factor changes: give a value"
            )
        scaled = float(current) * change.factor
        if not math.isfinite(scaled):
            raise TwinError(
                f"{where}.factor: {change.factor:g} x the {change.parameter} of "
                f"{change.target!r} ({current:g}) is not a finite number"
            )
        fields[change.parameter] = scaled
    variant_twin = twin.model_copy(
        update={"entities": [Entity.model_validate(entities[e.id]) for e in twin.entities]}
    )
    variant = scenario.model_copy(
        update={
            "events": events,
            "name": f"{scenario.name} (what-if)",
            **({"id": variant_id} if variant_id is not None else {}),
        }
    )
    # Validated again as a whole (the event count, ids …).
    return variant_twin, Scenario.model_validate(variant.model_dump())


# -- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p`` percentile (0 to 100) of ``values`` by linear interpolation between the
    closest ranks (see the module's docstring). :class:`ValueError` when empty."""
    if not values:
        raise ValueError("no values")
    if not 0 <= p <= 100:
        raise ValueError(f"a percentile is from 0 to 100, not {p}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


def stats(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """``{mean, p5, p95, n}`` of the values that are not ``None`` (all ``None``: ``n`` 0
    and the rest ``None``), rounded to 6 decimals."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return {"mean": None, "p5": None, "p95": None, "n": 0}
    # p5 <= mean <= p95 may not hold for skewed values: they are reported as computed.
    return {
        "mean": round(math.fsum(kept) / len(kept), 6),
        "p5": round(percentile(kept, 5), 6),
        "p95": round(percentile(kept, 95), 6),
        "n": len(kept),
    }


def digest(result: SimulationResult | Mapping[str, Any]) -> dict[str, Any]:
    """What a what-if keeps of one run: ``{seed, metrics: {METRICS}, top (the entity that
    was a bottleneck longest, or None), bottlenecks: {entity: time as a bottleneck},
    labels: {entity: label}}``. A digest given is answered as it is."""
    if not isinstance(result, SimulationResult):
        return dict(result)
    metrics = result.metrics
    ranked = metrics.get("bottlenecks") or []
    per_entity = metrics.get("per_entity") or {}
    times = {
        entity: float(stats_["time_bottleneck"])
        for entity, stats_ in per_entity.items()
        if stats_.get("time_bottleneck")
    }
    return {
        "seed": result.seed,
        "metrics": {name: metrics.get(name) for name in METRICS},
        "top": ranked[0]["entity"] if ranked else None,
        "bottlenecks": times,
        "labels": {entity: per_entity[entity].get("label", entity) for entity in times},
    }


def summarise(
    base_results: Sequence[SimulationResult | Mapping[str, Any]],
    variant_results: Sequence[SimulationResult | Mapping[str, Any]],
) -> dict[str, Any]:
    """The distribution of :data:`METRICS` over the seeds, and the bottleneck ranking.

    ``{seeds: {base, variant, paired}, base: {metric: {mean, p5, p95, n}}, variant: {…},
    delta: {…} (variant - base of the same seed, over the seeds both ran), bottlenecks:
    [{entity, label, base_share, variant_share, mean_time, base_mean_time,
    variant_mean_time}]}``. An entity's share is the fraction of a side's seeds in which it
    was the top bottleneck (longest time as a bottleneck); its mean time is its mean time as
    a bottleneck over the side's seeds (``mean_time``: the variant's). Every entity that was
    a bottleneck in some run is ranked: by variant share, variant mean time, then base share.
    Takes simulation results or their :func:`digest`.
    """
    base = [digest(r) for r in base_results]
    variant = [digest(r) for r in variant_results]
    paired_base = {d["seed"]: d for d in base}
    pairs = [(paired_base[d["seed"]], d) for d in variant if d["seed"] in paired_base]

    def delta(name: str) -> list[float | None]:
        out: list[float | None] = []
        for b, v in pairs:
            x, y = b["metrics"].get(name), v["metrics"].get(name)
            out.append(None if x is None or y is None else y - x)
        return out

    summary: dict[str, Any] = {
        "seeds": {"base": len(base), "variant": len(variant), "paired": len(pairs)},
        "base": {m: stats([d["metrics"].get(m) for d in base]) for m in METRICS},
        "variant": {m: stats([d["metrics"].get(m) for d in variant]) for m in METRICS},
        "delta": {m: stats(delta(m)) for m in METRICS},
    }
    labels: dict[str, str] = {}
    for d in (*base, *variant):
        labels.update(d.get("labels") or {})
        if d.get("top") is not None:
            labels.setdefault(d["top"], d["top"])

    def share(side: list[dict[str, Any]], entity: str) -> float:
        return round(sum(1 for d in side if d.get("top") == entity) / len(side), 6) if side else 0.0

    def mean_time(side: list[dict[str, Any]], entity: str) -> float:
        if not side:
            return 0.0
        total = math.fsum(float((d.get("bottlenecks") or {}).get(entity, 0.0)) for d in side)
        return round(total / len(side), 6)

    ranking: list[dict[str, Any]] = [
        {
            "entity": entity,
            "label": label,
            "base_share": share(base, entity),
            "variant_share": share(variant, entity),
            "mean_time": mean_time(variant, entity),
            "base_mean_time": mean_time(base, entity),
            "variant_mean_time": mean_time(variant, entity),
        }
        for entity, label in labels.items()
    ]
    ranking.sort(
        key=lambda r: (
            -r["variant_share"],
            -r["variant_mean_time"],
            -r["base_share"],
            -r["base_mean_time"],
            r["entity"],
        )
    )
    summary["bottlenecks"] = ranking
    return summary


# -- batches ------------------------------------------------------------------------------

Side = Literal["base", "variant"]
RunStatus = Literal["queued", "running", "succeeded", "failed"]
BatchStatus = Literal["queued", "running", "succeeded", "failed"]
ENDED = ("succeeded", "failed")


class BatchRun(BaseModel):
    """One run of a batch as the batch knows it (its digest once it succeeded)."""

    id: str
    side: Side
    seed: int
    status: RunStatus = "queued"
    error: str | None = None
    digest: dict[str, Any] | None = None

    def ended_from(self, run: RunRecord) -> BatchRun:
        """This run brought up to date from its record."""
        update: dict[str, Any] = {"status": run.status, "error": run.error}
        if run.status == "succeeded" and run.result is not None:
            update["digest"] = digest(run.result)
        return self.model_copy(update=update)


class WhatIfBatch(BaseModel):
    """A what-if: its request, its runs and, once every run ended, its summary."""

    id: str
    twin_id: str
    scenario_id: str
    created_at: str = ""
    #: The request as accepted (``changes``, ``seeds`` as a list, ``queue``, ``priority``).
    request: dict[str, Any] = Field(default_factory=dict)
    runs: list[BatchRun] = Field(default_factory=list)
    status: BatchStatus = "queued"
    summary: dict[str, Any] | None = None
    #: Why fewer runs than asked were queued (the queue failed midway), if so.
    error: str | None = None


def batch_status(runs: Sequence[BatchRun]) -> BatchStatus:
    """``queued`` while no run started, ``running`` until every run ended, then
    ``succeeded`` (every run did) or ``failed`` (at least one failed; the summary still
    covers the runs that succeeded)."""
    statuses = [r.status for r in runs]
    if not statuses or any(s not in ENDED for s in statuses):
        return "queued" if all(s == "queued" for s in statuses) else "running"
    return "succeeded" if all(s == "succeeded" for s in statuses) else "failed"


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS whatif_batches (
    id TEXT PRIMARY KEY,
    twin_id TEXT NOT NULL REFERENCES twins(id) ON DELETE CASCADE,
    scenario_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    request TEXT NOT NULL,
    runs TEXT NOT NULL,
    summary TEXT,
    error TEXT
)""",
    "CREATE INDEX IF NOT EXISTS whatif_batches_twin ON whatif_batches (twin_id, created_at)",
)


class WhatIfStore(TwinsFile):
    """The what-if batches, in a table of the twin store's SQLite file (created here if
    missing; a batch goes with its twin). One connection per call."""

    def _ensure_schema(self) -> None:
        with self._connect() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    def add(self, batch: WhatIfBatch) -> WhatIfBatch:
        """Store a new batch (:class:`TwinNotFoundError` when its twin is gone)."""
        batch = batch.model_copy(update={"created_at": batch.created_at or utc_now()})
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT INTO whatif_batches (id, twin_id, scenario_id, status, created_at, "
                    "request, runs, summary, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        batch.id,
                        batch.twin_id,
                        batch.scenario_id,
                        batch.status,
                        batch.created_at,
                        json.dumps(batch.request),
                        json.dumps([r.model_dump(mode="json") for r in batch.runs]),
                        None if batch.summary is None else json.dumps(batch.summary),
                        batch.error,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            if "FOREIGN KEY" in str(exc):
                raise TwinNotFoundError(f"no twin {batch.twin_id!r}") from None
            raise
        return batch

    def save(self, batch: WhatIfBatch) -> None:
        """Record a batch's runs, status and summary."""
        with self._connect() as db:
            db.execute(
                "UPDATE whatif_batches SET status = ?, runs = ?, summary = ?, error = ? "
                "WHERE id = ?",
                (
                    batch.status,
                    json.dumps([r.model_dump(mode="json") for r in batch.runs]),
                    None if batch.summary is None else json.dumps(batch.summary),
                    batch.error,
                    batch.id,
                ),
            )

    def get(self, twin_id: str, batch_id: str) -> WhatIfBatch:
        """Batch ``batch_id`` of twin ``twin_id`` (:class:`TwinNotFoundError` naming it)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT id, twin_id, scenario_id, status, created_at, request, runs, summary, "
                "error FROM whatif_batches WHERE id = ? AND twin_id = ?",
                (batch_id, twin_id),
            ).fetchone()
        if row is None:
            raise TwinNotFoundError(f"twin {twin_id!r} has no what-if batch {batch_id!r}")
        return self._batch(row)

    def list_batches(self, twin_id: str) -> list[WhatIfBatch]:
        """The batches of a twin, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, twin_id, scenario_id, status, created_at, request, runs, summary, "
                "error FROM whatif_batches WHERE twin_id = ? ORDER BY created_at, id",
                (twin_id,),
            ).fetchall()
        return [self._batch(row) for row in rows]

    @staticmethod
    def _batch(row: tuple[Any, ...]) -> WhatIfBatch:
        batch_id, twin_id, scenario_id, status, created_at, request, runs, summary, error = row
        return WhatIfBatch(
            id=batch_id,
            twin_id=twin_id,
            scenario_id=scenario_id,
            status=status,
            created_at=created_at,
            request=json.loads(request),
            runs=[BatchRun.model_validate(r) for r in json.loads(runs)],
            summary=None if summary is None else json.loads(summary),
            error=error,
        )
