"""The Jobs table's data, without Qt: job records merged from listings and live events.

A job's record only moves forward. Every change of a record on the server raises its
``version``, and the ``job`` event of that change carries it (see
:mod:`mimir.core.queue.scripts`), so whatever arrives late — a listing read before a
change, the reply to a cancel read just before the worker's ``cancelled`` — is older than
what the store holds and is dropped. A newer record or event replaces the fields it
carries (a ``null`` clears one: a retried job has no start or finish time any more).

Rows are kept sorted by one column (``Enqueued``, newest first, by default; ties in
arrival order), so a view shows the store's order as is and is told where a row went.
Changing the store is two steps, :meth:`JobStore.prepare` then :meth:`JobStore.commit`,
so a Qt model can announce the change between them. The store is bounded: past
``max_rows`` the oldest finished jobs are dropped, a twentieth at a time.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "COLUMNS",
    "DEAD_LETTER",
    "ENQUEUED_COLUMN",
    "FINAL_STATUSES",
    "Column",
    "JobStore",
    "PendingChange",
    "count_text",
    "describe_job",
    "job_matches",
    "parse_time",
]

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "dead"})
#: The filter value for every job in the dead letter: those that failed on their last
#: attempt (``failed``) and those delivered too often (``dead``).
DEAD_LETTER = "dead letter"
_DEAD_LETTER_STATUSES = frozenset({"failed", "dead"})
_PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _timestamp(value: Any) -> float:
    moment = parse_time(value)
    return moment.timestamp() if moment else 0.0


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


def count_text(count: int, noun: str, plural: str | None = None) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{count} {noun if count == 1 else (plural or noun + 's')}"


def _progress(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    if not progress:
        return ""
    name = f" {progress.get('name')}" if progress.get("name") else ""
    return f"{progress.get('step', 0)}/{progress.get('total', 0)}{name}"


def _progress_share(job: dict[str, Any]) -> float:
    progress = job.get("progress") or {}
    total = progress.get("total") or 0
    return float(progress.get("step") or 0) / total if total else -1.0


def _time_of_day(value: Any) -> str:
    moment = parse_time(value)
    return moment.astimezone().strftime("%H:%M:%S") if moment else ""


def _waited(job: dict[str, Any]) -> float | None:
    return _seconds_between(job.get("enqueued_at"), job.get("started_at"))


def _ran(job: dict[str, Any]) -> float | None:
    return _seconds_between(job.get("started_at"), job.get("finished_at"))


def _text_key(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda job: str(job.get(name) or "").lower()


@dataclass(frozen=True)
class Column:
    """A table column: its title, its text, and what it sorts by (one type per column)."""

    title: str
    text: Callable[[dict[str, Any]], str]
    key: Callable[[dict[str, Any]], Any]


COLUMNS: list[Column] = [
    Column("Job", lambda j: str(j.get("job_id", ""))[:12], _text_key("job_id")),
    Column("Status", lambda j: str(j.get("status", "")), _text_key("status")),
    Column(
        "Pipeline",
        lambda j: str(j.get("pipeline") or j.get("type") or ""),
        lambda j: str(j.get("pipeline") or j.get("type") or "").lower(),
    ),
    Column(
        "Priority",
        lambda j: str(j.get("priority", "")),
        lambda j: _PRIORITY_RANK.get(str(j.get("priority")), 3),
    ),
    Column("Attempts", lambda j: str(j.get("attempts", "")), lambda j: int(j.get("attempts") or 0)),
    Column("Worker", lambda j: str(j.get("worker_id") or ""), _text_key("worker_id")),
    Column(
        "Enqueued",
        lambda j: _time_of_day(j.get("enqueued_at")),
        lambda j: _timestamp(j.get("enqueued_at")),
    ),
    Column("Waited", lambda j: format_seconds(_waited(j)), lambda j: _or_minus_one(_waited(j))),
    Column("Ran", lambda j: format_seconds(_ran(j)), lambda j: _or_minus_one(_ran(j))),
    Column("Progress", _progress, _progress_share),
]

#: The default order: newest first.
ENQUEUED_COLUMN = 6


def _or_minus_one(value: float | None) -> float:
    return -1.0 if value is None else value


def job_matches(job: dict[str, Any], status: str | None, text: str, worker_name: str = "") -> bool:
    """The filter: ``status`` exactly (:data:`DEAD_LETTER`: failed or dead; ``None``: any),
    ``text`` in id, pipeline, worker (its id or ``worker_name``), error or status."""
    if status == DEAD_LETTER:
        if job.get("status") not in _DEAD_LETTER_STATUSES:
            return False
    elif status and job.get("status") != status:
        return False
    if text:
        needle = text.lower()
        haystack = " ".join(
            str(job.get(key) or "")
            for key in ("job_id", "pipeline", "worker_id", "error", "status")
        ).lower()
        haystack += " " + worker_name.lower()
        return needle in haystack
    return True


def _version(record: dict[str, Any] | None) -> int:
    try:
        return int((record or {}).get("version") or 0)
    except (TypeError, ValueError):
        return 0


ChangeKind = Literal["insert", "update", "move", "remove"]


@dataclass(frozen=True)
class PendingChange:
    """What :meth:`JobStore.commit` will do. Rows are display rows (0 = the top):
    ``row`` before the change, ``to_row`` after it (``None`` for what does not apply)."""

    kind: ChangeKind
    job_id: str
    record: dict[str, Any] | None
    row: int | None
    to_row: int | None
    _key: tuple[Any, int] | None = None


class JobStore:
    """Job records by id, in the order of one column, bounded to ``max_rows``."""

    def __init__(self, max_rows: int = 20000) -> None:
        self.max_rows = max_rows
        self.sort_column = ENQUEUED_COLUMN
        self.descending = True
        self._records: dict[str, dict[str, Any]] = {}
        self._seq: dict[str, int] = {}
        self._next_seq = 0
        #: Job ids and their sort keys, ascending by key (display order reverses it
        #: when ``descending``); a key is ``(column key, arrival number)``, so unique.
        self._ids: list[str] = []
        self._keys: list[tuple[Any, int]] = []
        self._key_of: dict[str, tuple[Any, int]] = {}
        #: Deleted jobs and the version of their deletion: a record read before it (a
        #: listing in flight) must not bring the job back.
        self._deleted: dict[str, int] = {}

    # ---------------------------------------------------------------- reading

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self._records.get(job_id)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The records in display order (a new list)."""
        return [self._records[job_id] for job_id in self._display_ids()]

    def _display_ids(self) -> list[str]:
        return list(reversed(self._ids)) if self.descending else list(self._ids)

    def _to_display(self, position: int, size: int) -> int:
        return size - 1 - position if self.descending else position

    def record(self, row: int) -> dict[str, Any]:
        """The record shown in display row ``row``."""
        return self._records[self._ids[self._to_display(row, len(self._ids))]]

    def row_of(self, job_id: str) -> int | None:
        """The display row of ``job_id``."""
        key = self._key_of.get(job_id)
        if key is None:
            return None
        return self._to_display(bisect.bisect_left(self._keys, key), len(self._ids))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for record in self._records.values():
            status = str(record.get("status", ""))
            out[status] = out.get(status, 0) + 1
        return out

    # ---------------------------------------------------------------- changing

    def _key(self, job_id: str, record: dict[str, Any]) -> tuple[Any, int]:
        return (COLUMNS[self.sort_column].key(record), self._seq[job_id])

    def prepare(self, record: dict[str, Any]) -> PendingChange | None:
        """What merging ``record`` (a listing's record, an event, an API answer) would do;
        ``None`` when it is older than what the store holds. Nothing changes until
        :meth:`commit`."""
        job_id = str(record.get("job_id") or "")
        if not job_id:
            raise ValueError("a job record needs a job_id")
        current = self._records.get(job_id)
        incoming = _version(record)
        if current is not None and incoming and incoming < _version(current):
            return None  # read before a change the store already has
        if record.get("deleted"):
            self._forget(job_id, incoming or _version(current) + 1)
            if current is None:
                return None
            return PendingChange("remove", job_id, None, self.row_of(job_id), None)
        gone = self._deleted.get(job_id)
        if gone is not None and (not incoming or incoming < gone):
            return None  # a record of a job deleted since it was read
        merged = dict(current or {})
        merged.update({k: v for k, v in record.items() if k != "deleted"})
        if "result" not in record and merged.get("status") not in FINAL_STATUSES:
            merged.pop("result", None)  # a job that runs again has no result yet
        size = len(self._ids)
        if current is None:
            seq = self._next_seq
            key = (COLUMNS[self.sort_column].key(merged), seq)
            position = bisect.bisect_left(self._keys, key)
            return PendingChange(
                "insert", job_id, merged, None, self._to_display(position, size + 1), key
            )
        old_key = self._key_of[job_id]
        key = (COLUMNS[self.sort_column].key(merged), old_key[1])
        old_position = bisect.bisect_left(self._keys, old_key)
        row = self._to_display(old_position, size)
        if key == old_key:
            return PendingChange("update", job_id, merged, row, row, key)
        # Where it lands once taken out of its old place.
        position = bisect.bisect_left(self._keys, key)
        if position > old_position:
            position -= 1
        to_row = self._to_display(position, size)
        kind: ChangeKind = "update" if to_row == row else "move"
        return PendingChange(kind, job_id, merged, row, to_row, key)

    def commit(self, change: PendingChange) -> None:
        """Apply what :meth:`prepare` answered (with nothing else changed in between)."""
        job_id = change.job_id
        if change.kind == "remove":
            self._take_out(job_id)
            self._records.pop(job_id, None)
            self._seq.pop(job_id, None)
            return
        assert change.record is not None and change._key is not None
        if change.kind == "insert":
            self._seq[job_id] = self._next_seq
            self._next_seq += 1
        elif change._key != self._key_of[job_id]:
            self._take_out(job_id)
        if job_id not in self._key_of:
            position = bisect.bisect_left(self._keys, change._key)
            self._ids.insert(position, job_id)
            self._keys.insert(position, change._key)
            self._key_of[job_id] = change._key
        self._records[job_id] = change.record

    def _forget(self, job_id: str, version: int) -> None:
        self._deleted[job_id] = max(version, self._deleted.get(job_id, 0))
        if len(self._deleted) > 2 * self.max_rows:  # bounded: the oldest deletions go
            for old in list(self._deleted)[: self.max_rows]:
                del self._deleted[old]

    def _take_out(self, job_id: str) -> None:
        key = self._key_of.pop(job_id, None)
        if key is None:
            return
        position = bisect.bisect_left(self._keys, key)
        del self._ids[position]
        del self._keys[position]

    def upsert(self, record: dict[str, Any]) -> PendingChange | None:
        """:meth:`prepare` and :meth:`commit` in one (no view to tell)."""
        change = self.prepare(record)
        if change is not None:
            self.commit(change)
        return change

    def sort(self, column: int, descending: bool) -> None:
        """Order by ``column`` (ties in arrival order)."""
        self.sort_column, self.descending = column, descending
        pairs = sorted((self._key(job_id, self._records[job_id]), job_id) for job_id in self._ids)
        self._keys = [key for key, _ in pairs]
        self._ids = [job_id for _, job_id in pairs]
        self._key_of = dict(zip(self._ids, self._keys, strict=True))

    def over_limit(self) -> bool:
        return len(self._ids) > self.max_rows

    def trim(self) -> list[str]:
        """Drop the oldest jobs (finished ones first) down to 95 % of ``max_rows``; the
        ids dropped. (A view resets itself around this: it is rare.)"""
        extra = len(self._ids) - int(self.max_rows * 0.95)
        if extra <= 0:
            return []
        by_age = sorted(self._records, key=self._seq.__getitem__)
        finished = [j for j in by_age if self._records[j].get("status") in FINAL_STATUSES]
        doomed = finished[:extra]
        if len(doomed) < extra:
            chosen = set(doomed)
            doomed += [j for j in by_age if j not in chosen][: extra - len(doomed)]
        gone = set(doomed)
        for job_id in doomed:
            self._records.pop(job_id, None)
            self._seq.pop(job_id, None)
            self._key_of.pop(job_id, None)
        kept = [(key, job_id) for key, job_id in zip(self._keys, self._ids, strict=True)]
        kept = [(key, job_id) for key, job_id in kept if job_id not in gone]
        self._keys = [key for key, _ in kept]
        self._ids = [job_id for _, job_id in kept]
        return doomed

    def clear(self) -> None:
        self._deleted.clear()
        self._records.clear()
        self._seq.clear()
        self._ids.clear()
        self._keys.clear()
        self._key_of.clear()


def _local_time(value: Any) -> str:
    moment = parse_time(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if moment else ""


def _worker_text(worker_id: str, name: str) -> str:
    return f"{name} ({worker_id})" if name and name != worker_id else worker_id


def describe_job(job: dict[str, Any], worker_name: str = "") -> str:
    """The details pane's text: what an operator asks first, then the result
    (``worker_name``: the name the tables show, beside the worker's id)."""
    status = str(job.get("status", ""))
    if job.get("cancel_requested") and status not in FINAL_STATUSES:
        status += " (cancel requested)"
    if status in _DEAD_LETTER_STATUSES:
        status += " · in the dead letter"
    attempts = job.get("attempts", 0)
    retries = job.get("max_retries")
    lines = [
        ("Job", str(job.get("job_id", ""))),
        ("Status", status),
        ("Pipeline", str(job.get("pipeline") or job.get("type") or "")),
        ("Priority", f"{job.get('priority', '')} · queue {job.get('queue') or 'default'}"),
        ("Attempts", f"{attempts} of {int(retries) + 1}" if retries is not None else str(attempts)),
        ("Worker", _worker_text(str(job.get("worker_id") or ""), worker_name)),
        ("Enqueued", _local_time(job.get("enqueued_at"))),
    ]
    if job.get("scheduled_for") and not job.get("started_at"):
        lines.append(("Due", _local_time(job.get("scheduled_for"))))
    if job.get("started_at"):
        waited = format_seconds(_waited(job))
        lines.append(("Started", f"{_local_time(job['started_at'])} (waited {waited})"))
    if job.get("finished_at"):
        ran = format_seconds(_ran(job))
        suffix = f" (ran {ran})" if ran else ""
        lines.append(("Finished", f"{_local_time(job['finished_at'])}{suffix}"))
    if job.get("progress"):
        lines.append(("Progress", _progress(job)))
    if job.get("timeout"):
        lines.append(("Timeout", format_seconds(float(job["timeout"]))))
    if job.get("idempotency_key"):
        lines.append(("Idempotency", str(job["idempotency_key"])))
    if job.get("trace_id"):  # set when tracing is on (OTEL_*)
        lines.append(("Trace", str(job["trace_id"])))
    text = "\n".join(f"{label:<11} {value}" for label, value in lines if value)
    if job.get("error"):
        text += "\n\nError\n" + str(job["error"])
    if job.get("result") is not None:
        text += "\n\nResult\n" + json.dumps(job["result"], indent=2, default=str)[:20000]
    return text
