"""Digital twins, their scenarios and runs; runs execute as ``digital_twin`` queue jobs.

- ``GET/POST /api/v1/twins`` (create from ``{name, ontology_id}``, or with ``entities`` and
  ``relationships`` given), ``GET/DELETE /api/v1/twins/{id}``;
- ``GET/POST /api/v1/twins/{id}/scenarios`` (ids are per twin: a duplicate is ``409``),
  ``GET …/scenarios/{scenario_id}``;
- ``GET/POST /api/v1/twins/{id}/runs`` (``{scenario_id, seed, wait}``: queued as a job, or
  run here and now with ``"wait": true``), ``GET /api/v1/twins/{id}/runs/{run_id}``;
- ``POST /api/v1/queue/digital-twins/enqueue`` as in the seed: ``{twin_id, operation:
  "simulate", scenario_id?, seed?, priority?, timeout?, max_retries?, queue?}`` → ``202``.

A queued run's record is brought up to date from its job when it is read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field
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
    simulate,
    twin_from_triples,
)
from mimir.core.twin.jobs import digital_twin_job
from mimir.core.twin.store import new_id
from mimir.server.deps import RedisDep, SettingsDep
from mimir.server.knowledge import OntologyStoreDep, TwinStoreDep
from mimir.server.routes.queue import QueueDep, RunDbDep, job_record, unserved_warning

__all__ = ["RunRequest", "TwinCreate", "TwinEnqueueRequest", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["digital twins"])


class TwinCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    #: Build the twin from this ontology's individuals (``name@version`` or ``name``).
    ontology_id: str | None = None
    entities: list[Entity] | None = None
    relationships: list[Relationship] = Field(default_factory=list)


class TwinSummary(BaseModel):
    id: str
    name: str
    ontology_id: str | None
    description: str
    entities: int
    relationships: int
    created_at: str


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario_id: str
    seed: int | None = Field(default=None, strict=True)
    #: Run here and answer with the result instead of queueing a job.
    wait: bool = False
    priority: Priority = Priority.normal


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


def _summary(twin: Twin) -> TwinSummary:
    return TwinSummary(
        id=twin.id,
        name=twin.name,
        ontology_id=twin.ontology_id,
        description=twin.description,
        entities=len(twin.entities),
        relationships=len(twin.relationships),
        created_at=twin.created_at,
    )


# -- twins ----------------------------------------------------------------------------


@router.get("/api/v1/twins")
async def list_twins(twins: TwinStoreDep) -> dict[str, list[TwinSummary]]:
    """Every twin (counts of entities and relationships, not the lists)."""
    return {"twins": [_summary(t) for t in await asyncio.to_thread(twins.list_twins)]}


@router.post("/api/v1/twins", status_code=status.HTTP_201_CREATED, response_model=Twin)
async def create_twin(body: TwinCreate, twins: TwinStoreDep, ontologies: OntologyStoreDep) -> Twin:
    """A twin from an ontology's individuals, or from the entities given."""
    if body.ontology_id:
        info = await asyncio.to_thread(ontologies.get, body.ontology_id)
        triples = await asyncio.to_thread(ontologies.triples.graph_triples, info.graph_uri)
        twin = twin_from_triples(
            body.name, triples, ontology_id=info.id, description=body.description
        )
        if not twin.entities:
            raise TwinError(f"ontology {info.id!r} has no individuals to build a twin from")
    elif body.entities:
        twin = Twin(
            name=body.name,
            description=body.description,
            entities=body.entities,
            relationships=body.relationships,
        )
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
    from mimir.core.twin.simulation import resolve_target

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
    **options: Any,
) -> RunRecord:
    run = RunRecord(id=new_id(), twin_id=twin.id, scenario_id=scenario.id, seed=seed)
    spec = JobSpec(
        type="digital_twin",
        payload=digital_twin_job(twin, scenario, run.id, seed),
        pipeline=f"twin:{twin.name}/{scenario.name}",
        **options,
    )
    record = await JobQueue(redis, settings.key_prefix, settings.job_ttl).enqueue(spec)
    run = run.model_copy(update={"job_id": record.job_id})
    return await asyncio.to_thread(twins.add_run, run)


@router.post("/api/v1/twins/{twin_id}/runs", response_model=RunRecord)
async def start_run(
    twin_id: str,
    body: RunRequest,
    twins: TwinStoreDep,
    settings: SettingsDep,
    redis: RedisDep,
) -> Any:
    """Queue a run as a ``digital_twin`` job (202), or run it now with ``wait`` (201)."""
    from fastapi.responses import JSONResponse

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
        try:
            result = await asyncio.to_thread(simulate, twin, scenario, body.seed)
        except TwinError as exc:
            await asyncio.to_thread(twins.finish_run, run.id, None, str(exc))
            raise
        done = await asyncio.to_thread(twins.finish_run, run.id, result, None)
        return JSONResponse(done.model_dump(mode="json") if done else {}, status_code=201)
    run = await _enqueue_run(
        twins, settings, redis, twin, scenario, body.seed, priority=body.priority
    )
    return JSONResponse(run.model_dump(mode="json"), status_code=202)


@router.get("/api/v1/twins/{twin_id}/runs")
async def list_runs(twin_id: str, twins: TwinStoreDep) -> dict[str, list[RunRecord]]:
    """The twin's runs, without results."""
    return {"runs": await asyncio.to_thread(twins.list_runs, twin_id)}


@router.get("/api/v1/twins/{twin_id}/runs/{run_id}", response_model=RunRecord)
async def get_run(
    twin_id: str, run_id: str, twins: TwinStoreDep, jobs: QueueDep, db: RunDbDep
) -> RunRecord:
    """A run with its result (status and result follow its job until it ends)."""
    run = await asyncio.to_thread(twins.get_run, run_id, twin_id)
    if run.status in ("queued", "running") and run.job_id:
        run = await _sync_from_job(twins, jobs, db, run)
    return run


async def _sync_from_job(
    twins: TwinStore, jobs: JobQueue, db: Engine | None, run: RunRecord
) -> RunRecord:
    # A finished job may be in the run store only: the server releases it from Redis.
    try:
        job = await job_record(jobs, db, run.job_id or "")
    except QueueError as exc:
        logger.info("run %s: its job %s cannot be read (%s)", run.id, run.job_id, exc)
        return run
    status_value = job.status.value if hasattr(job.status, "value") else str(job.status)
    if status_value == "succeeded" and isinstance(job.result, dict):
        fields = SimulationResult.model_fields
        result = SimulationResult.model_validate(
            {k: v for k, v in job.result.items() if k in fields}
        )
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
