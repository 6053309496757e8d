"""The run history over HTTP: every job that ended, kept in the run store.

- ``GET /api/v1/runs?pipeline=&status=&queue=&since=&until=&q=&limit=&cursor=`` — newest
  first (by end time), ``next_cursor`` for the next page;
- ``GET /api/v1/runs/export?format=csv|jsonl&...`` — every matching run, streamed;
- ``GET /api/v1/runs/stats?since=&group_by=pipeline|status|hour`` — counts, failure rate,
  p50/p95 duration;
- ``GET /api/v1/runs/status`` — runs stored, and the ingest's lag behind the queue;
- ``GET /api/v1/runs/{id}`` — one run with its steps and artifacts;
- ``GET /api/v1/runs/{id}/logs`` — its log lines; ``?follow=true``: server-sent events,
  a running job's lines as they come (from its live log stream in Redis), then ``end``;
- ``GET /api/v1/runs/{id}/artifacts``, ``GET /api/v1/runs/{id}/artifacts/{name}`` — the
  files it wrote, the latter served from the data directory.

``since`` and ``until`` take an ISO 8601 time (UTC unless it says otherwise) or an age
such as ``90m``, ``24h`` or ``7d`` (that long ago).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import mimetypes
import re
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import Engine

from mimir.core.durations import parse_duration
from mimir.core.queue import FINAL_STATUSES, JobStatus
from mimir.core.queue.keys import QueueKeys
from mimir.core.runstore.models import (
    ArtifactRecord,
    LogLine,
    RunFilter,
    RunRecord,
    RunSummary,
    StatsRow,
)
from mimir.core.runstore.runs import RunStore
from mimir.server.deps import DbDep, RedisDep, SettingsDep

__all__ = ["parse_time", "router"]


router = APIRouter(prefix="/api/v1/runs", tags=["runs"])

T = TypeVar("T")

#: Largest page of ``GET /api/v1/runs``.
MAX_LIMIT = 1000
#: Runs written per chunk of an export (one write each).
EXPORT_CHUNK = 200
#: Longest blocking read of a followed job's live log stream (ms).
FOLLOW_BLOCK_MS = 1000
#: Seconds between checks that a followed job's client is still there / job still runs.
FOLLOW_CHECK = 1.0
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*d\s*$")
_GO_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
_FINAL = frozenset(str(status) for status in FINAL_STATUSES)


class GroupBy(StrEnum):
    pipeline = "pipeline"
    status = "status"
    hour = "hour"


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


class RunPage(BaseModel):
    """One page of runs, newest first; ``next_cursor`` fetches the next (``null``: last)."""

    runs: list[RunSummary]
    next_cursor: str | None = None


class RunLogs(BaseModel):
    """A run's log lines (a running job's: those written so far)."""

    job_id: str
    lines: list[LogLine]
    truncated: bool = False
    #: Whether the job still runs (the lines come from its live log stream).
    running: bool = False


class RunArtifacts(BaseModel):
    job_id: str
    artifacts: list[ArtifactRecord]


class RunStats(BaseModel):
    since: datetime | None
    group_by: GroupBy
    rows: list[StatsRow]


class IngestFigures(BaseModel):
    """How the server's consumption of finished jobs is going."""

    enabled: bool
    consumer: str | None = None
    #: Outcomes on the Redis stream not yet stored (new and delivered-but-unacknowledged).
    stream_length: int | None = None
    pending: int | None = None
    stored: int = 0
    released: int = 0
    pruned: int = 0
    last_batch_at: datetime | None = None
    last_error: str | None = None


class RunStoreStatus(BaseModel):
    runs: int
    retention_days: float
    max_count: int
    ingest: IngestFigures


# -- input ----------------------------------------------------------------------------


def invalid(field: str, message: str) -> RequestValidationError:
    """A 422 in the API's shape naming ``field`` (``query.since``)."""
    return RequestValidationError(
        [{"loc": tuple(field.split(".")), "msg": message, "type": "value_error"}]
    )


def parse_time(value: str | None, field: str, now: datetime | None = None) -> datetime | None:
    """``value`` as an aware UTC time: ISO 8601 or an age (``24h``, ``7d``) before now."""
    if value is None or value == "":
        return None
    now = now or datetime.now(UTC)
    text = value.strip()
    days = _AGE.match(text)
    try:
        if days:
            return now - timedelta(days=float(days.group(1)))
        if _GO_DURATION.match(text):
            return now - timedelta(seconds=parse_duration(text))
    except (ValueError, OverflowError) as exc:
        raise invalid(field, f"not a time or an age: {exc}") from None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise invalid(
            field, f"{value!r} is not an ISO 8601 time (2026-01-31T12:00:00Z) or an age (24h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def make_filter(
    pipeline: str | None,
    status: JobStatus | None,
    queue: str | None,
    since: str | None,
    until: str | None,
    q: str | None,
) -> RunFilter:
    return RunFilter(
        pipeline=pipeline or None,
        status=str(status) if status is not None else None,
        queue=queue or None,
        since=parse_time(since, "query.since"),
        until=parse_time(until, "query.until"),
        q=q or None,
    )


async def in_db(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` in a thread (an unreachable database: the 503 of server/errors.py)."""
    return await asyncio.to_thread(call, *args)


def store_of(engine: Engine) -> RunStore:
    return RunStore(engine)


# Query parameters shared by list and export.
PipelineQ = Annotated[str | None, Query(max_length=200, description="Pipeline name.")]
StatusQ = Annotated[JobStatus | None, Query(description="Final status.")]
QueueQ = Annotated[str | None, Query(max_length=64, description="Worker pool.")]
SinceQ = Annotated[
    str | None,
    Query(
        max_length=64,
        description="Runs that ended at or after this: ISO 8601 or an age (`24h`, `7d`).",
    ),
]
UntilQ = Annotated[
    str | None,
    Query(max_length=64, description="Runs that ended before this: ISO 8601 or an age."),
]
TextQ = Annotated[
    str | None, Query(max_length=200, description="Text in the error or the pipeline name.")
]


# -- routes ---------------------------------------------------------------------------


@router.get("", response_model=RunPage)
async def list_runs(
    db: DbDep,
    pipeline: PipelineQ = None,
    status: StatusQ = None,
    queue: QueueQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
    q: TextQ = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
) -> RunPage:
    """Runs newest first (by end time), filtered; keyset pages through ``cursor``."""
    runs_filter = make_filter(pipeline, status, queue, since, until, q)
    store = store_of(db)
    try:
        runs, next_cursor = await in_db(store.list, runs_filter, limit, cursor or None)
    except ValueError as exc:
        raise invalid("query.cursor", f"not a cursor this server gave out ({exc})") from None
    return RunPage(runs=runs, next_cursor=next_cursor)


def _csv_chunks(rows: Iterator[RunSummary]) -> Iterator[str]:
    columns = list(RunSummary.model_fields)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for count, row in enumerate(rows, 1):
        data = row.model_dump(mode="json")
        writer.writerow(["" if data[c] is None else data[c] for c in columns])
        if count % EXPORT_CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _jsonl_chunks(rows: Iterator[RunSummary]) -> Iterator[str]:
    lines: list[str] = []
    for row in rows:
        lines.append(row.model_dump_json())
        if len(lines) >= EXPORT_CHUNK:
            yield "\n".join(lines) + "\n"
            lines = []
    if lines:
        yield "\n".join(lines) + "\n"


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Every matching run, newest first: CSV with a header row, or "
            "one JSON object per line.",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
async def export_runs(
    db: DbDep,
    format: Annotated[ExportFormat, Query(description="`csv` or `jsonl`.")] = ExportFormat.csv,
    pipeline: PipelineQ = None,
    status: StatusQ = None,
    queue: QueueQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
    q: TextQ = None,
) -> StreamingResponse:
    """Every matching run, streamed (read from the database in batches: constant memory)."""
    runs_filter = make_filter(pipeline, status, queue, since, until, q)
    store = store_of(db)
    rows = await in_db(store.export, runs_filter)  # a generator: the first query runs later
    if format is ExportFormat.csv:
        body, media, suffix = _csv_chunks(rows), "text/csv", "csv"
    else:
        body, media, suffix = _jsonl_chunks(rows), "application/x-ndjson", "jsonl"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="runs-{stamp}.{suffix}"'},
    )


@router.get("/stats", response_model=RunStats)
async def run_stats(
    db: DbDep,
    since: Annotated[
        str | None,
        Query(max_length=64, description="From this time or age on (default `24h`)."),
    ] = None,
    group_by: Annotated[GroupBy, Query(description="`pipeline`, `status` or `hour`.")] = (
        GroupBy.pipeline
    ),
) -> RunStats:
    """Runs per pipeline, status or hour: counts, failure rate, p50/p95 duration."""
    moment = parse_time(since or "24h", "query.since")
    rows = await in_db(store_of(db).stats, moment, str(group_by))
    return RunStats(since=moment, group_by=group_by, rows=rows)


@router.get("/status", response_model=RunStoreStatus)
async def run_store_status(request: Request, db: DbDep, settings: SettingsDep) -> RunStoreStatus:
    """Runs stored, retention, and how far the ingest lags behind the queue."""
    count = await in_db(store_of(db).count)
    ingest = getattr(request.app.state, "ingest", None)
    figures = IngestFigures(enabled=ingest is not None)
    if ingest is not None:
        status = ingest.status
        figures = IngestFigures(
            enabled=True,
            consumer=status.consumer,
            stored=status.stored,
            released=status.released,
            pruned=status.pruned,
            last_batch_at=status.last_batch_at,
            last_error=status.last_error,
        )
        try:
            lag = await ingest.lag()
            figures.stream_length, figures.pending = lag["stream_length"], lag["pending"]
        except (RedisError, OSError):
            pass
    return RunStoreStatus(
        runs=count,
        retention_days=settings.run_retention_days,
        max_count=settings.run_max_count,
        ingest=figures,
    )


async def _run_or_404(db: Engine, job_id: str) -> RunRecord:
    run = await in_db(store_of(db).get, job_id)
    if run is None:
        raise HTTPException(404, f"no run {job_id!r} in the run store")
    return cast(RunRecord, run)


@router.get("/{job_id}", response_model=RunRecord)
async def get_run(job_id: str, db: DbDep) -> RunRecord:
    """One run: its record, steps and artifacts."""
    return await _run_or_404(db, job_id)


def _sse(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


def _line_from_entry(fields: dict[str, str]) -> dict[str, Any]:
    return {
        "t": fields.get("t"),
        "level": fields.get("level", "INFO"),
        "step": fields.get("step") or None,
        "msg": fields.get("msg", ""),
    }


async def _live_lines(redis: Any, key: str, after: str = "-") -> tuple[list[dict[str, Any]], str]:
    entries = await redis.xrange(key, min=after if after == "-" else f"({after}", count=10_000)
    lines = [_line_from_entry(fields) for _, fields in entries]
    return lines, (entries[-1][0] if entries else after)


async def _follow(
    request: Request, db: Engine, redis: Any, keys: QueueKeys, job_id: str
) -> AsyncIterator[str]:
    """A running job's lines as they come, then the rest from the store, then ``end``."""
    yield "retry: 2000\n\n"
    key = keys.log(job_id)
    last = "0-0"
    sent = 0
    status: str | None = None
    while True:
        try:
            answer = await redis.xread({key: last}, count=500, block=FOLLOW_BLOCK_MS)
        except (RedisError, OSError) as exc:
            yield _sse("error", {"error": f"Redis unavailable: {exc}"})
            await asyncio.sleep(FOLLOW_CHECK)
            answer = []
        chunks = []
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                last = entry_id
                chunks.append(_sse("line", _line_from_entry(fields)))
        if chunks:
            sent += len(chunks)
            yield "".join(chunks)
            continue
        if await request.is_disconnected():
            return
        try:
            status = await redis.hget(keys.job(job_id), "status")
        except (RedisError, OSError):
            continue
        if status is None or status in _FINAL:
            break
    # The job ended (or its record was released once its run was stored): what the
    # stream still holds, else what the store has beyond the lines already sent.
    try:
        rest, last = await _live_lines(redis, key, last if last != "0-0" else "-")
    except (RedisError, OSError):
        rest = []
    for line in rest:
        sent += 1
        yield _sse("line", line)
    run = None
    for _ in range(50):  # the ingest stores a run within moments of its end
        run = await in_db(store_of(db).get, job_id)
        if run is not None or status is not None:
            break
        await asyncio.sleep(0.1)
    if run is not None:
        stored = await in_db(store_of(db).logs, job_id) or []
        for kept in stored[sent:]:
            yield _sse("line", kept.model_dump(mode="json"))
        status = str(run.status)
    yield _sse("end", {"job_id": job_id, "status": status})


@router.get(
    "/{job_id}/logs",
    response_model=RunLogs,
    responses={
        200: {
            "description": "The lines (JSON), or with `follow=true` server-sent events: "
            "`line` (one log line), then `end` (`{job_id, status}`) once the job has ended.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def run_logs(
    job_id: str,
    request: Request,
    db: DbDep,
    redis: RedisDep,
    settings: SettingsDep,
    follow: Annotated[
        bool, Query(description="Stream lines as server-sent events until the job ends.")
    ] = False,
) -> Any:
    """The run's log lines; a running job's so far (``follow``: as they come)."""
    keys = QueueKeys(settings.key_prefix)
    store = store_of(db)
    run = await in_db(store.get, job_id)
    if run is not None:
        lines = await in_db(store.logs, job_id) or []
        if follow:

            async def stored() -> AsyncIterator[str]:
                yield "".join(_sse("line", line.model_dump(mode="json")) for line in lines)
                yield _sse("end", {"job_id": job_id, "status": str(run.status)})

            return StreamingResponse(stored(), media_type="text/event-stream")
        return RunLogs(job_id=job_id, lines=lines, truncated=bool(run.logs_truncated))
    try:
        status = await redis.hget(keys.job(job_id), "status")
    except (RedisError, OSError) as exc:
        raise HTTPException(503, f"cannot read the job: Redis is unavailable ({exc})") from None
    if status is None:
        raise HTTPException(404, f"no run or job {job_id!r}")
    if follow:
        return StreamingResponse(
            _follow(request, db, redis, keys, job_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        live, _ = await _live_lines(redis, keys.log(job_id))
    except (RedisError, OSError) as exc:
        raise HTTPException(503, f"cannot read the job: Redis is unavailable ({exc})") from None
    lines = []
    for line in live:
        try:
            lines.append(LogLine.model_validate(line))
        except ValueError:  # a line without a valid time: stamped now rather than lost
            lines.append(LogLine.model_validate({**line, "t": datetime.now(UTC)}))
    return RunLogs(job_id=job_id, lines=lines, running=status not in _FINAL)


@router.get("/{job_id}/artifacts", response_model=RunArtifacts)
async def run_artifacts(job_id: str, db: DbDep) -> RunArtifacts:
    """The files the run wrote (paths relative to the data directory)."""
    run = await _run_or_404(db, job_id)
    return RunArtifacts(job_id=job_id, artifacts=list(run.artifacts))


def artifact_path(data_dir: Path, name: str) -> Path | None:
    """``name`` under ``data_dir``, or ``None`` when it would lead outside (``..``, an
    absolute path, a symlink out of it)."""
    if not name or "\x00" in name or Path(name).is_absolute():
        return None
    root = data_dir.expanduser().resolve()
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        return None
    return path


@router.get(
    "/{job_id}/artifacts/{name:path}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file, as stored in the data directory.",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def download_artifact(
    job_id: str, name: str, db: DbDep, settings: SettingsDep
) -> FileResponse:
    """One artifact's file (404 if the run has no such artifact or the file is gone)."""
    run = await _run_or_404(db, job_id)
    artifact = next((a for a in run.artifacts if a.name == name), None)
    if artifact is None:
        raise HTTPException(404, f"run {job_id!r} has no artifact {name!r}")
    path = artifact_path(settings.data_dir, name)
    if path is None:
        raise HTTPException(404, f"artifact {name!r} is outside the data directory")
    if not await asyncio.to_thread(path.is_file):
        raise HTTPException(404, f"artifact {name!r} is no longer in the data directory")
    media = (
        artifact.content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    return FileResponse(path, media_type=media, filename=path.name)
