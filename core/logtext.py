"""Log text that cannot forge log lines.

A request's path, a header, a pipeline's name or an error message quoting them reach
the logs; a newline, carriage return or terminal escape (``%0a``, ``%0d``, ``%1b`` in
a URL) among them would start a fake log line or recolour a terminal.
:func:`printable` writes such characters as ``\\xNN`` and keeps every other
character, accents and scripts included; :class:`PrintableFormatter` applies it to
every record's message, so that each record is one line whatever its arguments hold.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar

__all__ = [
    "LOG_FORMATS",
    "JsonFormatter",
    "PrintableFormatter",
    "log_formatter",
    "parse_log_format",
    "printable",
    "quiet_url_loggers",
    "request_id_var",
    "set_worker_id",
]

#: The id of the API request being served (set by the server's request middleware), for
#: log lines written below the routes (SPARQL SERVICE/LOAD decisions).
request_id_var: ContextVar[str | None] = ContextVar("mimir_request_id", default=None)

#: C0 controls (newline, CR, tab, ESC ...), DEL, the C1 controls (U+0080-U+009F: NEL,
#: CSI ...) and the Unicode line and paragraph separators: everything that breaks a
#: line (``str.splitlines``) or drives a terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``str(value)`` with control characters written as ``\\xNN`` (``\\u2028``).

    For every value that came from a request before it is logged. Idempotent: the
    result holds no control character.
    """
    text = value if isinstance(value, str) else str(value)
    return _CONTROL.sub(_escape, text)


class PrintableFormatter(logging.Formatter):
    """A formatter whose records are one line each: the message (with its arguments)
    passes through :func:`printable`. A traceback still follows on its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


# ---------------------------------------------------------------------------- formats

#: ``MIMIR_LOG_FORMAT`` values: ``text`` (the default, for a terminal) or ``json``.
LOG_FORMATS = ("text", "json")

#: The worker id of this process (set once by a worker at start), for JSON lines.
_process_worker_id: str | None = None

#: Characters ``json.dumps(ensure_ascii=False)`` leaves raw that still break a line
#: (``str.splitlines``: NEL, the line and paragraph separators) or drive a terminal.
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029]")


def parse_log_format(value: str | None) -> str:
    """``text`` or ``json`` from ``MIMIR_LOG_FORMAT`` (unset or empty: ``text``);
    ``ValueError`` naming the variable for anything else."""
    name = (value or "text").strip().lower() or "text"
    if name not in LOG_FORMATS:
        raise ValueError(f"MIMIR_LOG_FORMAT must be 'text' or 'json', got {value!r}")
    return name


def set_worker_id(worker_id: str | None) -> None:
    """Name this process's worker in every JSON log line (a worker calls it once)."""
    global _process_worker_id
    _process_worker_id = worker_id


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, keys in this order: ``time`` (ISO 8601
    UTC to the ms, ``Z``), ``level``, ``logger``, ``message``, then only those known:
    ``job_id``, ``run_id``, ``pipeline``, ``step``, ``worker_id``, ``trace_id``,
    ``span_id``, ``exc`` (the traceback's text).

    The context comes from the record first (``extra={"job_id": ...}`` where the code
    logging knows the job but runs outside it), then from the job's
    :class:`~mimir.core.capture.RunCapture` and :data:`~mimir.core.capture.current_step`
    (set while a worker runs a job), the process's worker id (:func:`set_worker_id`) and
    the current OpenTelemetry span. A newline, escape or line separator in a message is
    escaped by JSON: a record stays one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        from mimir.core.capture import current_capture, current_step, iso_time
        from mimir.core.telemetry import current_span_id, current_trace_id

        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what was written
            message = str(record.msg)
        out: dict[str, str] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        capture = current_capture.get()
        known = {
            "job_id": capture.job_id if capture is not None else None,
            "run_id": capture.run_id if capture is not None else None,
            "pipeline": capture.pipeline if capture is not None else None,
            "step": current_step.get(),
            "worker_id": _process_worker_id,
            "trace_id": current_trace_id(),
            "span_id": current_span_id(),
        }
        for key, value in known.items():
            given = record.__dict__.get(key)
            if given is None or given == "":
                given = value
            if given is not None and given != "":
                out[key] = str(given)
        exc = ""
        if record.exc_info:
            exc = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            exc = f"{exc}\n{self.formatStack(record.stack_info)}" if exc else record.stack_info
        if exc:
            out["exc"] = exc
        line = json.dumps(out, ensure_ascii=False, default=str)
        return _JSON_RAW.sub(_escape_json, line)


def _escape_json(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def quiet_url_loggers() -> None:
    """httpx logs each request's whole URL at INFO, query string included (where an API
    key may travel): kept to its warnings. A plugin's own line names the URL without its
    query (``Input.api``)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def log_formatter(log_format: str, text_format: str) -> logging.Formatter:
    """The formatter of ``MIMIR_LOG_FORMAT`` (:func:`parse_log_format`): JSON lines, or
    ``text_format`` through :class:`PrintableFormatter`."""
    if log_format == "json":
        return JsonFormatter()
    return PrintableFormatter(text_format)
