"""The job queue on Redis Streams: producer (:class:`JobQueue`), consumer
(:class:`QueueConsumer`, used by workers), the job record and key names.

Redis errors become :class:`QueueError` subclasses on the producer side and reach the
worker as they are on the consumer side (see :mod:`mimir.core.queue.errors`)."""

from __future__ import annotations

from mimir.core.queue.client import JobPage, JobQueue
from mimir.core.queue.connection import connect
from mimir.core.queue.consumer import Delivery, Outcome, QueueConsumer, retry_delay
from mimir.core.queue.errors import (
    JobNotFoundError,
    JobStateError,
    QueueAuthError,
    QueueCommandError,
    QueueError,
    QueueUnavailableError,
    WorkerNotFoundError,
)
from mimir.core.queue.keys import GROUP, PRIORITIES, QueueKeys
from mimir.core.queue.models import (
    FINAL_STATUSES,
    DeadLetterEntry,
    JobOptions,
    JobRecord,
    JobSpec,
    JobStatus,
    PoolFigures,
    Priority,
    Progress,
    QueueStatus,
    WaitResult,
    WorkerInfo,
)

__all__ = [
    "FINAL_STATUSES",
    "GROUP",
    "PRIORITIES",
    "DeadLetterEntry",
    "Delivery",
    "JobNotFoundError",
    "JobOptions",
    "JobPage",
    "JobQueue",
    "JobRecord",
    "JobSpec",
    "JobStateError",
    "JobStatus",
    "Outcome",
    "PoolFigures",
    "Priority",
    "Progress",
    "QueueAuthError",
    "QueueCommandError",
    "QueueConsumer",
    "QueueError",
    "QueueKeys",
    "QueueStatus",
    "QueueUnavailableError",
    "WaitResult",
    "WorkerInfo",
    "WorkerNotFoundError",
    "connect",
    "retry_delay",
]
