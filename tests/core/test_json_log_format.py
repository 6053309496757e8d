"""The JSON log formatter (``MIMIR_LOG_FORMAT=json``): keys, order, context, one line."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from mimir.core.capture import RunCapture, current_capture, current_step
from mimir.core.logtext import JsonFormatter, log_formatter, parse_log_format, set_worker_id
from mimir.core.settings import Settings


@pytest.fixture(autouse=True)
def _no_worker_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker run in this process before (tests of the worker) set its id: not here."""
    from mimir.core import logtext

    monkeypatch.setattr(logtext, "_process_worker_id", None)


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("mimir.test", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_outside_a_job_only_the_four_keys() -> None:
    line = JsonFormatter().format(_record("hello %s", "you"))
    record = json.loads(line)
    assert list(record) == ["time", "level", "logger", "message"]
    assert record["level"] == "WARNING" and record["message"] == "hello you"
    assert record["logger"] == "mimir.test"
    assert len(record["time"]) == 24 and record["time"].endswith("Z")


def test_the_jobs_context_and_the_records_own_fields_in_order() -> None:
    set_worker_id("worker-host-1")
    capture = RunCapture(job_id="j1", pipeline="sales", run_id="r1")
    capture_token, step_token = current_capture.set(capture), current_step.set("load")
    try:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            record = _record("failed")
            record.exc_info = sys.exc_info()
        line = JsonFormatter().format(record)
        # The record's extra wins over the context (a line logged about another job).
        other = json.loads(JsonFormatter().format(_record("x", job_id="j2", pipeline=None)))
    finally:
        current_capture.reset(capture_token)
        current_step.reset(step_token)
    parsed = json.loads(line)
    assert list(parsed) == [
        "time", "level", "logger", "message",
        "job_id", "run_id", "pipeline", "step", "worker_id", "exc",
    ]  # fmt: skip
    assert (parsed["job_id"], parsed["run_id"], parsed["pipeline"]) == ("j1", "r1", "sales")
    assert parsed["step"] == "load" and parsed["worker_id"] == "worker-host-1"
    assert parsed["exc"].startswith("Traceback") and "ValueError: bad\nvalue" in parsed["exc"]
    assert other["job_id"] == "j2" and other["pipeline"] == "sales"


def test_a_message_stays_one_line_whatever_it_holds() -> None:
    nasty = "a\nb\r\x1b[31m\x85\u2028\u2029\x7f é 東京"
    line = JsonFormatter().format(_record("%s", nasty))
    assert line.splitlines() == [line]  # no raw line break of any kind
    assert "\x1b" not in line and "\x7f" not in line
    assert json.loads(line)["message"] == nasty  # nothing lost
    assert "é 東京" in line  # readable, not \\u-escaped


def test_the_setting() -> None:
    assert parse_log_format(None) == "text" == parse_log_format("")
    assert parse_log_format(" JSON ") == "json"
    with pytest.raises(ValueError, match="MIMIR_LOG_FORMAT must be 'text' or 'json'"):
        Settings.from_env({"MIMIR_LOG_FORMAT": "yaml"})
    assert Settings.from_env({}).log_format == "text"
    assert isinstance(log_formatter("json", "%(message)s"), JsonFormatter)
    assert not isinstance(log_formatter("text", "%(message)s"), JsonFormatter)
    url = "http://jaeger:16686/trace/{trace_id}"
    assert Settings.from_env({"MIMIR_TRACE_URL": url}).trace_url == url
    with pytest.raises(ValueError, match="MIMIR_TRACE_URL"):
        Settings.from_env({"MIMIR_TRACE_URL": "http://jaeger:16686/trace/"})
