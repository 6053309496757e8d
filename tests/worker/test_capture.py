"""What a real worker captures of a job: its steps, the log lines its plugins (a
third-party plugin's own module logger) and the engine write, attributed to steps, the
files Output plugins write; all on the outcome stream with the job's end, and the lines
on the live log stream while it runs."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mimir.core.capture import CUT_MARKER, LOG_CAP
from mimir.core.jobs import pipeline_job
from mimir.core.pipeline import load_pipeline
from mimir.core.plugins import PluginRegistry
from mimir.core.plugins.builtin import BUILTIN_PLUGINS
from mimir.core.queue import JobQueue, JobStatus
from tests.helpers import WorkerProcess, wait_until

PLUGIN_MODULE = """
import asyncio
import logging

from mimir.core.plugins.base import Plugin, PluginConfig

logger = logging.getLogger(__name__)


class ChattyConfig(PluginConfig):
    lines: int = 1
    size: int = 0
    pause: float = 0.0
    in_thread: bool = False


class ChattyPlugin(Plugin[ChattyConfig]):
    plugin_type = "Acme"
    plugin_name = "chatty"
    description = "Log lines, then pause (a third-party plugin)."
    config_model = ChattyConfig

    async def run(self, config, run):
        def talk():
            for i in range(config.lines):
                logger.info("chatty line %d %s", i, "x" * config.size)

        if config.in_thread:
            await asyncio.to_thread(talk)
        else:
            talk()
        await asyncio.sleep(config.pause)
        return {"said": config.lines}
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """An installed third-party plugin distribution (module + dist-info) to put on the
    workers' path; registered in this process too, to validate pipelines."""
    path = tmp_path / "site"
    path.mkdir()
    (path / "acme_mimir_chatty.py").write_text(PLUGIN_MODULE)
    dist = path / "acme_mimir_chatty-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-mimir-chatty\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[mimir.plugins]\nchatty = acme_mimir_chatty:ChattyPlugin\n"
    )
    yield path


@pytest.fixture
def worker(make_worker: Callable[..., WorkerProcess], site: Path) -> Iterator[WorkerProcess]:
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")]))
    yield make_worker(PYTHONPATH=path, MIMIR_LOG_LEVEL="INFO")


def _job(site: Path, steps: list[dict[str, Any]], **options: Any) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "acme_mimir_chatty", site / "acme_mimir_chatty.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    registry = PluginRegistry()
    for plugin_class in (*BUILTIN_PLUGINS, module.ChattyPlugin):
        registry.register(plugin_class)
    pipeline = load_pipeline({"name": "talks", "steps": steps}, registry=registry)
    return pipeline_job(pipeline, {"who": "test"}, **options)


def _outcomes(queue: JobQueue, run, job_id: str) -> list[dict[str, str]]:
    entries = run(queue.redis.xrange(queue.keys.outcomes))
    return [fields for _, fields in entries if fields["job"] == job_id]


def _ended(queue: JobQueue, run, job_id: str) -> dict[str, Any]:
    """The job's one outcome entry (waits for it), record and detail decoded."""
    found = wait_until(
        lambda: _outcomes(queue, run, job_id), timeout=30, message="the outcome entry"
    )
    assert len(found) == 1, found
    entry = found[0]
    return {
        "record": json.loads(entry["record"]),
        "detail": json.loads(entry["detail"]) if entry["detail"] else None,
    }


def test_a_jobs_end_writes_one_outcome_with_steps_logs_and_artifacts(
    worker: WorkerProcess, site: Path, queue: JobQueue, data_dir: Path, run
) -> None:
    steps = [
        {"name": "talk", "plugin": "Acme.chatty", "config": {"lines": 2}, "output": "said"},
        {"name": "threads", "plugin": "Acme.chatty", "config": {"lines": 1, "in_thread": True}},
        {
            "name": "save",
            "plugin": "Output.json",
            "config": {"input": "{{ said }}", "file_path": "reports/said.json"},
        },
    ]
    job = run(queue.enqueue(_job(site, steps)))
    assert run(queue.wait(job.job_id, 30)).job.status is JobStatus.succeeded
    ended = _ended(queue, run, job.job_id)
    assert ended["record"]["status"] == "succeeded" and ended["record"]["pipeline"] == "talks"
    detail = ended["detail"]
    assert [(s["index"], s["name"], s["plugin"], s["status"]) for s in detail["steps"]] == [
        (0, "talk", "Acme.chatty", "succeeded"),
        (1, "threads", "Acme.chatty", "succeeded"),
        (2, "save", "Output.json", "succeeded"),
    ]
    assert all(s["started_at"].endswith("Z") and s["duration_ms"] >= 0 for s in detail["steps"])
    lines = [(line["step"], line["level"], line["msg"]) for line in detail["logs"]]
    assert ("talk", "INFO", "chatty line 0 ") in lines
    assert ("talk", "INFO", "chatty line 1 ") in lines
    assert ("threads", "INFO", "chatty line 0 ") in lines  # logged from a thread
    assert ("talk", "INFO", "step 1/3 'talk' (Acme.chatty) started") in lines
    assert any(step == "save" and msg.startswith("step 3/3 'save' (Output.json) succeeded in")
               for step, _, msg in lines)  # fmt: skip
    assert all(line["t"].endswith("Z") for line in detail["logs"])
    assert detail["logs_truncated"] is False
    written = (data_dir / "reports" / "said.json").read_bytes()
    assert detail["artifacts"] == [
        {
            "name": "reports/said.json",
            "size": len(written),
            "content_type": "application/json",
            "sha256": hashlib.sha256(written).hexdigest(),
            "step": "save",
        }
    ]


def test_a_failed_job_keeps_its_lines_and_the_failing_step(
    worker: WorkerProcess, site: Path, queue: JobQueue, run
) -> None:
    steps = [
        {"name": "talk", "plugin": "Acme.chatty", "config": {"lines": 1}},
        {"name": "boom", "plugin": "Debug.fail", "config": {"message": "bad\nday"}},
    ]
    job = run(queue.enqueue(_job(site, steps, max_retries=0)))
    assert run(queue.wait(job.job_id, 30)).job.status is JobStatus.failed
    detail = _ended(queue, run, job.job_id)["detail"]
    assert [s["status"] for s in detail["steps"]] == ["succeeded", "failed"]
    assert detail["steps"][1]["error"] == "bad\nday"
    failed = [line for line in detail["logs"] if line["level"] == "ERROR"]
    assert failed and failed[0]["step"] == "boom" and r"bad\x0aday" in failed[0]["msg"]
    # The engine's own "pipeline failed" line, outside any step; every line is one line.
    assert any(line["step"] is None and line["msg"].startswith("pipeline 'talks' failed")
               for line in detail["logs"])  # fmt: skip
    assert not any("\n" in line["msg"] for line in detail["logs"])


def test_the_log_is_cut_at_1_mib_with_a_marker(
    worker: WorkerProcess, site: Path, queue: JobQueue, run
) -> None:
    steps = [
        {"name": "flood", "plugin": "Acme.chatty",
         "config": {"lines": 1200, "size": 1000, "in_thread": True}},
    ]  # fmt: skip
    job = run(queue.enqueue(_job(site, steps)))
    assert run(queue.wait(job.job_id, 30)).job.status is JobStatus.succeeded
    detail = _ended(queue, run, job.job_id)["detail"]
    assert detail["logs_truncated"] is True
    last = detail["logs"][-1]
    assert (last["level"], last["msg"]) == ("WARNING", CUT_MARKER)
    kept = sum(len(line["msg"].encode()) for line in detail["logs"][:-1])
    assert LOG_CAP - 1100 < kept <= LOG_CAP
    assert sum(line["msg"] == CUT_MARKER for line in detail["logs"]) == 1


def test_lines_reach_the_live_log_stream_while_the_job_runs(
    worker: WorkerProcess, site: Path, queue: JobQueue, run
) -> None:
    steps = [{"name": "slow", "plugin": "Acme.chatty", "config": {"lines": 3, "pause": 3}}]
    job = run(queue.enqueue(_job(site, steps)))
    key = queue.keys.log(job.job_id)

    def live() -> list[dict[str, str]]:
        return [fields for _, fields in run(queue.redis.xrange(key))]

    wait_until(lambda: len(live()) >= 4, timeout=15, message="live lines")
    lines = live()
    assert run(queue.get(job.job_id)).status is JobStatus.running
    assert [(f["step"], f["msg"]) for f in lines[:4]] == [
        ("slow", "step 1/1 'slow' (Acme.chatty) started"),
        ("slow", "chatty line 0 "),
        ("slow", "chatty line 1 "),
        ("slow", "chatty line 2 "),
    ]
    assert all(f["level"] == "INFO" and f["t"].endswith("Z") for f in lines)
    assert 0 < run(queue.redis.ttl(key)) <= 24 * 3600
    assert run(queue.wait(job.job_id, 30)).job.status is JobStatus.succeeded
    detail = _ended(queue, run, job.job_id)["detail"]
    # The live stream is a prefix of the run's lines.
    stored = [(line["step"] or "", line["msg"]) for line in detail["logs"]]
    streamed = [(f["step"], f["msg"]) for f in live()]
    assert stored[: len(streamed)] == streamed and len(stored) >= 5


def test_a_job_cancelled_while_running_keeps_its_lines_and_the_stopped_step(
    worker: WorkerProcess, site: Path, queue: JobQueue, run
) -> None:
    steps = [{"name": "slow", "plugin": "Acme.chatty", "config": {"lines": 1, "pause": 60}}]
    job = run(queue.enqueue(_job(site, steps)))
    wait_until(
        lambda: run(queue.get(job.job_id)).status is JobStatus.running, timeout=15, message="run"
    )
    run(queue.cancel(job.job_id))
    assert run(queue.wait(job.job_id, 30)).job.status is JobStatus.cancelled
    detail = _ended(queue, run, job.job_id)["detail"]
    (step,) = detail["steps"]
    assert step["status"] == "failed" and step["error"] == "cancelled while running"
    assert step["started_at"] and step["duration_ms"] > 0
    assert ("slow", "chatty line 0 ") in [(line["step"], line["msg"]) for line in detail["logs"]]
