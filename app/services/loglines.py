"""Log lines as the console shows them: the JSON lines of ``MIMIR_LOG_FORMAT=json`` read
back into their fields, and the link to a job's trace (``MIMIR_TRACE_URL``).

Qt-free: the Logs panel renders what :func:`parse_json_line` answers; a line that is not
one of Mimir's JSON objects (text logs, Redis's own lines) answers ``None`` and is shown
as it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

__all__ = ["CONTEXT_KEYS", "JsonLine", "parse_json_line", "shown_time", "trace_link"]

#: The context keys a JSON line may carry after its message, in the order they are shown
#: (``job_id`` is shown as a link of its own; ``exc`` below the line).
CONTEXT_KEYS = ("pipeline", "step", "run_id", "worker_id", "trace_id")


@dataclass(frozen=True)
class JsonLine:
    """One JSON log record: its four fixed keys and what it knows of its context."""

    time: str
    level: str
    logger: str
    message: str
    job_id: str | None = None
    context: dict[str, str] = field(default_factory=dict)
    exc: str | None = None

    @property
    def text(self) -> str:
        """The line as plain text (what the filter matches and a copy gives)."""
        parts = [shown_time(self.time), self.level, f"{self.logger}:", self.message]
        if self.job_id:
            parts.append(f"job {self.job_id}")
        parts += [f"{key}={value}" for key, value in self.context.items()]
        return " ".join(part for part in parts if part)


def parse_json_line(text: str) -> JsonLine | None:
    """The record of a ``MIMIR_LOG_FORMAT=json`` line, or ``None`` for any other line."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return None
    try:
        record = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("message"), str):
        return None
    if not isinstance(record.get("level"), str):
        return None

    def text_of(key: str) -> str | None:
        value = record.get(key)
        return str(value) if value not in (None, "") else None

    context = {key: value for key in CONTEXT_KEYS if (value := text_of(key)) is not None}
    return JsonLine(
        time=text_of("time") or "",
        level=record["level"].upper(),
        logger=text_of("logger") or "",
        message=record["message"],
        job_id=text_of("job_id"),
        context=context,
        exc=text_of("exc"),
    )


def shown_time(value: str) -> str:
    """``HH:MM:SS.mmm`` in local time (as the console shows times) of an ISO time with its
    zone; the value unchanged if it is not one."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        return value
    return moment.astimezone().strftime("%H:%M:%S.%f")[:-3]


def trace_link(trace_id: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The URL of ``trace_id`` from ``MIMIR_TRACE_URL`` (a template with ``{trace_id}``);
    ``None`` without a trace id or a usable template."""
    if not trace_id:
        return None
    from mimir.core.settings import trace_url_template

    try:
        template = trace_url_template(os.environ if environ is None else environ)
    except ValueError:
        return None
    if template is None:
        return None
    return template.replace("{trace_id}", quote(trace_id, safe=""))
