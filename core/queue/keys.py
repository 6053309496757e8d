"""Every Redis key and channel name the queue uses, built in one place.

All names start with the configured prefix (``MIMIR_KEY_PREFIX``, default ``mimir:``)::

    {p}job:{id}                 hash    the job record (+ payload); expires after job_ttl
    {p}done:{id}                list    one token pushed when the job ends (wakes waiters)
    {p}idem:{key}               string  idempotency key -> job id
    {p}stream:{queue}:{prio}    stream  ready jobs of one pool and priority (consumer group)
    {p}scheduled                zset    delayed jobs and retries, scored by due time (ms)
    {p}dead                     stream  dead-letter entries (job id, error, time)
    {p}jobs                     zset    job index by enqueue time (ms), for listing
    {p}queues                   set     pool names seen by enqueue
    {p}totals                   hash    jobs ended, by final status
    {p}rate:{second}            hash    jobs ended in one second, by final status
    {p}duration                 hash    job duration histogram (bucket -> count, sum, count)
    {p}outcomes                 stream  one entry per job that reached a final status,
                                        written with the status change: job, record
                                        (JSON), detail (the worker's steps, logs and
                                        artifacts as JSON, or ""); the server's run ingest
                                        reads it (group ``runstore``). Capped near
                                        OUTCOMES_MAXLEN entries: a server away for that
                                        many job ends loses the oldest outcomes
    {p}log:{id}                 stream  a running job's log lines (t, level, step, msg),
                                        written by its worker in batches; expires after
                                        job_ttl
    {p}worker:{id}              hash    a live worker's heartbeat (expires)
    {p}metrics:jobs             hash    workers' attempts by pool, queue, outcome; and
    {p}metrics:job_time         hash    their durations, by pool, queue, pipeline;
    {p}metrics:step_time        hash    step durations, by pool, plugin, status (all
                                        added with the heartbeats: see
                                        :mod:`mimir.core.queue.metrics`)
    {p}metrics:pipelines        set     pipeline / plugin label values admitted
    {p}metrics:plugins          set     (capped at metrics.LABEL_CAP each)
    {p}workers                  zset    worker ids by last heartbeat
    {p}control:{id}             string  ``drain`` or ``stop`` asked of a live worker; read
                                        (and deleted) with its next heartbeat; expires
    {p}events                   channel job state changes (JSON)
    {p}cancel                   channel ids of running jobs asked to cancel

The Lua scripts spell no key names: callers pass every key they can name in ``KEYS``
(and the ``job_prefix``/``done_prefix`` for the records a script finds as it runs; see
:mod:`mimir.core.queue.protocol` for the keys left undeclared).

On a Redis Cluster all of these must hash to one slot: the prefix carries a hash tag
(:func:`hash_tagged`: ``mimir:`` -> ``{mimir}:``), applied by the settings for a
``redis+cluster://`` URL and required by :class:`~mimir.core.queue.JobQueue` and
:class:`~mimir.core.queue.QueueConsumer` (:func:`require_hash_tag`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "GROUP",
    "OUTCOMES_MAXLEN",
    "PRIORITIES",
    "QueueKeys",
    "hash_tag",
    "hash_tagged",
    "require_hash_tag",
]

#: Name of the consumer group every worker joins on every stream.
GROUP = "workers"

#: Approximate cap (``XADD MAXLEN ~``) of the outcome stream, in entries.
OUTCOMES_MAXLEN = 1_000_000

#: Priorities, highest first.
PRIORITIES: tuple[str, ...] = ("high", "normal", "low")


def hash_tag(prefix: str) -> str | None:
    """The hash tag of keys starting with ``prefix`` (the text inside its first ``{…}``,
    as Redis Cluster reads a key), or ``None`` when the prefix fixes none: no ``{``, no
    ``}`` after it, or ``{}``. Keys made from a prefix with a tag all hash to one slot,
    whatever follows (ids, queue names and idempotency keys with braces included: the
    tag is a key's *first* ``{…}``)."""
    start = prefix.find("{")
    if start < 0:
        return None
    end = prefix.find("}", start + 1)
    if end < 0 or end == start + 1:
        return None
    return prefix[start + 1 : end]


def hash_tagged(prefix: str) -> str:
    """``prefix`` made to put every key in one Redis Cluster slot: unchanged when it
    has a hash tag already (:func:`hash_tag`), else wrapped: ``mimir:`` -> ``{mimir}:``,
    ``app:q:`` -> ``{app:q}:``, ``x`` -> ``{x}:``. Idempotent. Raises ``ValueError`` for an
    empty prefix (nothing to tag); a prefix that opens a tag it never closes, or has an
    empty one, is wrapped whole (``a{b:`` -> ``{a{b}:``, whose tag is ``a{b``)."""
    if hash_tag(prefix) is not None:
        return prefix
    core = prefix.rstrip(":")
    if not core:
        raise ValueError(
            f"MIMIR_KEY_PREFIX {prefix!r} cannot be given a Redis Cluster hash tag: it is empty"
        )
    return "{" + core + "}:"


def require_hash_tag(redis: object, prefix: str) -> None:
    """Refuse (``ValueError``) a Redis Cluster client with a prefix that has no hash tag:
    the queue's scripts need every key of a prefix in one slot. Settings apply
    :func:`hash_tagged` for a ``redis+cluster://`` URL; this catches direct callers."""
    from mimir.core.queue.connection import is_cluster

    if is_cluster(redis) and hash_tag(prefix) is None:
        raise ValueError(
            f"key prefix {prefix!r} has no hash tag: on a Redis Cluster every key of the "
            f"queue must hash to one slot; use {hash_tagged(prefix)!r} "
            "(Settings.from_env does this for a redis+cluster:// URL)"
        )


@dataclass(frozen=True)
class QueueKeys:
    """Key names under ``prefix``."""

    prefix: str = "mimir:"

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}job:"

    @property
    def done_prefix(self) -> str:
        return f"{self.prefix}done:"

    def job(self, job_id: str) -> str:
        return f"{self.job_prefix}{job_id}"

    def done(self, job_id: str) -> str:
        return f"{self.done_prefix}{job_id}"

    @property
    def idempotency_prefix(self) -> str:
        return f"{self.prefix}idem:"

    def idempotency(self, key: str) -> str:
        return f"{self.idempotency_prefix}{key}"

    def stream(self, queue: str, priority: str) -> str:
        return f"{self.prefix}stream:{queue}:{priority}"

    @property
    def scheduled(self) -> str:
        return f"{self.prefix}scheduled"

    @property
    def dead(self) -> str:
        return f"{self.prefix}dead"

    @property
    def index(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def queues(self) -> str:
        return f"{self.prefix}queues"

    @property
    def totals(self) -> str:
        return f"{self.prefix}totals"

    def rate(self, second: int) -> str:
        return f"{self.prefix}rate:{second}"

    @property
    def outcomes(self) -> str:
        return f"{self.prefix}outcomes"

    @property
    def log_prefix(self) -> str:
        return f"{self.prefix}log:"

    def log(self, job_id: str) -> str:
        return f"{self.log_prefix}{job_id}"

    def ending(self, now_ms: int) -> dict[str, str]:
        """The keys every script that may end jobs writes, by their script names: the
        dead letter, the totals, this second's rate and the outcome stream."""
        return {
            "dead": self.dead,
            "totals": self.totals,
            "rate": self.rate(now_ms // 1000),
            "outcomes": self.outcomes,
        }

    @property
    def duration(self) -> str:
        return f"{self.prefix}duration"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    @property
    def metrics_jobs(self) -> str:
        return f"{self.prefix}metrics:jobs"

    @property
    def metrics_job_time(self) -> str:
        return f"{self.prefix}metrics:job_time"

    @property
    def metrics_step_time(self) -> str:
        return f"{self.prefix}metrics:step_time"

    @property
    def metrics_pipelines(self) -> str:
        return f"{self.prefix}metrics:pipelines"

    @property
    def metrics_plugins(self) -> str:
        return f"{self.prefix}metrics:plugins"

    def control(self, worker_id: str) -> str:
        return f"{self.prefix}control:{worker_id}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def cancel(self) -> str:
        return f"{self.prefix}cancel"
