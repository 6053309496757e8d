"""The Jobs table's data, without Qt: job records merged from listings and live events.

Rows are kept in arrival order (append-only, O(1) updates by id); the Qt model shows them
newest first. Records are merged, because ``event: job`` carries only a subset of fields.
The store is bounded: past ``max_rows`` the oldest finished jobs are dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["COLUMNS", "FINAL_STATUSES", "Column", "JobStore", "job_matches", "parse_time"]

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "dead"})


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _seconds_between(start: Any, end: Any) -> float | None:
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None:
        return None
    return max(0.0, (b - a).total_seconds())


def format_seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _progress(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    if not progress:
        return ""
    name = f" {progress.get('name')}" if progress.get("name") else ""
    return f"{progress.get('step', 0)}/{progress.get('total', 0)}{name}"


def _time_of_day(value: Any) -> str:
    moment = parse_time(value)
    return moment.astimezone().strftime("%H:%M:%S") if moment else ""


@dataclass(frozen=True)
class Column:
    title: str
    text: Callable[[dict[str, Any]], str]


COLUMNS: list[Column] = [
    Column("Job", lambda j: str(j.get("job_id", ""))[:12]),
    Column("Status", lambda j: str(j.get("status", ""))),
    Column("Pipeline", lambda j: str(j.get("pipeline") or j.get("type") or "")),
    Column("Priority", lambda j: str(j.get("priority", ""))),
    Column("Attempts", lambda j: str(j.get("attempts", ""))),
    Column("Worker", lambda j: str(j.get("worker_id") or "")),
    Column("Enqueued", lambda j: _time_of_day(j.get("enqueued_at"))),
    Column(
        "Waited",
        lambda j: format_seconds(_seconds_between(j.get("enqueued_at"), j.get("started_at"))),
    ),
    Column(
        "Ran", lambda j: format_seconds(_seconds_between(j.get("started_at"), j.get("finished_at")))
    ),
    Column("Progress", _progress),
]


def job_matches(job: dict[str, Any], status: str | None, text: str) -> bool:
    """The filter: ``status`` exactly (or any), ``text`` in id, pipeline, worker or error."""
    if status and job.get("status") != status:
        return False
    if text:
        needle = text.lower()
        haystack = " ".join(
            str(job.get(key) or "")
            for key in ("job_id", "pipeline", "worker_id", "error", "status")
        ).lower()
        return needle in haystack
    return True


class JobStore:
    """Job records by id, in arrival order, bounded to ``max_rows``."""

    def __init__(self, max_rows: int = 20000) -> None:
        self.max_rows = max_rows
        self.rows: list[dict[str, Any]] = []
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def position(self, job_id: str) -> int | None:
        return self._index.get(job_id)

    def get(self, job_id: str) -> dict[str, Any] | None:
        index = self._index.get(job_id)
        return None if index is None else self.rows[index]

    def upsert(self, record: dict[str, Any]) -> tuple[int, bool]:
        """Merge ``record`` in; ``(position, inserted)``."""
        job_id = str(record.get("job_id", ""))
        if not job_id:
            raise ValueError("a job record needs a job_id")
        index = self._index.get(job_id)
        if index is not None:
            self.rows[index].update({k: v for k, v in record.items() if v is not None})
            return index, False
        self.rows.append(dict(record))
        self._index[job_id] = len(self.rows) - 1
        return len(self.rows) - 1, True

    def over_limit(self) -> int:
        return max(0, len(self.rows) - self.max_rows)

    def drop_oldest(self, count: int) -> None:
        """Remove the ``count`` oldest rows (the caller tells its view first)."""
        if count <= 0:
            return
        del self.rows[:count]
        self._index = {str(row["job_id"]): i for i, row in enumerate(self.rows)}

    def clear(self) -> None:
        self.rows.clear()
        self._index.clear()

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows:
            status = str(row.get("status", ""))
            out[status] = out.get(status, 0) + 1
        return out
