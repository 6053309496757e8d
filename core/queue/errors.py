"""Exceptions of the job queue; Redis's own errors never leave this package.

::

    MimirError
     └── QueueError                  anything the queue cannot do
          ├── QueueUnavailableError  Redis cannot be reached (or timed out)
          ├── JobNotFoundError       no record for that job id (never existed, or expired)
          └── JobStateError          the job is not in a state that allows this
"""

from __future__ import annotations

from mimir.core.errors import MimirError

__all__ = ["JobNotFoundError", "JobStateError", "QueueError", "QueueUnavailableError"]


class QueueError(MimirError):
    """The queue could not do what was asked."""

    #: HTTP status the server answers with.
    http_status = 400


class QueueUnavailableError(QueueError):
    """Redis cannot be reached; the message says where and why."""

    http_status = 503


class JobNotFoundError(QueueError):
    """No job record with that id (it never existed, or it expired)."""

    http_status = 404

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} not found (unknown, or its record expired)")


class JobStateError(QueueError):
    """The job's status does not allow the operation."""

    http_status = 409
