"""A job's error message (a step's, which may quote what a request sent) is logged by
the worker as one line: its control characters show as ``\\xNN``.

Every line of the worker's log is checked: the engine's "pipeline ... failed" line quotes
the same error, and the worker's formatter escapes every record.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mimir.core.queue import JobQueue, JobStatus
from tests.helpers import WorkerProcess, wait_until
from tests.worker.conftest import fail_job

_RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def test_a_failed_jobs_error_is_one_escaped_line(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    worker = make_worker()
    job = run(queue.enqueue(fail_job("boom\nFAKE-WORKER-LINE \x1b[31mred\r", max_retries=0)))
    assert run(queue.wait(job.job_id, 30)).job.status is JobStatus.failed

    def failed_line() -> list[str]:
        text = worker.log_path.read_bytes().decode("utf-8")
        return [line for line in text.split("\n") if "mimir.worker.worker: job" in line]

    lines = wait_until(failed_line, timeout=10, message="the worker's failure log line")
    assert len(lines) == 1, lines
    assert f"job {job.job_id} attempt 1 failed (final): " in lines[0], lines[0]
    assert r"boom\x0aFAKE-WORKER-LINE \x1b[31mred\x0d" in lines[0], lines[0]
    assert not _RAW_CONTROL.search(lines[0])
    whole = worker.log_path.read_bytes().decode("utf-8")
    assert not _RAW_CONTROL.search(whole)
    assert not any(line.startswith("FAKE-WORKER-LINE") for line in whole.split("\n"))
