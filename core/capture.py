"""What a run did, captured while it runs: its steps, its log lines and its artifacts.

A worker makes one :class:`RunCapture` per job and sets :data:`current_capture` in the
job's task (asyncio tasks, and ``asyncio.to_thread``, copy the context, so everything
the job's steps run sees it). Then:

- the engine (:mod:`mimir.core.engine`) sets :data:`current_step` while a step runs and
  reports each step's start and end (:meth:`RunCapture.step_started`,
  :meth:`RunCapture.step_ended`) with a line of its own for each;
- the worker's logging handler adds every record logged in the job's context, by any
  logger (a plugin's module logger, the engine's), to :meth:`RunCapture.line`, with the
  step from :data:`current_step`;
- Output plugins call :meth:`StepRuntime.record_artifact
  <mimir.core.plugins.base.StepRuntime.record_artifact>` for each file they write.

Outside a worker (``mimir run``, the server's execute) no capture is set and all of this
is a no-op. :meth:`RunCapture.detail` is the outcome's ``detail`` JSON: steps, log lines
(capped at :data:`LOG_CAP` bytes of message text, then one :data:`CUT_MARKER` line),
artifacts (path under the data directory, size, content type, sha256).
"""

from __future__ import annotations

import hashlib
import mimetypes
import threading
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "CUT_MARKER",
    "LOG_CAP",
    "RunCapture",
    "current_capture",
    "current_step",
    "iso_time",
]

#: Most bytes of log message text (UTF-8) kept per run.
LOG_CAP = 1 << 20
#: The last line of a run's log once the cap cut it.
CUT_MARKER = "[log cut at 1 MiB]"

#: The capture of the job this context runs (set by the worker; none elsewhere).
current_capture: ContextVar[RunCapture | None] = ContextVar("mimir_run_capture", default=None)
#: The name of the step this context runs (set by the engine while a step runs).
current_step: ContextVar[str | None] = ContextVar("mimir_current_step", default=None)


#: The last second formatted by :func:`iso_time` (epoch second, its text): lines come
#: many to a second, and formatting the date is most of a line's cost.
_second: tuple[int, str] = (-1, "")


def iso_time(moment: datetime | float) -> str:
    """ISO 8601 UTC to the millisecond with a ``Z`` (as the queue writes times);
    ``moment`` an aware datetime or epoch seconds."""
    global _second
    if isinstance(moment, datetime):
        whole = int(moment.replace(microsecond=0).timestamp())
        millis = moment.microsecond // 1000
    else:
        whole = int(moment // 1)
        millis = int((moment - whole) * 1000)
    cached, text = _second
    if cached != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    return f"{text}.{millis:03d}Z"


class RunCapture:
    """One run's steps, log lines and artifacts. Thread-safe: plugins log from threads."""

    def __init__(
        self,
        log_cap: int = LOG_CAP,
        *,
        job_id: str | None = None,
        pipeline: str | None = None,
        run_id: str | None = None,
    ) -> None:
        self.log_cap = log_cap
        #: What the job's JSON log lines carry (:class:`~mimir.core.logtext.JsonFormatter`):
        #: its id, its pipeline's name, and a run id of its own where it has one (a twin
        #: run; a pipeline's run in the run store is known by the job id).
        self.job_id = job_id
        self.pipeline = pipeline
        self.run_id = run_id
        self.steps: dict[int, dict[str, Any]] = {}
        self.logs: list[dict[str, Any]] = []
        self.log_bytes = 0
        self.truncated = False
        #: Lines already written to the live log stream (a prefix of :attr:`logs`).
        self.flushed = 0
        self._artifacts: dict[str, tuple[Path, str | None]] = {}
        self._lock = threading.Lock()

    # -- log lines -------------------------------------------------------------------

    def line(
        self,
        level: str,
        msg: str,
        *,
        step: str | None = None,
        t: datetime | float | None = None,
        from_context: bool = True,
    ) -> None:
        """Add one log line (``step`` defaults to the context's current step)."""
        if from_context and step is None:
            step = current_step.get()
        size = len(msg.encode("utf-8", "replace"))
        when = iso_time(t if t is not None else time.time())
        with self._lock:
            if self.truncated:
                return
            if self.log_bytes + size > self.log_cap:
                self.truncated = True
                self.logs.append({"t": when, "level": "WARNING", "step": None, "msg": CUT_MARKER})
                return
            self.log_bytes += size
            self.logs.append({"t": when, "level": level, "step": step, "msg": msg})

    def unflushed(self) -> tuple[int, list[dict[str, Any]]]:
        """The lines not yet on the live stream, and the count to pass to
        :meth:`mark_flushed` once they are."""
        with self._lock:
            end = len(self.logs)
            return end, self.logs[self.flushed : end]

    def mark_flushed(self, upto: int) -> None:
        with self._lock:
            self.flushed = max(self.flushed, upto)

    # -- steps -----------------------------------------------------------------------

    def step_started(self, index: int, name: str, plugin: str, started_at: datetime) -> None:
        """A step began (it shows as failed, with the stop reason, if it never ends)."""
        with self._lock:
            self.steps[index] = {
                "index": index,
                "name": name,
                "plugin": plugin,
                "status": None,
                "duration_ms": 0.0,
                "error": None,
                "started_at": iso_time(started_at),
                "_t0": started_at,
            }

    def step_ended(
        self,
        index: int,
        name: str,
        plugin: str,
        status: str,
        duration_ms: float,
        error: str | None,
        started_at: datetime | None,
    ) -> None:
        with self._lock:
            self.steps[index] = {
                "index": index,
                "name": name,
                "plugin": plugin,
                "status": status,
                "duration_ms": round(duration_ms, 3),
                "error": error,
                "started_at": iso_time(started_at) if started_at is not None else None,
            }

    # -- artifacts -------------------------------------------------------------------

    def artifact(self, path: Path, data_dir: Path, step: str | None) -> None:
        """A file the run wrote (``path`` inside ``data_dir``); read when the run ends,
        so a file written twice is recorded once, as it stays."""
        resolved = Path(path).resolve()
        try:
            name = resolved.relative_to(Path(data_dir).expanduser().resolve()).as_posix()
        except ValueError:
            return  # not under the data directory: not served, not recorded
        with self._lock:
            self._artifacts.pop(name, None)
            self._artifacts[name] = (resolved, step)

    @property
    def has_artifacts(self) -> bool:
        return bool(self._artifacts)

    # -- the outcome's detail ----------------------------------------------------------

    def detail(self, stopped: str | None = None, *, artifacts: bool = True) -> dict[str, Any]:
        """The ``detail`` JSON. A step that began and never ended counts as failed with
        ``stopped`` (why the job stopped) as its error. Reads (hashes) the artifacts
        (unless not ``artifacts``): call it in a thread when :attr:`has_artifacts`."""
        now = datetime.now(UTC)
        with self._lock:
            steps = []
            for index in sorted(self.steps):
                step = dict(self.steps[index])
                began = step.pop("_t0", None)
                if step["status"] is None:
                    step["status"] = "failed"
                    step["error"] = stopped or "did not finish"
                    if isinstance(began, datetime):
                        step["duration_ms"] = round((now - began).total_seconds() * 1000, 3)
                steps.append(step)
            logs = list(self.logs)
            files = list(self._artifacts.items()) if artifacts else []
        return {
            "steps": steps,
            "logs": logs,
            "logs_truncated": self.truncated,
            "artifacts": [a for a in (_describe(name, p, s) for name, (p, s) in files) if a],
        }


def _describe(name: str, path: Path, step: str | None) -> dict[str, Any] | None:
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError:
        return None  # gone (or replaced by a directory) since it was written
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return {
        "name": name,
        "size": size,
        "content_type": content_type,
        "sha256": digest.hexdigest(),
        "step": step,
    }
