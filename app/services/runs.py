"""The console's calls for run history, schedules and alerts, and the texts its views show.

:class:`RunsClient` wraps the one :class:`~mimir.app.services.api.ApiClient` of a console
window (same connection, same token, same errors) with the ``/api/v1/runs``,
``/api/v1/schedules`` and ``/api/v1/alerts`` calls. Answers are the server's JSON as
dicts. No Qt here: the History, Schedules and Alerts views sit on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from mimir.app.services.api import POLL_HEADERS, ApiClient, ApiError, ApiUnreachable
from mimir.app.services.events import ServerEvent, iter_events
from mimir.app.services.jobs import parse_time

__all__ = [
    "ALERT_KINDS",
    "FINAL_STATUSES",
    "RunQuery",
    "RunsClient",
    "channels_text",
    "cooldown_text",
    "format_bytes",
    "format_duration_ms",
    "format_fire",
    "format_local",
    "format_relative",
    "log_line_text",
    "notified_text",
    "origin_text",
    "rerun_body",
    "rule_condition",
]

logger = logging.getLogger(__name__)

#: Longest silence of a followed job's log stream before it is opened again (s).
FOLLOW_READ_TIMEOUT = 300.0

FINAL_STATUSES = ("succeeded", "failed", "cancelled", "dead")

#: Alert rule kinds the server knows, with the words the rule dialog shows.
ALERT_KINDS: dict[str, str] = {
    "run_failed": "A run failed or went to the dead letter",
    "failure_rate": "Failure rate over a window above a threshold",
    "backlog": "Queue backlog above N, or oldest queued job older than T",
    "worker_lost": "A worker lost while it held jobs",
    "schedule_missed": "A schedule missed a run",
}


# ---------------------------------------------------------------------------- texts


def format_duration_ms(value: Any) -> str:
    """``842 ms``, ``3.4 s``, ``2 min 05 s``, ``1 h 02 min``; "" when unknown."""
    if value is None or value == "":
        return ""
    try:
        ms = float(value)
    except (TypeError, ValueError):
        return ""
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, second = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {second:02d} s"
    hours, minute = divmod(minutes, 60)
    return f"{hours} h {minute:02d} min"


def format_local(value: Any, *, seconds: bool = True, zone: bool = False) -> str:
    """An ISO time in the console's local time zone, ``2026-11-30 21:04:05`` (``zone``:
    with the zone's abbreviation, ``2026-11-30 21:04:05 CET``)."""
    moment = parse_time(value)
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    pattern = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return moment.astimezone().strftime(pattern + (" %Z" if zone else ""))


def format_fire(value: Any, zone: str | None = None) -> str:
    """A fire time in the schedule's zone (``2026-12-01 02:30:00 CET``), and in the
    console's when that differs (``· 01:30:00 UTC here``)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    moment = parse_time(value)
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone()
    try:
        there = moment.astimezone(ZoneInfo(zone)) if zone else local
    except (ZoneInfoNotFoundError, ValueError):
        there = local
    text = there.strftime("%Y-%m-%d %H:%M:%S %Z")
    if there.utcoffset() != local.utcoffset():
        text += local.strftime(" · %H:%M:%S %Z here")
    return text


def format_relative(value: Any, now: datetime | None = None) -> str:
    """``in 4 min``, ``12 s ago``, ``3 h ago``, ``2 d ago``; "" when unknown."""
    moment = parse_time(value)
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = (moment - (now or datetime.now(UTC))).total_seconds()
    size = abs(delta)
    if size < 60:
        text = f"{size:.0f} s"
    elif size < 3600:
        text = f"{size / 60:.0f} min"
    elif size < 86400 * 2:
        text = f"{size / 3600:.1f} h".replace(".0 h", " h")
    else:
        text = f"{size / 86400:.0f} d"
    return f"in {text}" if delta > 0 else f"{text} ago"


def format_bytes(size: Any) -> str:
    try:
        value = float(size)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


def origin_text(run: dict[str, Any], names: dict[str, str] | None = None) -> str:
    """Who started a run: ``schedule nightly`` (``names``: schedule and trigger ids →
    names), ``trigger …``, or ``api``."""
    kind = run.get("origin_kind") or (run.get("origin") or {}).get("kind")
    ident = run.get("origin_id") or (run.get("origin") or {}).get("id")
    if not kind:
        return "api"
    if not ident:
        return str(kind)
    return f"{kind} {(names or {}).get(str(ident)) or str(ident)[:12]}"


def log_line_text(line: dict[str, Any]) -> str:
    """One log line as the Logs tab shows it: ``21:04:05.123 INFO  [step] message``."""
    moment = parse_time(line.get("t"))
    when = moment.astimezone().strftime("%H:%M:%S.%f")[:-3] if moment else " " * 12
    level = str(line.get("level") or "INFO")
    step = f"[{line['step']}] " if line.get("step") else ""
    return f"{when} {level:<7} {step}{line.get('msg', '')}"


def rerun_body(run: dict[str, Any]) -> dict[str, Any]:
    """The enqueue call that runs ``run`` again: its own pipeline definition and context,
    its queue, priority, timeout and retries (a new job: no idempotency key, no origin)."""
    definition = run.get("definition")
    if not definition:
        raise ApiError(f"run {run.get('job_id')} has no stored pipeline definition", 400)
    body: dict[str, Any] = {"pipeline": definition, "context": run.get("context") or {}}
    for key in ("priority", "queue", "timeout", "max_retries"):
        if run.get(key) not in (None, ""):
            body[key] = run[key]
    return body


# ---------------------------------------------------------------------------- queries


@dataclass
class RunQuery:
    """The History view's filters, as the ``GET /api/v1/runs`` parameters."""

    q: str = ""
    pipeline: str = ""
    status: str = ""
    queue: str = ""
    since: datetime | None = None
    until: datetime | None = None
    origin_id: str = ""

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key in ("q", "pipeline", "status", "queue", "origin_id"):
            value = str(getattr(self, key) or "").strip()
            if value:
                params[key] = value
        for key in ("since", "until"):
            moment = getattr(self, key)
            if moment is not None:
                if moment.tzinfo is None:
                    moment = moment.astimezone()
                params[key] = moment.astimezone(UTC).isoformat()
        return params


def _items(answer: Any, *keys: str) -> list[dict[str, Any]]:
    if isinstance(answer, list):
        return answer
    if isinstance(answer, dict):
        for key in keys:
            if isinstance(answer.get(key), list):
                return list(answer[key])
    return []


class RunsClient:
    """Run history, schedules and alerts through one console's API client."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    # ---------------------------------------------------------------- runs

    async def list_runs(
        self, query: RunQuery, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page, newest first, and the cursor of the next page (None at the end)."""
        params = {**query.params(), "limit": limit}
        if cursor:
            params["cursor"] = cursor
        answer = await self.api.request("GET", "/api/v1/runs", params=params)
        runs = _items(answer, "runs", "items")
        next_cursor = answer.get("next_cursor") if isinstance(answer, dict) else None
        return runs, (str(next_cursor) if next_cursor else None)

    async def get_run(self, job_id: str) -> dict[str, Any]:
        return await self.api.request("GET", f"/api/v1/runs/{quote(job_id, safe='')}")

    async def run_logs(self, job_id: str) -> tuple[list[dict[str, Any]], bool]:
        """A stored run's log lines and whether they were cut."""
        answer = await self.api.request("GET", f"/api/v1/runs/{quote(job_id, safe='')}/logs")
        truncated = bool(answer.get("truncated")) if isinstance(answer, dict) else False
        return _items(answer, "lines", "logs"), truncated

    async def follow_logs(self, job_id: str) -> AsyncGenerator[dict[str, Any], None]:
        """A job's log lines as they are written (``?follow=true``, server-sent events:
        ``line`` events, then ``end`` once the job has ended). A stream that goes quiet
        past the read timeout (a step that logs nothing for minutes) is opened again; the
        server sends from the first line, so the lines already given are skipped."""
        path = f"/api/v1/runs/{quote(job_id, safe='')}/logs?follow=true"
        given = 0
        failures = 0
        while True:
            seen = 0
            try:
                # Closed here, not by the garbage collector in some later loop turn.
                async with (
                    contextlib.aclosing(
                        cast(
                            AsyncGenerator[str, None],
                            self.api.stream_lines(path, read_timeout=FOLLOW_READ_TIMEOUT),
                        )
                    ) as lines,
                    contextlib.aclosing(
                        cast(AsyncGenerator[ServerEvent, None], iter_events(lines))
                    ) as events,
                ):
                    ended = False
                    async for event in events:
                        # After ``end`` the server closes the stream: read on to that
                        # close, so httpx's inner iterators finish instead of being
                        # abandoned mid-body.
                        if event.event == "end":
                            ended = True
                        if ended or event.event != "line":
                            continue
                        try:
                            payload = event.json()
                        except ValueError:
                            continue
                        if not isinstance(payload, dict):
                            continue
                        seen += 1
                        if seen > given:
                            given = seen
                            failures = 0
                            yield payload
            except ApiUnreachable:
                failures += 1
                if failures >= 3:
                    raise
                continue
            return  # ended (or closed without ``end``: nothing more will come either)

    async def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        answer = await self.api.request("GET", f"/api/v1/runs/{quote(job_id, safe='')}/artifacts")
        return _items(answer, "artifacts", "items")

    def artifact_path(self, job_id: str, name: str) -> str:
        return f"/api/v1/runs/{quote(job_id, safe='')}/artifacts/{quote(name, safe='/')}"

    async def download_artifact(
        self, job_id: str, name: str, target: Path, progress: Callable[[int], None] | None = None
    ) -> int:
        """Stream an artifact into ``target`` (written beside it, then renamed); its size.
        File writes go to a thread: the event loop never waits on the disk."""
        partial = target.with_name(target.name + ".part")
        handle = await asyncio.to_thread(partial.open, "wb")
        size = 0
        try:
            download = cast(
                AsyncGenerator[bytes, None],
                self.api.stream_bytes(self.artifact_path(job_id, name)),
            )
            async with contextlib.aclosing(download) as chunks:
                async for chunk in chunks:
                    await asyncio.to_thread(handle.write, chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress(size)
        except BaseException:
            await asyncio.to_thread(handle.close)
            await asyncio.to_thread(partial.unlink, True)
            raise
        await asyncio.to_thread(handle.close)
        await asyncio.to_thread(partial.replace, target)
        return size

    async def run_again(self, run: dict[str, Any]) -> str:
        """Enqueue the run's pipeline definition and context once more; the new job's id."""
        answer = await self.api.request(
            "POST", "/api/v1/queue/pipelines/enqueue", json=rerun_body(run)
        )
        return str(answer["job_id"])

    async def live_job(self, job_id: str) -> dict[str, Any]:
        """The queue's record of a job that has no run yet (queued or running)."""
        return await self.api.get_job(job_id)

    # ---------------------------------------------------------------- schedules

    async def list_schedules(self) -> list[dict[str, Any]]:
        answer = await self.api.request("GET", "/api/v1/schedules", headers=POLL_HEADERS)
        return _items(answer, "schedules", "items")

    async def get_schedule(self, schedule_id: str) -> dict[str, Any]:
        return await self.api.request("GET", f"/api/v1/schedules/{quote(schedule_id, safe='')}")

    async def create_schedule(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.api.request("POST", "/api/v1/schedules", json=body)

    async def update_schedule(self, schedule_id: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/api/v1/schedules/{quote(schedule_id, safe='')}"
        return await self.api.request("PUT", path, json=body)

    async def delete_schedule(self, schedule_id: str) -> None:
        await self.api.request("DELETE", f"/api/v1/schedules/{quote(schedule_id, safe='')}")

    async def schedule_action(self, schedule_id: str, action: str) -> Any:
        """``pause``, ``resume`` or ``run-now``; the server's answer."""
        if action not in ("pause", "resume", "run-now"):
            raise ValueError(action)
        path = f"/api/v1/schedules/{quote(schedule_id, safe='')}/{action}"
        return await self.api.request("POST", path)

    async def schedule_runs(self, schedule_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """The schedule's recent runs, newest first (from the run store)."""
        path = f"/api/v1/schedules/{quote(schedule_id, safe='')}/runs"
        answer = await self.api.request("GET", path, params={"limit": limit}, headers=POLL_HEADERS)
        return _items(answer, "runs", "items")

    async def preview_schedule(self, body: dict[str, Any], count: int = 5) -> list[str]:
        """The next fire times of a schedule not saved yet (the server computes them)."""
        answer = await self.api.request(
            "POST", "/api/v1/schedules/preview", json=body, params={"count": count}
        )
        return [str(moment) for moment in (answer or {}).get("next_runs", [])]

    # ---------------------------------------------------------------- alerts

    async def list_alerts(self, *, state: str | None = None, limit: int = 200) -> list[dict]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        answer = await self.api.request(
            "GET", "/api/v1/alerts", params=params, headers=POLL_HEADERS
        )
        return _items(answer, "alerts", "items")

    async def acknowledge_alert(self, alert_id: str) -> Any:
        path = f"/api/v1/alerts/{quote(str(alert_id), safe='')}/ack"
        return await self.api.request("POST", path)

    async def list_rules(self) -> list[dict[str, Any]]:
        answer = await self.api.request("GET", "/api/v1/alerts/rules")
        return _items(answer, "rules", "items")

    async def create_rule(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.api.request("POST", "/api/v1/alerts/rules", json=body)

    async def update_rule(self, rule_id: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/api/v1/alerts/rules/{quote(str(rule_id), safe='')}"
        return await self.api.request("PUT", path, json=body)

    async def delete_rule(self, rule_id: str) -> None:
        await self.api.request("DELETE", f"/api/v1/alerts/rules/{quote(str(rule_id), safe='')}")


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


# ---------------------------------------------------------------------------- alert rules


def _seconds_text(value: Any) -> str:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return ""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:g} s"


def rule_condition(spec: dict[str, Any]) -> str:
    """What a rule watches, in words (``failure rate of etl > 20% over 15 min``)."""
    kind = spec.get("kind")
    pipeline = spec.get("pipeline") or "any pipeline"
    if kind == "run_failed":
        what = "dead-lettered" if spec.get("only_dead") else "failed or dead"
        return f"a run of {pipeline} {what}"
    if kind == "failure_rate":
        threshold = float(spec.get("threshold") or 0)
        window = _seconds_text(spec.get("window_seconds", 900))
        return (
            f"failure rate of {pipeline} > {threshold:.0%} over {window} "
            f"(≥ {spec.get('min_runs', 10)} runs)"
        )
    if kind == "backlog":
        queue = f"queue {spec['queue']}" if spec.get("queue") else "all queues"
        limits = []
        if spec.get("max_length") is not None:
            limits.append(f"> {spec['max_length']} waiting")
        if spec.get("max_age_seconds") is not None:
            limits.append(f"oldest older than {_seconds_text(spec['max_age_seconds'])}")
        return f"{queue}: " + " or ".join(limits)
    if kind == "worker_lost":
        return "a worker lost while it held jobs"
    if kind == "schedule_missed":
        which = f"schedule {spec['schedule_id']}" if spec.get("schedule_id") else "any schedule"
        return f"{which} overdue by {_seconds_text(spec.get('grace_seconds', 60))}"
    return str(kind or "")


def channels_text(spec: dict[str, Any]) -> str:
    """``webhook hooks.example.com, email ops@example.com``; "none" without channels."""
    from urllib.parse import urlsplit

    parts = []
    for channel in spec.get("channels") or []:
        if channel.get("type") == "webhook":
            parts.append(f"webhook {urlsplit(str(channel.get('url'))).hostname or ''}")
        elif channel.get("type") == "email":
            parts.append("email " + ", ".join(channel.get("to") or []))
    return "; ".join(parts) or "none"


def notified_text(alert: dict[str, Any]) -> str:
    """How the alert's firing notification went, per channel: ``webhook ✓ · email ✗``;
    ``quiet (cooldown)`` when the rule's cooldown held it back, ``no channels``."""
    notify = alert.get("notify")
    if notify == "suppressed":
        return "quiet (cooldown)"
    if notify == "none":
        return "no channels"
    outcome: dict[str, bool] = {}
    for attempt in alert.get("notifications") or []:
        if attempt.get("event", "firing") != "firing":
            continue
        channel = str(attempt.get("channel") or "?")
        outcome[channel] = outcome.get(channel, False) or bool(attempt.get("ok"))
    if not outcome:
        return "sending…" if notify == "sent" else str(notify or "")
    return " · ".join(f"{name} {'✓' if ok else '✗'}" for name, ok in sorted(outcome.items()))


def cooldown_text(spec: dict[str, Any]) -> str:
    return _seconds_text(spec.get("cooldown_seconds", 300))


# ---------------------------------------------------------------------------- schedules
# A schedule as the API answers: ``{id, name, state, spec: {the schedule as given},
# next_run, next_runs, last_tick, last_job_id, last_error, last_run: {run summary}}``.


def schedule_spec(schedule: dict[str, Any]) -> dict[str, Any]:
    spec = schedule.get("spec")
    return dict(spec) if isinstance(spec, dict) else dict(schedule)


def schedule_when(schedule: dict[str, Any]) -> str:
    """A schedule's timing in words, with its time zone (``at 02:30 every day (Europe/Paris)``)."""
    from mimir.app.services.cron_text import describe_when

    spec = schedule_spec(schedule)
    words = describe_when(spec.get("cron"), spec.get("interval"))
    zone = spec.get("timezone") or "UTC"
    if spec.get("cron"):
        words += " UTC" if zone == "UTC" else f" ({zone})"
    return words


def schedule_state(schedule: dict[str, Any]) -> str:
    """``active``, ``paused`` or ``ended`` (past its end)."""
    state = schedule.get("state")
    if isinstance(state, str) and state:
        return state
    return "paused" if schedule.get("paused") else "active"


def schedule_next_runs(schedule: dict[str, Any]) -> list[str]:
    """The next fire times the server computed (ISO strings; none while paused or ended)."""
    value = schedule.get("next_runs")
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(schedule["next_run"])] if schedule.get("next_run") else []


def schedule_last_run(schedule: dict[str, Any]) -> dict[str, Any] | None:
    """The schedule's last run (``job_id``, ``status``, ``finished_at``): the newest stored
    run, or the last tick's job while it has no run yet (it is still queued or running)."""
    last = schedule.get("last_run")
    tick = schedule.get("last_tick")
    if isinstance(last, dict):
        newer_tick = tick and schedule.get("last_job_id") != last.get("job_id")
        if not newer_tick:
            return last
    if tick:
        return {"job_id": schedule.get("last_job_id"), "status": "started", "at": tick}
    return None


def schedule_pipeline(schedule: dict[str, Any]) -> str:
    spec = schedule_spec(schedule)
    if spec.get("pipeline_name"):
        return str(spec["pipeline_name"])
    if spec.get("pipeline_file"):
        return str(spec["pipeline_file"])
    pipeline = spec.get("pipeline")
    if isinstance(pipeline, dict):
        return f"{pipeline.get('name') or 'inline'} (inline)"
    return "inline" if pipeline else ""
