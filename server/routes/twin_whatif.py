"""What-if analysis of a twin: a base scenario against a variant, over several seeds.

- ``POST /api/v1/twins/{id}/whatif`` ``{scenario_id, changes: [...], seeds: n | [seeds],
  queue?, priority?}`` → ``202 {batch_id, twin_id, scenario_id, variant_scenario_id,
  status, runs, run_ids, seeds, warning?}``: per seed, the base scenario and its variant
  (the changes applied, :mod:`mimir.core.twin.whatif`) queued as ``digital_twin`` jobs,
  runs of the twin with ``batch_id`` set (the variant's carry ``variant_scenario_id``, which
  is not a stored scenario);
- ``GET /api/v1/twins/{id}/whatif``: the twin's batches, oldest first, with their progress
  (unfinished ones brought up to date as below);
- ``GET /api/v1/twins/{id}/whatif/{batch_id}``: its status and progress (``done``,
  ``total``, ``failed``) and, once every run ended, the distribution of the key metrics
  over the seeds for ``base``, ``variant`` and their paired ``delta`` (``{mean, p5, p95,
  n}``) and the ranking of ``bottlenecks``.

A batch's runs follow their jobs as a single run does (:func:`twins._sync_from_job`) when the
batch is read; what a batch keeps of an ended run (its status, a digest of its metrics) is
stored with it, so a finished batch is answered without reading its runs again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Annotated, Any, Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine

from mimir.core.queue import JobQueue, Priority
from mimir.core.twin import Scenario, Twin, TwinError, TwinNotFoundError, TwinStore
from mimir.core.twin.simulation import check_size
from mimir.core.twin.store import new_id
from mimir.core.twin.whatif import (
    ENDED,
    MAX_CHANGES,
    BatchRun,
    Change,
    WhatIfBatch,
    WhatIfStore,
    apply_changes,
    batch_status,
    summarise,
    variant_scenario_id,
)
from mimir.server.deps import RedisDep, SettingsDep
from mimir.server.knowledge import TwinStoreDep
from mimir.server.routes.queue import QueueDep, RunDbDep, unserved_warning
from mimir.server.routes.twins import _enqueue_run, _sync_from_job

__all__ = ["MAX_RUNS", "MAX_SEEDS", "WhatIfRequest", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["digital twins"])

#: Most seeds one what-if runs (each runs the base and the variant).
MAX_SEEDS = 100
#: Most runs (jobs) one what-if queues.
MAX_RUNS = 200
#: Runs queued at once by one what-if.
ENQUEUE_CONCURRENCY = 8
#: Seeds are below this (they travel as JSON integers through every store).
SEED_LIMIT = 2**63


class WhatIfRequest(BaseModel):
    """A base scenario of the twin, the changes that make the variant, and the seeds."""

    model_config = ConfigDict(extra="forbid")

    scenario_id: str = Field(min_length=1)
    #: Twin parameter changes and added events, applied in order.
    changes: list[Change] = Field(min_length=1, max_length=MAX_CHANGES)
    #: How many seeds (1 to 100: from the scenario's seed up, else from a random one), or
    #: the seeds themselves (1 to 100 distinct integers from 0).
    seeds: (
        Annotated[int, Field(ge=1, le=MAX_SEEDS)]
        | Annotated[
            list[Annotated[int, Field(ge=0, lt=SEED_LIMIT)]],
            Field(min_length=1, max_length=MAX_SEEDS, json_schema_extra={"uniqueItems": True}),
        ]
    ) = 10
    priority: Priority = Priority.normal
    queue: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_bounded(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("give a number of seeds or a list of seeds, not a boolean")
        if isinstance(value, int):
            if not 1 <= value <= MAX_SEEDS:
                raise ValueError(f"from 1 to {MAX_SEEDS} seeds, not {value}")
            return value
        if isinstance(value, list):
            if not 1 <= len(value) <= MAX_SEEDS:
                raise ValueError(f"a list of 1 to {MAX_SEEDS} seeds, not {len(value)}")
            for seed in value:
                if isinstance(seed, bool) or not isinstance(seed, int):
                    raise ValueError(f"a seed is an integer, not {seed!r}")
                if not 0 <= seed < SEED_LIMIT:
                    raise ValueError(f"a seed is from 0 to 2**63 - 1, not {seed}")
            if len(set(value)) != len(value):
                raise ValueError("the seeds must be distinct (each pairs a base and a variant run)")
            return value
        raise ValueError("a number of seeds (1 to 100) or a list of seeds")


class MetricStats(BaseModel):
    """A metric's distribution over the seeds (``None`` when no run had a value)."""

    mean: float | None
    p5: float | None
    p95: float | None
    #: Runs (or pairs) with a value.
    n: int


class BottleneckRank(BaseModel):
    """How often an entity was the top bottleneck (longest time as one) per seed."""

    entity: str
    label: str
    base_share: float
    variant_share: float
    #: The variant's mean time as a bottleneck per seed.
    mean_time: float
    base_mean_time: float
    variant_mean_time: float


class RunProblem(BaseModel):
    run_id: str
    side: Literal["base", "variant"]
    seed: int
    error: str | None


class WhatIfAccepted(BaseModel):
    batch_id: str
    twin_id: str
    scenario_id: str
    #: What the variant's runs carry as ``scenario_id`` (not a stored scenario).
    variant_scenario_id: str
    status: Literal["queued"] = "queued"
    #: Runs queued: 2 per seed.
    runs: int
    run_ids: list[str]
    seeds: list[int]
    #: Why the runs may wait for ever, or all seeds answer the same.
    warning: str | None = None


class WhatIfListed(BaseModel):
    batch_id: str
    scenario_id: str
    created_at: str
    status: Literal["queued", "running", "succeeded", "failed"]
    done: int
    total: int
    failed: int
    seeds: list[int]
    changes: list[dict[str, Any]]


class WhatIfAnswer(WhatIfListed):
    """A batch: progress and, once every run ended, the summary (else ``None``)."""

    twin_id: str
    variant_scenario_id: str
    #: Seeds summarised: ``{base, variant, paired}`` (runs that succeeded).
    summarised: dict[str, int] | None = None
    base: dict[str, MetricStats] | None = None
    variant: dict[str, MetricStats] | None = None
    #: Variant minus base of the same seed.
    delta: dict[str, MetricStats] | None = None
    bottlenecks: list[BottleneckRank] | None = None
    runs: list[str]
    base_runs: list[str]
    variant_runs: list[str]
    #: The runs that failed, with their error.
    errors: list[RunProblem] = Field(default_factory=list)
    #: Why fewer runs than asked were queued, if so.
    error: str | None = None


_STORES: dict[str, WhatIfStore] = {}


async def _batches(twins: TwinStore) -> WhatIfStore:
    """The batch store in the twin store's file (its table created on first use)."""
    key = str(twins.path)
    store = _STORES.get(key)
    if store is None:
        store = await asyncio.to_thread(WhatIfStore, twins.path)
        _STORES[key] = store
    return store


def _seeds(body: WhatIfRequest, scenario: Scenario) -> list[int]:
    if isinstance(body.seeds, list):
        return list(body.seeds)
    start = (
        scenario.seed
        if scenario.seed is not None and 0 <= scenario.seed < SEED_LIMIT - body.seeds
        else random.SystemRandom().randrange(2**31)
    )
    return [start + i for i in range(body.seeds)]


def _same_every_seed(twin: Twin, scenario: Scenario) -> bool:
    return scenario.noise == 0 and all(e.mtbf is None for e in twin.entities)


@router.post(
    "/api/v1/twins/{twin_id}/whatif",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WhatIfAccepted,
    response_model_exclude_none=True,
)
async def start_whatif(
    twin_id: str,
    body: WhatIfRequest,
    twins: TwinStoreDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> WhatIfAccepted:
    """Queue the base scenario and its variant for each seed (``digital_twin`` jobs)."""
    twin = await asyncio.to_thread(twins.get_twin, twin_id)
    scenario = await asyncio.to_thread(twins.get_scenario, twin_id, body.scenario_id)
    batch_id = new_id()
    variant_id = variant_scenario_id(scenario.id, batch_id)
    variant_twin, variant = apply_changes(twin, scenario, body.changes, variant_id=variant_id)
    seeds = _seeds(body, scenario)
    if 2 * len(seeds) > MAX_RUNS:  # kept if the bounds ever part
        raise TwinError(f"seeds: at most {MAX_RUNS // 2} seeds ({MAX_RUNS} runs) per batch")
    check_size(twin, scenario)
    check_size(variant_twin, variant)
    # Each job carries its twin and scenario: the batch's payloads together are bounded.
    payload = sum(
        len(t.model_dump_json()) + len(s.model_dump_json())
        for t, s in ((twin, scenario), (variant_twin, variant))
    ) * len(seeds)
    if payload > (most := settings.limits.twin_max_batch_bytes):
        raise TwinError(
            f"seeds: {len(seeds)} seeds of this twin would put {payload / 2**20:.1f} MiB on "
            f"the queue, over MIMIR_TWIN_MAX_BATCH_BYTES ({most / 2**20:.1f} MiB): use fewer "
            "seeds"
        )
    request = {
        "changes": [c.model_dump(mode="json", exclude_none=True) for c in body.changes],
        "seeds": seeds,
        "priority": body.priority.value,
        "queue": body.queue,
        "variant_scenario_id": variant_id,
    }
    options: dict[str, Any] = {"priority": body.priority, "queue": body.queue}
    sides: tuple[tuple[Literal["base", "variant"], Twin, Scenario], ...] = (
        ("base", twin, scenario),
        ("variant", variant_twin, variant),
    )
    # A few at a time (each job carries the twin, and its run is a SQLite write); the
    # first alone, and none after a failure, so that a queue that is down fails it once.
    gate = asyncio.Semaphore(ENQUEUE_CONCURRENCY)
    failures: list[Exception] = []

    async def enqueue(
        seed: int, side: Literal["base", "variant"], t: Twin, s: Scenario
    ) -> BatchRun | None:
        async with gate:
            if failures:
                return None
            try:
                run = await _enqueue_run(twins, settings, redis, t, s, seed, batch_id, **options)
            except Exception as exc:
                failures.append(exc)
                return None
        return BatchRun(id=run.id, side=side, seed=seed)

    planned = [(seed, *side) for seed in seeds for side in sides]
    first = await enqueue(*planned[0])
    if first is None:
        raise failures[0]
    rest = await asyncio.gather(*(enqueue(*args) for args in planned[1:]))
    runs = [first, *(r for r in rest if r is not None)]
    if failures:
        error = f"{len(runs)} of {len(planned)} runs queued: {failures[0]}"
        logger.warning("what-if %s of twin %s: %s", batch_id, twin_id, error)
        await _store_batch(twins, batch_id, twin_id, scenario.id, request, runs, error)
        raise failures[0]
    await _store_batch(twins, batch_id, twin_id, scenario.id, request, runs, None)
    warnings = []
    jobs = JobQueue(redis, settings.key_prefix, settings.job_ttl)
    if (unserved := await unserved_warning(jobs, body.queue)) is not None:
        warnings.append(unserved)
    if _same_every_seed(twin, scenario) and _same_every_seed(variant_twin, variant):
        warnings.append(
            f"scenario {scenario.id!r} has no noise and no entity fails at random: "
            "every seed gives the same result"
        )
    return WhatIfAccepted(
        batch_id=batch_id,
        twin_id=twin_id,
        scenario_id=scenario.id,
        variant_scenario_id=variant_id,
        runs=len(runs),
        run_ids=[r.id for r in runs],
        seeds=seeds,
        warning="; ".join(warnings) or None,
    )


async def _store_batch(
    twins: TwinStore,
    batch_id: str,
    twin_id: str,
    scenario_id: str,
    request: dict[str, Any],
    runs: list[BatchRun],
    error: str | None,
) -> None:
    store = await _batches(twins)
    batch = WhatIfBatch(
        id=batch_id,
        twin_id=twin_id,
        scenario_id=scenario_id,
        request=request,
        runs=runs,
        error=error,
    )
    await asyncio.to_thread(store.add, batch)


async def _refresh(
    store: WhatIfStore, twins: TwinStore, jobs: JobQueue, db: Engine | None, batch: WhatIfBatch
) -> WhatIfBatch:
    """The batch with its unfinished runs brought up to date from their jobs, its status,
    and its summary once every run ended (stored when anything changed)."""
    if batch.status in ENDED:
        return batch
    runs: list[BatchRun] = []
    changed = False
    for entry in batch.runs:
        if entry.status in ENDED:
            runs.append(entry)
            continue
        try:
            run = await asyncio.to_thread(twins.get_run, entry.id, batch.twin_id)
        except TwinNotFoundError:
            runs.append(entry.model_copy(update={"status": "failed", "error": "run deleted"}))
            changed = True
            continue
        if run.status in ("queued", "running") and run.job_id:
            run = await _sync_from_job(twins, jobs, db, run)
        updated = entry.ended_from(run)
        changed = changed or updated.status != entry.status
        runs.append(updated)
    state = batch_status(runs)
    summary = None
    if state in ENDED:
        base = [r.digest for r in runs if r.side == "base" and r.digest is not None]
        variant = [r.digest for r in runs if r.side == "variant" and r.digest is not None]
        if base or variant:  # a side whose every run failed has n 0 and None figures
            summary = summarise(base, variant)
    batch = batch.model_copy(update={"runs": runs, "status": state, "summary": summary})
    if changed:
        await asyncio.to_thread(store.save, batch)
    return batch


def _listed(batch: WhatIfBatch) -> dict[str, Any]:
    return {
        "batch_id": batch.id,
        "scenario_id": batch.scenario_id,
        "created_at": batch.created_at,
        "status": batch.status,
        "done": sum(1 for r in batch.runs if r.status in ENDED),
        "total": len(batch.runs),
        "failed": sum(1 for r in batch.runs if r.status == "failed"),
        "seeds": batch.request.get("seeds", []),
        "changes": batch.request.get("changes", []),
    }


def _answer(batch: WhatIfBatch) -> WhatIfAnswer:
    summary = batch.summary or {}
    return WhatIfAnswer(
        **_listed(batch),
        twin_id=batch.twin_id,
        variant_scenario_id=batch.request.get("variant_scenario_id", ""),
        summarised=summary.get("seeds"),
        base=summary.get("base"),
        variant=summary.get("variant"),
        delta=summary.get("delta"),
        bottlenecks=summary.get("bottlenecks"),
        runs=[r.id for r in batch.runs],
        base_runs=[r.id for r in batch.runs if r.side == "base"],
        variant_runs=[r.id for r in batch.runs if r.side == "variant"],
        errors=[
            RunProblem(run_id=r.id, side=r.side, seed=r.seed, error=r.error)
            for r in batch.runs
            if r.status == "failed"
        ],
        error=batch.error,
    )


@router.get("/api/v1/twins/{twin_id}/whatif")
async def list_whatifs(
    twin_id: str, twins: TwinStoreDep, jobs: QueueDep, db: RunDbDep
) -> dict[str, list[WhatIfListed]]:
    """The twin's what-if batches, oldest first, with their progress."""
    await asyncio.to_thread(twins.get_twin, twin_id)
    store = await _batches(twins)
    batches = await asyncio.to_thread(store.list_batches, twin_id)
    listed = [await _refresh(store, twins, jobs, db, b) for b in batches]
    return {"batches": [WhatIfListed(**_listed(b)) for b in listed]}


@router.get("/api/v1/twins/{twin_id}/whatif/{batch_id}", response_model=WhatIfAnswer)
async def get_whatif(
    twin_id: str, batch_id: str, twins: TwinStoreDep, jobs: QueueDep, db: RunDbDep
) -> WhatIfAnswer:
    """A batch's progress and, once every run ended, its summary."""
    await asyncio.to_thread(twins.get_twin, twin_id)
    store = await _batches(twins)
    batch = await asyncio.to_thread(store.get, twin_id, batch_id)
    return _answer(await _refresh(store, twins, jobs, db, batch))
