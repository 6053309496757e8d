"""Schedules, webhook triggers and the hooks that fire them.

- ``POST /api/v1/schedules`` (201), ``GET /api/v1/schedules``,
  ``GET|PUT|DELETE /api/v1/schedules/{id}``,
  ``POST /api/v1/schedules/{id}/pause|resume|run-now``,
  ``GET /api/v1/schedules/{id}/runs?limit=`` (its history, from the run store),
  ``POST /api/v1/schedules/preview`` (validate a schedule and answer its next fire times,
  saving nothing);
- ``POST /api/v1/triggers`` (201, the answer holds the secret, once),
  ``GET /api/v1/triggers``, ``GET|DELETE /api/v1/triggers/{id}``;
- ``POST /api/v1/hooks/{trigger_id}`` (no API token: the trigger's own secret, as
  ``Authorization: Bearer <secret>`` or ``X-Mimir-Signature: sha256=<HMAC-SHA256 of the
  body>``): enqueues the trigger's pipeline with the JSON body as ``context.payload``;
  202, or 200 with the first job for a delivery id seen in the last 24 h; 401 for a
  missing or wrong secret, 422 for a body that is not JSON, 429 (``Retry-After``) beyond
  the trigger's deliveries per minute.

A schedule's or trigger's pipeline is validated when it is saved, exactly as the enqueue
route validates it (:func:`~mimir.core.pipeline.requests.resolve_pipeline_request`), and
resolved again for every run (a stored pipeline's newest version runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from mimir.core import telemetry
from mimir.core.jobs import pipeline_job
from mimir.core.pipeline.requests import resolve_pipeline_request
from mimir.core.queue import JobQueue, JobStatus
from mimir.core.queue.client import redis_errors
from mimir.core.runstore.models import RunSummary
from mimir.core.runstore.runs import RunStore
from mimir.core.runstore.schedules import (
    REDACTED_SECRET,
    PipelineTarget,
    ScheduleExistsError,
    ScheduleIn,
    ScheduleNotFoundError,
    ScheduleRow,
    ScheduleStore,
    TriggerExistsError,
    TriggerIn,
    TriggerNotFoundError,
    TriggerRow,
    TriggerStore,
    hook_delivery_key,
    hook_rate_key,
    next_fires,
)
from mimir.server.deps import DbDep, RedisDep, RegistryDep, SettingsDep, StoreDep
from mimir.server.errors import error_response

__all__ = ["ScheduleOut", "TriggerCreated", "TriggerOut", "router"]

router = APIRouter(tags=["schedules"])

#: How long a webhook delivery id is remembered (a replay inside it enqueues nothing).
DELIVERY_TTL = 86400
#: Placeholder of a delivery whose job is being enqueued.
_PENDING = "-"


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


class ScheduleOut(BaseModel):
    """A schedule: what was given (``spec``), its state and its runs."""

    id: str
    name: str
    #: ``active``, ``paused`` or ``ended`` (past ``end_at``).
    state: str
    spec: dict[str, Any]
    next_run: str | None
    #: The next five fire times (none while paused or ended).
    next_runs: list[str]
    last_tick: str | None
    last_job_id: str | None
    #: Why the last tick enqueued nothing (e.g. the pipeline was deleted).
    last_error: str | None
    #: The newest run this schedule started, from the run store.
    last_run: RunSummary | None
    created_at: str
    updated_at: str


class SchedulePreview(BaseModel):
    next_runs: list[str]


class TriggerOut(BaseModel):
    """A trigger (never its secret)."""

    id: str
    name: str
    spec: dict[str, Any]
    #: Path to POST deliveries to.
    hook: str
    created_at: str


class TriggerCreated(TriggerOut):
    """A new trigger, with its secret: shown this once."""

    secret: str


class HookAccepted(BaseModel):
    job_id: str
    status: JobStatus | str
    delivery: str
    #: True when the delivery id was seen in the last 24 h (nothing was enqueued).
    replayed: bool = False


def _spec_dict(spec: BaseModel) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude_none=True)


def _schedule_out(row: ScheduleRow, last_run: RunSummary | None) -> ScheduleOut:
    upcoming: list[datetime] = []
    if row.state == "active" and row.next_tick_ms is not None:
        first = datetime.fromtimestamp(row.next_tick_ms / 1000, UTC)
        upcoming = [first, *next_fires(row.spec, first, 4, row.created)]
    return ScheduleOut(
        id=row.id,
        name=row.spec.name,
        state=row.state,
        spec=_spec_dict(row.spec),
        next_run=_iso(row.next_tick_ms) if row.state == "active" else None,
        next_runs=[moment.isoformat().replace("+00:00", "Z") for moment in upcoming],
        last_tick=_iso(row.last_tick_ms),
        last_job_id=row.last_job_id,
        last_error=row.last_error,
        last_run=last_run,
        created_at=_iso(row.created_ms) or "",
        updated_at=_iso(row.updated_ms) or "",
    )


def _answer(db: Any, row: ScheduleRow) -> ScheduleOut:
    last = RunStore(db).last_for_origin(row.id, 1)
    return _schedule_out(row, last[0] if last else None)


def _trigger_out(row: TriggerRow) -> TriggerOut:
    return TriggerOut(
        id=row.id,
        name=row.spec.name,
        spec=_spec_dict(row.spec),
        hook=f"/api/v1/hooks/{row.id}",
        created_at=_iso(row.created_ms) or "",
    )


async def _validate_target(
    target: PipelineTarget, settings: Any, store: Any, registry: Any
) -> None:
    """The pipeline must exist and be valid now (the enqueue route's check)."""
    await asyncio.to_thread(
        resolve_pipeline_request, target, settings, store=store, registry=registry
    )


async def _call(function: Any, *args: Any) -> Any:
    """Run a store call off the event loop; its not-found and exists errors as 404/409."""
    try:
        return await asyncio.to_thread(function, *args)
    except (ScheduleNotFoundError, TriggerNotFoundError) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except (ScheduleExistsError, TriggerExistsError) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


# -- schedules -----------------------------------------------------------------------------


@router.post("/api/v1/schedules", status_code=status.HTTP_201_CREATED, response_model=ScheduleOut)
async def create_schedule(
    body: ScheduleIn, db: DbDep, settings: SettingsDep, store: StoreDep, registry: RegistryDep
) -> ScheduleOut:
    """Save a schedule; it fires from its next tick on."""
    await _validate_target(body, settings, store, registry)
    row = await _call(ScheduleStore(db).create, body)
    return await asyncio.to_thread(_answer, db, row)


@router.post("/api/v1/schedules/preview", response_model=SchedulePreview)
async def preview_schedule(
    body: ScheduleIn, count: Annotated[int, Query(ge=1, le=50)] = 5
) -> SchedulePreview:
    """The next fire times of a schedule (the pipeline is not checked; nothing is saved)."""
    fires = await asyncio.to_thread(next_fires, body, datetime.now(UTC), count)
    return SchedulePreview(next_runs=[f.isoformat().replace("+00:00", "Z") for f in fires])


@router.get("/api/v1/schedules", response_model=list[ScheduleOut])
async def list_schedules(db: DbDep) -> list[ScheduleOut]:
    """Every schedule, by name."""

    def answer() -> list[ScheduleOut]:
        runs = RunStore(db)
        out = []
        for row in ScheduleStore(db).list():
            last = runs.last_for_origin(row.id, 1)
            out.append(_schedule_out(row, last[0] if last else None))
        return out

    return await asyncio.to_thread(answer)


@router.get("/api/v1/schedules/{schedule_id}", response_model=ScheduleOut)
async def get_schedule(schedule_id: str, db: DbDep) -> ScheduleOut:
    row = await _call(ScheduleStore(db).get, schedule_id)
    return await asyncio.to_thread(_answer, db, row)


@router.put("/api/v1/schedules/{schedule_id}", response_model=ScheduleOut)
async def replace_schedule(
    schedule_id: str,
    body: ScheduleIn,
    db: DbDep,
    settings: SettingsDep,
    store: StoreDep,
    registry: RegistryDep,
) -> ScheduleOut:
    """Replace the schedule's definition; its next tick is computed again from now."""
    await _validate_target(body, settings, store, registry)
    row = await _call(ScheduleStore(db).replace, schedule_id, body)
    return await asyncio.to_thread(_answer, db, row)


@router.delete("/api/v1/schedules/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_schedule(schedule_id: str, db: DbDep) -> Response:
    await _call(ScheduleStore(db).delete, schedule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/api/v1/schedules/{schedule_id}/pause", response_model=ScheduleOut)
async def pause_schedule(schedule_id: str, db: DbDep) -> ScheduleOut:
    """No tick fires until it is resumed."""
    row = await _call(ScheduleStore(db).set_paused, schedule_id, True)
    return await asyncio.to_thread(_answer, db, row)


@router.post("/api/v1/schedules/{schedule_id}/resume", response_model=ScheduleOut)
async def resume_schedule(schedule_id: str, db: DbDep) -> ScheduleOut:
    """Fire again, from the next tick after now (the paused time is not caught up)."""
    row = await _call(ScheduleStore(db).set_paused, schedule_id, False)
    return await asyncio.to_thread(_answer, db, row)


class RunNowAccepted(BaseModel):
    job_id: str
    status: JobStatus


@router.post(
    "/api/v1/schedules/{schedule_id}/run-now",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunNowAccepted,
)
async def run_schedule_now(schedule_id: str, request: Request, db: DbDep) -> RunNowAccepted:
    """Enqueue one run now (paused or not), besides the ticks."""
    from mimir.server.runs.scheduler import enqueue_schedule

    store = ScheduleStore(db)
    row = await _call(store.get, schedule_id)
    now_ms = int(time.time() * 1000)
    record = await enqueue_schedule(
        request.app, row, now_ms, key=f"schedule:{row.id}:run-now:{uuid.uuid4().hex}"
    )
    await asyncio.to_thread(store.record_job, row.id, record.job_id, now_ms)
    return RunNowAccepted(job_id=record.job_id, status=record.status)


@router.get("/api/v1/schedules/{schedule_id}/runs", response_model=list[RunSummary])
async def schedule_runs(
    schedule_id: str, db: DbDep, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> list[RunSummary]:
    """The schedule's newest runs (from the run store)."""
    row = await _call(ScheduleStore(db).get, schedule_id)
    runs: list[RunSummary] = await asyncio.to_thread(RunStore(db).last_for_origin, row.id, limit)
    return runs


# -- triggers ------------------------------------------------------------------------------


@router.post("/api/v1/triggers", status_code=status.HTTP_201_CREATED, response_model=TriggerCreated)
async def create_trigger(
    body: TriggerIn, db: DbDep, settings: SettingsDep, store: StoreDep, registry: RegistryDep
) -> TriggerCreated:
    """Save a trigger; the answer holds its secret, which no later answer shows."""
    await _validate_target(body, settings, store, registry)
    row = await _call(TriggerStore(db).create, body)
    return TriggerCreated(**_trigger_out(row).model_dump(), secret=row.secret)


@router.get("/api/v1/triggers", response_model=list[TriggerOut])
async def list_triggers(db: DbDep) -> list[TriggerOut]:
    rows = await _call(TriggerStore(db).list)
    return [_trigger_out(row) for row in rows]


@router.get("/api/v1/triggers/{trigger_id}", response_model=TriggerOut)
async def get_trigger(trigger_id: str, db: DbDep) -> TriggerOut:
    return _trigger_out(await _call(TriggerStore(db).get, trigger_id))


@router.post("/api/v1/triggers/{trigger_id}/secret", response_model=TriggerCreated)
async def rotate_trigger_secret(trigger_id: str, db: DbDep) -> TriggerCreated:
    """A new secret for the trigger, shown in this answer only; the old one stops working
    (and a trigger restored from a backup without secrets starts working)."""
    row = await _call(TriggerStore(db).rotate, trigger_id)
    return TriggerCreated(**_trigger_out(row).model_dump(), secret=row.secret)


@router.delete("/api/v1/triggers/{trigger_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_trigger(trigger_id: str, db: DbDep) -> Response:
    await _call(TriggerStore(db).delete, trigger_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- hooks ---------------------------------------------------------------------------------


def _authorized(request: Request, body: bytes, secret: str) -> bool:
    """Bearer secret, or an HMAC-SHA256 signature of the raw body; constant time. A secret
    left out of a backup authenticates nothing."""
    if secret == REDACTED_SECRET:
        return False
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        return hmac.compare_digest(given.strip().encode(), secret.encode())
    signature = request.headers.get("x-mimir-signature") or request.headers.get(
        "x-hub-signature-256"
    )
    if signature and signature.startswith("sha256="):
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature[len("sha256=") :].strip().lower(), expected)
    return False


@router.post(
    "/api/v1/hooks/{trigger_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=HookAccepted,
    responses={200: {"model": HookAccepted, "description": "a replayed delivery"}},
)
async def hook(
    trigger_id: str,
    request: Request,
    db: DbDep,
    redis: RedisDep,
    settings: SettingsDep,
    store: StoreDep,
    registry: RegistryDep,
) -> Any:
    """Run the trigger's pipeline with the JSON body as ``context.payload``."""
    body = await request.body()
    try:
        trigger: TriggerRow = await asyncio.to_thread(TriggerStore(db).get, trigger_id)
    except TriggerNotFoundError:
        trigger = None  # type: ignore[assignment]
    # An unknown trigger and a wrong secret answer alike (ids are not confirmed).
    if trigger is None or not _authorized(request, body, trigger.secret):
        return error_response(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong trigger secret (Authorization: Bearer <secret>, or "
            "X-Mimir-Signature: sha256=<HMAC-SHA256 of the body>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    prefix = settings.key_prefix
    now = time.time()
    window = int(now // 60)
    rate_key = hook_rate_key(prefix, trigger.id, window)
    async with redis_errors("count the delivery"), redis.pipeline(transaction=True) as pipe:
        pipe.incr(rate_key)
        pipe.expire(rate_key, 120)
        count, _ = await pipe.execute()
    if int(count) > trigger.spec.rate_limit:
        retry_after = max(1, int((window + 1) * 60 - now + 0.999))
        return error_response(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"trigger {trigger.spec.name!r} takes {trigger.spec.rate_limit} deliveries a "
            f"minute; try again in {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )
    try:
        payload = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        return error_response(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            f"the body must be JSON: {exc}",
            [{"field": "body", "message": "not JSON"}],
        )
    delivery = (
        request.headers.get("x-mimir-delivery")
        or request.headers.get("x-github-delivery")
        or uuid.uuid4().hex
    )[:128]  # the job's idempotency key holds it (200 characters at most)
    delivery_key = hook_delivery_key(prefix, trigger.id, delivery)
    async with redis_errors("record the delivery"):
        first = await redis.set(delivery_key, _PENDING, nx=True, ex=DELIVERY_TTL)
        seen = None if first else cast(str | None, await redis.get(delivery_key))
    if seen and seen != _PENDING:
        return JSONResponse(
            HookAccepted(
                job_id=seen, status="replayed", delivery=delivery, replayed=True
            ).model_dump(mode="json"),
            status_code=status.HTTP_200_OK,
        )
    # (``seen`` pending: the first delivery is still being enqueued; the queue's
    # idempotency key makes this call answer the same job.)
    context = {**trigger.spec.context, "payload": payload}
    try:
        pipeline = await asyncio.to_thread(
            resolve_pipeline_request, trigger.spec, settings, store=store, registry=registry
        )
        spec = pipeline_job(
            pipeline,
            context,
            idempotency_key=f"trigger:{trigger.id}:{delivery}",
            origin={"kind": "trigger", "id": trigger.id, "delivery": delivery},
            **trigger.spec.job_options(),
        )
        jobs = JobQueue(redis, prefix, settings.job_ttl)
        # The trigger's span (inside the request's) is where the job's trace starts.
        with telemetry.span(
            f"trigger {trigger.spec.name}",
            attributes=lambda: {"mimir.trigger.id": trigger.id, "mimir.delivery": delivery},
        ):
            record = await jobs.enqueue(spec)
    except BaseException:
        if first:  # not taken: a retry of this delivery may run
            with contextlib.suppress(Exception):
                await redis.delete(delivery_key)
        raise
    async with redis_errors("record the delivery"):
        await redis.set(delivery_key, record.job_id, xx=True, keepttl=True)
    answer = HookAccepted(
        job_id=record.job_id, status=record.status, delivery=delivery, replayed=not first
    )
    return JSONResponse(
        answer.model_dump(mode="json"),
        status_code=status.HTTP_200_OK if not first else status.HTTP_202_ACCEPTED,
    )
