"""Digital twins, their scenarios and runs; runs execute as ``digital_twin`` queue jobs.

- ``GET/POST /api/v1/twins`` (create from ``{name, ontology_id, roles?}``, or with
  ``entities`` and ``relationships`` given), ``GET/DELETE /api/v1/twins/{id}``;
- ``POST /api/v1/twins/{id}/sync`` (``{dry_run?, ontology_id?}``): rebuild from its ontology
  (the newest version of its name unless another is named) and say what changed;
- ``GET/POST /api/v1/twins/{id}/scenarios`` (ids are per twin: a duplicate is ``409``),
  ``GET …/scenarios/{scenario_id}``;
- ``GET/POST /api/v1/twins/{id}/runs`` (``{scenario_id, seed, wait}``: queued as a job, or
  run here and now with ``"wait": true``), ``GET /api/v1/twins/{id}/runs/{run_id}?points=N``
  (series reduced to at most N snapshots), ``…/runs/{run_id}/series`` (full resolution,
  entities paged), ``…/runs/{run_id}/timeline`` (paged, by kind and entity);
- ``GET /api/v1/twins/{id}/compare?runs=a,b``: system and per-entity deltas of two runs;
- ``POST /api/v1/queue/digital-twins/enqueue`` as in the seed: ``{twin_id, operation:
  "simulate", scenario_id?, seed?, priority?, timeout?, max_retries?, queue?}`` → ``202``.

A queued run's record is brought up to date from its job when it is read. A simulation
that fails ends its run ``failed`` with the error: run here, a :class:`TwinError` is a 422
and anything else a 500 (logged); on a worker the job fails without a retry.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine

from mimir.core.queue import JobQueue, JobSpec, Priority, QueueError
from mimir.core.twin import (
    Entity,
    Relationship,
    RunRecord,
    Scenario,
    SimulationResult,
    Twin,
    TwinError,
    TwinStore,
    twin_from_triples,
)
from mimir.core.twin.builder import diff_twins
from mimir.core.twin.jobs import digital_twin_job, simulate_run
from mimir.core.twin.models import COMPARED_METRICS, Role
from mimir.core.twin.simulation import bounded, check_size, resolve_target, result_points
from mimir.core.twin.store import (
    SERIES_METRICS,
    TIMELINE_HEAD,
    InvalidTwinRequestError,
    RunNotSucceededError,
    TwinNotFoundError,
    new_id,
    utc_now,
    window,
)
from mimir.server.deps import RedisDep, SettingsDep
from mimir.server.errors import error_response
from mimir.server.knowledge import OntologyStoreDep, TwinStoreDep
from mimir.server.routes.queue import QueueDep, RunDbDep, job_record, unserved_warning

__all__ = [
    "DEFAULT_POINTS",
    "KINDS_PATTERN",
    "MAX_POINTS",
    "METRICS_PATTERN",
    "RUNS_PATTERN",
    "TIMELINE_KINDS",
    "RunRequest",
    "SyncRequest",
    "TwinCreate",
    "TwinEnqueueRequest",
    "router",
]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["digital twins"])

#: Snapshots per series a run is answered with unless ``points`` says otherwise.
DEFAULT_POINTS = 200
#: Most snapshots per series a run's answer may ask for (``points``).
MAX_POINTS = 10_000
#: Kinds of timeline entries.
TIMELINE_KINDS = (
    "event",
    "event_end",
    "failure",
    "repair",
    "bottleneck",
    "bottleneck_end",
    "starved",
    "starved_end",
    "down",
    "down_end",
    "backlog",
    "backlog_cleared",
)
#: Inline runs under way, referenced until they end (one goes on if its request is cancelled).
_RUNNING: set[asyncio.Task[Any]] = set()


class TwinCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    #: Build the twin from this ontology's individuals (``name@version`` or ``name``).
    ontology_id: str | None = None
    entities: list[Entity] | None = None
    relationships: list[Relationship] = Field(default_factory=list)
    #: Property local name (or IRI) -> its role in the flow (default: by its name).
    roles: dict[str, Role] = Field(default_factory=dict)


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Only say what would change.
    dry_run: bool = False
    #: Rebuild from this ontology (``name@version`` or ``name``) instead of the newest
    #: version of the twin's own.
    ontology_id: str | None = Field(default=None, min_length=1)


class SyncAnswer(BaseModel):
    #: What changed (``entities: {added, removed, changed}``, ``relationships: {added,
    #: removed}``, ``unchanged``).
    diff: dict[str, Any]
    #: Whether the twin was replaced (``false`` for a dry run).
    applied: bool
    #: The twin as rebuilt (stored unless a dry run).
    twin: Twin
    #: Scenarios of the twin whose events target entities it no longer has.
    stale_scenarios: list[dict[str, Any]] = Field(default_factory=list)


class TwinSummary(BaseModel):
    id: str
    name: str
    ontology_id: str | None
    description: str
    entities: int
    relationships: int
    created_at: str
    synced_at: str | None = None


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario_id: str
    seed: int | None = Field(default=None, strict=True)
    #: Run here and answer with the result instead of queueing a job.
    wait: bool = False
    priority: Priority = Priority.normal
    #: With ``wait``: snapshots per series in the answer (as ``GET …/runs/{id}?points=``).
    points: int = Field(default=DEFAULT_POINTS, ge=2, le=MAX_POINTS, strict=True)


class RunListItem(RunRecord):
    """A run without its result, with the figures a list shows (``null`` until it has
    succeeded): ``fill_rate``, ``backlog``, ``delivered``, ``peak_utilisation`` and
    ``bottleneck`` (the label of the top one)."""

    summary: dict[str, Any] | None = None


class TwinEnqueueRequest(BaseModel):
    """The seed's body, plus the scenario and how to queue."""

    twin_id: str
    operation: Literal["simulate"] = "simulate"
    #: Default: the twin's newest scenario, else a quiet baseline of 100 time units.
    scenario_id: str | None = None
    seed: int | None = Field(default=None, strict=True)
    priority: Priority = Priority.normal
    timeout: float | None = Field(default=None, gt=0, strict=True)
    max_retries: int = Field(default=2, ge=0, le=100, strict=True)
    queue: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class SeriesPage(BaseModel):
    #: Snapshot times between ``start`` and ``end``.
    times: list[float]
    #: Entity id -> metric -> a value per time.
    entities: dict[str, dict[str, list[float]]]
    offset: int
    limit: int
    #: Entities selected in all (the page holds ``limit`` of them from ``offset``).
    total: int
    next_offset: int | None


class TimelinePage(BaseModel):
    entries: list[dict[str, Any]]
    #: Entries that match the filters.
    total: int
    offset: int
    limit: int
    next_offset: int | None
    #: Whether the run dropped entries past the most it keeps.
    truncated: bool


class CompareAnswer(BaseModel):
    #: The two runs: ``{id, scenario_id, seed}``.
    runs: list[dict[str, Any]]
    #: Metric -> ``{a, b, delta, delta_pct}`` (``delta`` = b - a; null when undefined).
    system: dict[str, dict[str, float | None]]
    #: Entity id -> ``{label, <metric>: {a, b, delta}}``.
    entities: dict[str, dict[str, Any]]


def _summary(twin: Twin) -> TwinSummary:
    return TwinSummary(
        id=twin.id,
        name=twin.name,
        ontology_id=twin.ontology_id,
        description=twin.description,
        entities=len(twin.entities),
        relationships=len(twin.relationships),
        created_at=twin.created_at,
        synced_at=twin.synced_at,
    )


def _given_twin(body: TwinCreate) -> Twin:
    """The twin of the entities and relationships given, checked, with its warnings."""
    assert body.entities is not None
    seen: set[str] = set()
    for index, entity in enumerate(body.entities):
        if not entity.id:
            raise InvalidTwinRequestError(f"entities.{index}.id", "an entity needs an id")
        if entity.id in seen:
            raise InvalidTwinRequestError(f"entities.{index}.id", f"{entity.id!r} is repeated")
        seen.add(entity.id)
    for index, rel in enumerate(body.relationships):
        for end in ("source", "target"):
            if getattr(rel, end) not in seen:
                raise InvalidTwinRequestError(
                    f"relationships.{index}.{end}", f"no entity {getattr(rel, end)!r}"
                )
    twin = Twin(
        name=body.name,
        description=body.description,
        entities=body.entities,
        relationships=body.relationships,
        roles=body.roles,
    )
    warnings = []
    unbounded = [e.label or e.id for e in twin.entities if e.capacity is None]
    if unbounded:
        shown = ", ".join(unbounded[:5]) + (
            f" and {len(unbounded) - 5} more" if len(unbounded) > 5 else ""
        )
        warnings.append(
            f"{len(unbounded)} entities have no capacity and are modelled as unbounded: {shown}"
        )
    roles = [twin.role_of(r) for r in twin.relationships]
    idle = sorted(
        {r.type for r, role in zip(twin.relationships, roles, strict=True) if role == "none"}
    )
    if idle:
        warnings.append(
            "relationships carry nothing in the flow (declare their role in roles): "
            + ", ".join(idle)
        )
    if twin.relationships and not any(role in ("supplies", "supplied_by") for role in roles):
        warnings.append("no relationship supplies another entity: nothing flows between them")
    return twin.model_copy(update={"warnings": warnings})


# -- twins ----------------------------------------------------------------------------


@router.get("/api/v1/twins")
async def list_twins(twins: TwinStoreDep) -> dict[str, list[TwinSummary]]:
    """Every twin (counts of entities and relationships, not the lists)."""
    return {"twins": [_summary(t) for t in await asyncio.to_thread(twins.list_twins)]}


@router.post("/api/v1/twins", status_code=status.HTTP_201_CREATED, response_model=Twin)
async def create_twin(body: TwinCreate, twins: TwinStoreDep, ontologies: OntologyStoreDep) -> Twin:
    """A twin from an ontology's individuals, or from the entities given. ``roles`` says
    which properties supply, are supplied by or depend on; ``warnings`` what was assumed."""
    if body.ontology_id:
        info = await asyncio.to_thread(ontologies.get, body.ontology_id)
        triples = await asyncio.to_thread(ontologies.triples.graph_triples, info.graph_uri)
        twin = twin_from_triples(
            body.name,
            triples,
            ontology_id=info.id,
            description=body.description,
            roles=body.roles,
        )
        if not twin.entities:
            raise TwinError(f"ontology {info.id!r} has no individuals to build a twin from")
    elif body.entities:
        twin = _given_twin(body)
    else:
        raise TwinError("give ontology_id (build from an ontology) or a list of entities")
    return await asyncio.to_thread(twins.add_twin, twin)


@router.get("/api/v1/twins/{twin_id}", response_model=Twin)
async def get_twin(twin_id: str, twins: TwinStoreDep) -> Twin:
    """A twin with its entities and relationships."""
    return await asyncio.to_thread(twins.get_twin, twin_id)


@router.delete("/api/v1/twins/{twin_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_twin(twin_id: str, twins: TwinStoreDep) -> None:
    """Remove a twin with its scenarios and runs."""
    await asyncio.to_thread(twins.delete_twin, twin_id)


@router.post("/api/v1/twins/{twin_id}/sync", response_model=SyncAnswer)
async def sync_twin(
    twin_id: str,
    twins: TwinStoreDep,
    ontologies: OntologyStoreDep,
    body: Annotated[SyncRequest | None, Body()] = None,
) -> SyncAnswer:
    """Rebuild the twin from its ontology (the newest version of its name, or the
    ``ontology_id`` given) with its roles, and say what changed; ``dry_run`` stores
    nothing. 422 when the twin has no ontology and none is given."""
    body = body or SyncRequest()
    old = await asyncio.to_thread(twins.get_twin, twin_id)
    source = body.ontology_id or (old.ontology_id or "").split("@", 1)[0]
    if not source:
        raise TwinError(
            f"twin {twin_id!r} was not built from an ontology: give ontology_id to sync it"
        )
    info = await asyncio.to_thread(ontologies.get, source)
    triples = await asyncio.to_thread(ontologies.triples.graph_triples, info.graph_uri)
    rebuilt = twin_from_triples(
        old.name, triples, ontology_id=info.id, description=old.description, roles=old.roles
    )
    if not rebuilt.entities:
        raise TwinError(f"ontology {info.id!r} has no individuals to build a twin from")
    new = rebuilt.model_copy(
        update={"id": old.id, "created_at": old.created_at, "synced_at": utc_now()}
    )
    diff = diff_twins(old, new)
    stale = []
    for scenario in await asyncio.to_thread(twins.list_scenarios, twin_id):
        missing = []
        for event in scenario.events:
            try:
                resolve_target(new, event.target)
            except TwinError:
                missing.append(event.target)
        if missing:
            stale.append(
                {"id": scenario.id, "name": scenario.name, "targets": sorted(set(missing))}
            )
    if not body.dry_run:
        await asyncio.to_thread(twins.update_twin, new)
    return SyncAnswer(diff=diff, applied=not body.dry_run, twin=new, stale_scenarios=stale)


# -- scenarios ------------------------------------------------------------------------


@router.get("/api/v1/twins/{twin_id}/scenarios")
async def list_scenarios(twin_id: str, twins: TwinStoreDep) -> dict[str, list[Scenario]]:
    """The twin's scenarios."""
    return {"scenarios": await asyncio.to_thread(twins.list_scenarios, twin_id)}


@router.post(
    "/api/v1/twins/{twin_id}/scenarios",
    status_code=status.HTTP_201_CREATED,
    response_model=Scenario,
)
async def create_scenario(twin_id: str, body: Scenario, twins: TwinStoreDep) -> Scenario:
    """Store a scenario; every event's target must be an entity of the twin.

    Scenario ids are the twin's own: 409 when this twin already has one with that id
    (another twin may use it).
    """
    twin = await asyncio.to_thread(twins.get_twin, twin_id)
    for event in body.events:
        resolve_target(twin, event.target)
    return await asyncio.to_thread(twins.add_scenario, twin_id, body)


@router.get("/api/v1/twins/{twin_id}/scenarios/{scenario_id}", response_model=Scenario)
async def get_scenario(twin_id: str, scenario_id: str, twins: TwinStoreDep) -> Scenario:
    """One scenario."""
    return await asyncio.to_thread(twins.get_scenario, twin_id, scenario_id)


# -- runs -----------------------------------------------------------------------------


async def _enqueue_run(
    twins: TwinStore,
    settings: SettingsDep,
    redis: RedisDep,
    twin: Twin,
    scenario: Scenario,
    seed: int | None,
    batch_id: str | None = None,
    **options: Any,
) -> RunRecord:
    """Queue a ``digital_twin`` job for a new run (of what-if batch ``batch_id``)."""
    check_size(twin, scenario)  # refused here (422), not on a worker
    run = RunRecord(
        id=new_id(), twin_id=twin.id, scenario_id=scenario.id, seed=seed, batch_id=batch_id
    )
    spec = JobSpec(
        type="digital_twin",
        # A what-if's runs keep their metrics only: its summary needs no series.
        payload=digital_twin_job(
            twin, scenario, run.id, seed, keep="metrics" if batch_id else "all"
        ),
        pipeline=f"twin:{twin.name}/{scenario.name}",
        **options,
    )
    record = await JobQueue(redis, settings.key_prefix, settings.job_ttl).enqueue(spec)
    run = run.model_copy(update={"job_id": record.job_id})
    return await asyncio.to_thread(twins.add_run, run)


def _point_cap(entities: int) -> int:
    """Most snapshots per series a run over ``entities`` is answered with."""
    return result_points(MAX_POINTS, entities)


def _entity_count(result: SimulationResult) -> int:
    """Entities of a result (from its metrics when its series are stored apart)."""
    return len(result.utilisation) or int(result.metrics.get("entities", 1) or 1)


def _kept_points(points: int, result: SimulationResult) -> int:
    """Snapshots per series an answer asking for ``points`` keeps (the key of its view)."""
    return result_points(points, _entity_count(result))


def _view(run: RunRecord, result: SimulationResult, points: int) -> RunRecord:
    """``run`` answered with ``result`` reduced to ``points`` snapshots at most (fewer
    for many entities: ``result_points``), its timeline's first entries."""
    cap = _point_cap(_entity_count(result))
    shown = bounded(result, _kept_points(points, result))
    total = int(result.resolution.get("timeline_entries", len(result.timeline)))
    head = result.timeline[:TIMELINE_HEAD]
    resolution = {
        **shown.resolution,
        "max_points": cap,
        "timeline_entries": total,
        "timeline_shown": len(head),
    }
    return run.model_copy(
        update={"result": shown.model_copy(update={"timeline": head, "resolution": resolution})}
    )


async def _simulate_and_record(
    twins: TwinStore, run: RunRecord, twin: Twin, scenario: Scenario, seed: int | None
) -> SimulationResult | BaseException:
    """Simulate and record the outcome whatever happens (the run never stays
    ``running``); answers the result, or the error that ended the run."""
    try:
        result = await asyncio.to_thread(simulate_run, twin, scenario, seed)
    except TwinError as exc:
        await asyncio.to_thread(twins.finish_run, run.id, None, str(exc))
        return exc
    except Exception as exc:
        logger.exception("twin %s: run %s of scenario %s failed", twin.id, run.id, scenario.id)
        await asyncio.to_thread(twins.finish_run, run.id, None, f"{type(exc).__name__}: {exc}")
        return exc
    await asyncio.to_thread(twins.finish_run, run.id, result, None)
    return result


@router.post("/api/v1/twins/{twin_id}/runs", response_model=RunRecord)
async def start_run(
    twin_id: str,
    body: RunRequest,
    twins: TwinStoreDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> Any:
    """Queue a run as a ``digital_twin`` job (202), or run it now with ``wait`` (201,
    series reduced to ``points`` snapshots). A failed simulation fails its run: 422 when
    the scenario does not fit the twin, 500 otherwise."""
    twin = await asyncio.to_thread(twins.get_twin, twin_id)
    scenario = await asyncio.to_thread(twins.get_scenario, twin_id, body.scenario_id)
    if body.wait:
        run = await asyncio.to_thread(
            twins.add_run,
            RunRecord(
                id=new_id(),
                twin_id=twin.id,
                scenario_id=scenario.id,
                status="running",
                seed=body.seed,
            ),
        )
        # Shielded: a request cancelled midway still records the run's outcome.
        task = asyncio.ensure_future(_simulate_and_record(twins, run, twin, scenario, body.seed))
        _RUNNING.add(task)
        task.add_done_callback(_RUNNING.discard)
        outcome = await asyncio.shield(task)
        if isinstance(outcome, TwinError):
            raise TwinError(f"{outcome} (run {run.id} failed)") from outcome
        if isinstance(outcome, BaseException):
            return error_response(
                500,
                f"the simulation failed: {type(outcome).__name__}: {outcome} (run {run.id} failed)",
                {"run_id": run.id},
            )
        done = await asyncio.to_thread(twins.get_run, run.id)
        answer = _view(done, outcome, body.points).model_dump_json()
        kept = _kept_points(body.points, outcome)
        await asyncio.to_thread(twins.put_view, run.id, kept, answer)
        return Response(answer, status_code=201, media_type="application/json")
    run = await _enqueue_run(
        twins, settings, redis, twin, scenario, body.seed, priority=body.priority
    )
    return JSONResponse(run.model_dump(mode="json"), status_code=202)


def _run_summary(run: RunRecord) -> dict[str, Any] | None:
    if run.status != "succeeded" or run.result is None:
        return None
    metrics = run.result.metrics
    top = (metrics.get("bottlenecks") or [None])[0]
    return {
        "fill_rate": metrics.get("fill_rate"),
        "backlog": metrics.get("backlog"),
        "delivered": metrics.get("delivered"),
        "peak_utilisation": metrics.get("peak_utilisation"),
        "bottleneck": top.get("label") if isinstance(top, dict) else None,
    }


@router.get("/api/v1/twins/{twin_id}/runs")
async def list_runs(twin_id: str, twins: TwinStoreDep) -> dict[str, list[RunListItem]]:
    """The twin's runs, without results but with a ``summary`` of each succeeded one."""
    runs = await asyncio.to_thread(twins.list_runs, twin_id, summaries=True)
    return {
        "runs": [
            RunListItem(**run.model_dump(exclude={"result"}), summary=_run_summary(run))
            for run in runs
        ]
    }


async def _current_run(
    twins: TwinStore, jobs: JobQueue, db: Engine | None, twin_id: str, run_id: str
) -> RunRecord:
    run = await asyncio.to_thread(twins.get_run, run_id, twin_id)
    if run.status in ("queued", "running") and run.job_id:
        run = await _sync_from_job(twins, jobs, db, run)
    return run


@router.get("/api/v1/twins/{twin_id}/runs/{run_id}", response_model=RunRecord)
async def get_run(
    twin_id: str,
    run_id: str,
    twins: TwinStoreDep,
    jobs: QueueDep,
    db: RunDbDep,
    points: Annotated[int, Query(ge=2, le=MAX_POINTS)] = DEFAULT_POINTS,
) -> Any:
    """A run with its result (status and result follow its job until it ends). Its
    series are reduced to at most ``points`` snapshots (fewer with many entities: at most
    100,000 values in all), its timeline to the first 100 entries; ``resolution``
    says what was kept. The whole of them: ``…/series`` and ``…/timeline``."""
    run = await _current_run(twins, jobs, db, twin_id, run_id)
    if run.status != "succeeded" or run.result is None:
        return run
    # A succeeded run no longer changes: its answer at a resolution is made once.
    kept = _kept_points(points, run.result)
    body = await asyncio.to_thread(twins.get_view, run.id, kept)
    if body is None:

        def make() -> str:
            full = twins.full_result(run, timeline=False)
            made = _view(run, full, points).model_dump_json()
            twins.put_view(run.id, kept, made)
            return made

        body = await asyncio.to_thread(make)
    return Response(body, media_type="application/json")


def _pick_entities(run: RunRecord, known: list[str], given: str | None) -> list[str]:
    """The entities named in ``given`` (ids, labels or local names; comma-separated), in
    that order; all of them when none are given. An unknown name is a 404."""
    if given is None or not given.strip():
        return known
    labels: dict[str, str] = {}
    per_entity = (run.result.metrics.get("per_entity") if run.result else None) or {}
    for eid in known:
        label = (per_entity.get(eid) or {}).get("label")
        if label:
            labels.setdefault(str(label), eid)
    ids = set(known)
    chosen = []
    for name in (part.strip() for part in given.split(",")):
        if not name:
            continue
        found = name if name in ids else labels.get(name)
        if found is None:
            local = [e for e in known if e.rsplit("#", 1)[-1].rsplit("/", 1)[-1] == name]
            found = local[0] if local else None
        if found is None:
            raise TwinNotFoundError(f"run {run.id!r} has no entity {name!r}")
        if found not in chosen:
            chosen.append(found)
    return chosen


def names_pattern(allowed: tuple[str, ...]) -> str:
    """The pattern of a comma-separated list of ``allowed`` names (no spaces)."""
    one = "(" + "|".join(allowed) + ")"
    return f"^{one}(,{one})*$"


def _names(value: str | None, allowed: tuple[str, ...], field: str) -> list[str]:
    """The names of a comma-separated list of ``allowed`` ones (none given: ``[]``)."""
    if value is None:
        return []
    names = value.split(",")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise InvalidTwinRequestError(
            field, f"unknown {', '.join(map(repr, unknown))} (known: {', '.join(allowed)})"
        )
    return list(dict.fromkeys(names))


#: The documented forms of ``metrics``, ``kind`` and ``runs`` (checked by the handlers).
METRICS_PATTERN = names_pattern(SERIES_METRICS)
KINDS_PATTERN = names_pattern(TIMELINE_KINDS)
RUNS_PATTERN = "^[^,]+,[^,]+$"


@router.get("/api/v1/twins/{twin_id}/runs/{run_id}/series", response_model=SeriesPage)
async def run_series(
    twin_id: str,
    run_id: str,
    twins: TwinStoreDep,
    jobs: QueueDep,
    db: RunDbDep,
    entities: Annotated[
        str | None, Query(description="Entity ids or labels, comma-separated (default: all).")
    ] = None,
    metrics: Annotated[
        str | None,
        Query(
            description="Comma-separated: utilisation, inventory, backlog, throughput "
            "(default: all)."
        ),
    ] = None,
    start: Annotated[float | None, Query(ge=0, le=1e15)] = None,
    end: Annotated[float | None, Query(ge=0, le=1e15)] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SeriesPage:
    """A succeeded run's series at full resolution between ``start`` and ``end``, for a
    page of its entities (``limit`` from ``offset``; ``next_offset`` is the next page's).
    404: an unknown entity; 409: the run has no result (yet); 422: an unknown metric."""
    run = await _current_run(twins, jobs, db, twin_id, run_id)
    wanted = _names(metrics, SERIES_METRICS, "query.metrics") or list(SERIES_METRICS)
    if start is not None and end is not None and start > end:
        raise InvalidTwinRequestError("query.start", f"start {start:g} is after end {end:g}")
    if run.status != "succeeded" or run.result is None:
        raise RunNotSucceededError(f"run {run.id!r} is {run.status}: it has no series")
    known = await asyncio.to_thread(twins.run_entities, run)
    chosen = _pick_entities(run, known, entities)
    page = chosen[offset : offset + limit]
    times, _ = await asyncio.to_thread(twins.run_frame, run)
    i, j = window(times, start, end)
    series = await asyncio.to_thread(twins.run_series, run, page)
    nxt = offset + limit
    return SeriesPage(
        times=times[i:j],
        entities={e: {m: series[e].get(m, [])[i:j] for m in wanted} for e in page if e in series},
        offset=offset,
        limit=limit,
        total=len(chosen),
        next_offset=nxt if nxt < len(chosen) else None,
    )


@router.get("/api/v1/twins/{twin_id}/runs/{run_id}/timeline", response_model=TimelinePage)
async def run_timeline(
    twin_id: str,
    run_id: str,
    twins: TwinStoreDep,
    jobs: QueueDep,
    db: RunDbDep,
    kind: Annotated[
        str | None, Query(description="Entry kinds, comma-separated (default: all).")
    ] = None,
    entity: Annotated[
        str | None, Query(description="Only entries about this entity (id or label).")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> TimelinePage:
    """A succeeded run's timeline in order: events and state changes, paged, only of the
    ``kind`` given and about ``entity`` if given. 404: unknown entity; 409: no result
    (yet); 422: unknown kind."""
    run = await _current_run(twins, jobs, db, twin_id, run_id)
    kinds = _names(kind, TIMELINE_KINDS, "query.kind")
    if run.status != "succeeded" or run.result is None:
        raise RunNotSucceededError(f"run {run.id!r} is {run.status}: it has no timeline")
    chosen = None
    if entity is not None and entity.strip():
        known = await asyncio.to_thread(twins.run_entities, run)
        chosen = _pick_entities(run, known, entity)[0]
    entries, total = await asyncio.to_thread(
        lambda: twins.run_timeline(run, kinds=kinds, entity=chosen, offset=offset, limit=limit)
    )
    nxt = offset + limit
    return TimelinePage(
        entries=entries,
        total=total,
        offset=offset,
        limit=limit,
        next_offset=nxt if nxt < total else None,
        truncated=run.result.timeline_truncated,
    )


def _delta(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return round(float(b) - float(a), 6)
    return None


def _system_value(metrics: dict[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    if isinstance(value, int | float):
        return float(value)
    if name in metrics:  # given as null (a fill rate without demand)
        return None
    per_entity = metrics.get("per_entity") or {}
    values = [s.get(name) for s in per_entity.values()]
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    return round(sum(numbers), 6) if numbers else None


@router.get("/api/v1/twins/{twin_id}/compare", response_model=CompareAnswer)
async def compare_runs(
    twin_id: str,
    twins: TwinStoreDep,
    jobs: QueueDep,
    db: RunDbDep,
    runs: Annotated[str, Query(description="Two run ids of the twin: a,b (delta = b - a).")],
) -> CompareAnswer:
    """System and per-entity deltas (b - a) of two succeeded runs of the twin. 404: an
    unknown run; 409: a run that has not succeeded (named); 422: not two runs."""
    await asyncio.to_thread(twins.get_twin, twin_id)
    ids = runs.split(",")
    if len(ids) != 2 or not all(ids):
        raise InvalidTwinRequestError("query.runs", "give exactly two run ids: runs=a,b")
    if ids[0] == ids[1]:
        raise InvalidTwinRequestError("query.runs", "give two different runs")
    pair = [await _current_run(twins, jobs, db, twin_id, run_id) for run_id in ids]
    for run in pair:
        if run.status != "succeeded" or run.result is None:
            raise RunNotSucceededError(
                f"run {run.id!r} is {run.status}: only succeeded runs can be compared"
            )
    ma, mb = (run.result.metrics for run in pair if run.result is not None)
    system = {}
    for name in COMPARED_METRICS:
        a, b = _system_value(ma, name), _system_value(mb, name)
        delta = _delta(a, b)
        pct = round(delta / a * 100, 6) if delta is not None and a else None
        system[name] = {"a": a, "b": b, "delta": delta, "delta_pct": pct}
    ea, eb = ma.get("per_entity") or {}, mb.get("per_entity") or {}
    entities: dict[str, dict[str, Any]] = {}
    for eid in [*ea, *(e for e in eb if e not in ea)]:
        sa, sb = ea.get(eid) or {}, eb.get(eid) or {}
        row: dict[str, Any] = {"label": sb.get("label") or sa.get("label") or eid}
        for name in COMPARED_METRICS:
            a, b = sa.get(name), sb.get(name)
            row[name] = {"a": a, "b": b, "delta": _delta(a, b)}
        entities[eid] = row
    return CompareAnswer(
        runs=[{"id": r.id, "scenario_id": r.scenario_id, "seed": r.seed} for r in pair],
        system=system,
        entities=entities,
    )


async def _sync_from_job(
    twins: TwinStore, jobs: JobQueue, db: Engine | None, run: RunRecord
) -> RunRecord:
    """Bring a queued run up to date from its job (a finished job's result is stored
    with the run: its series apart)."""
    # A finished job may be in the run store only: the server releases it from Redis.
    try:
        job = await job_record(jobs, db, run.job_id or "")
    except QueueError as exc:
        logger.info("run %s: its job %s cannot be read (%s)", run.id, run.job_id, exc)
        return run
    status_value = job.status.value if hasattr(job.status, "value") else str(job.status)
    if status_value == "succeeded" and isinstance(job.result, dict):
        fields = SimulationResult.model_fields
        try:
            result = SimulationResult.model_validate(
                {k: v for k, v in job.result.items() if k in fields}
            )
        except ValidationError as exc:
            logger.warning(
                "run %s: the result of job %s is unreadable: %s", run.id, job.job_id, exc
            )
            error = f"the result of job {job.job_id} is unreadable"
            return await asyncio.to_thread(twins.finish_run, run.id, None, error) or run
        return await asyncio.to_thread(twins.finish_run, run.id, result, None) or run
    if status_value in ("failed", "dead", "cancelled"):
        error = job.error or f"job {status_value}"
        return await asyncio.to_thread(twins.finish_run, run.id, None, error) or run
    if status_value == "running" and run.status != "running":
        run = run.model_copy(update={"status": "running"})
        await asyncio.to_thread(twins.save_run, run)
    return run


@router.post("/api/v1/queue/digital-twins/enqueue", status_code=status.HTTP_202_ACCEPTED)
async def enqueue_digital_twin(
    body: TwinEnqueueRequest, twins: TwinStoreDep, settings: SettingsDep, redis: RedisDep
) -> dict[str, Any]:
    """The seed's call: simulate a twin (its newest scenario unless one is named)."""
    twin = await asyncio.to_thread(twins.get_twin, body.twin_id)
    if body.scenario_id:
        scenario = await asyncio.to_thread(twins.get_scenario, twin.id, body.scenario_id)
    else:
        scenarios = await asyncio.to_thread(twins.list_scenarios, twin.id)
        scenario = (
            scenarios[-1]
            if scenarios
            else await asyncio.to_thread(
                twins.add_scenario, twin.id, Scenario(name="baseline", description="no events")
            )
        )
    options: dict[str, Any] = {
        "priority": body.priority,
        "max_retries": body.max_retries,
        "queue": body.queue,
    }
    if body.timeout is not None:
        options["timeout"] = body.timeout
    run = await _enqueue_run(twins, settings, redis, twin, scenario, body.seed, **options)
    answer: dict[str, Any] = {
        "message": "Digital twin job enqueued successfully",
        "job_id": run.job_id,
        "status": "queued",
        "run_id": run.id,
        "twin_id": twin.id,
        "scenario_id": scenario.id,
    }
    jobs = JobQueue(redis, settings.key_prefix, settings.job_ttl)
    if (warning := await unserved_warning(jobs, body.queue)) is not None:
        answer["warning"] = warning  # accepted all the same, as a pipeline job is
    return answer
