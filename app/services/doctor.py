"""``mimir doctor`` and the console's Diagnose action: checks against a running cluster.

Where the figures come from:

- the API over HTTP (:class:`~mimir.app.services.api.ApiClient`): ``/health`` (reachable,
  version), ``GET /api/v1/diagnostics`` (token accepted; what the server reads from the
  queue's Redis — memory, persistence, heartbeats, streams, throughput, dead letter — and
  free space under its data directory). Redis is read by the server, never by the doctor:
  a Docker cluster's Redis is not published on the host, and the server's own view is what
  its enqueues see;
- the cluster backend, when the doctor drives one (``mimir doctor --project``, the console's
  Cluster panel): containers restarting, ``OOMKilled`` and near their memory limit (Docker),
  processes gone (local), free space under Redis's directory.

:func:`analyse` is pure (a snapshot in, findings out) so each rule is plain to read;
:func:`diagnose` gathers and calls it. No Qt here: the console and the CLI share it.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from mimir.app.cluster.base import ClusterBackend, ClusterError, ServiceStats
from mimir.app.cluster.instances import Instance
from mimir.app.services.api import ApiClient, ApiError, ApiUnreachable
from mimir.core import __version__
from mimir.core.diagnostics import DiskState, QueueSnapshot, StreamState, disk_state
from mimir.core.limits import default_limits

__all__ = [
    "ClusterFacts",
    "Finding",
    "Report",
    "Severity",
    "Thresholds",
    "analyse",
    "analyse_cluster",
    "diagnose",
    "format_report",
    "report_json",
]

Severity = Literal["error", "warning", "info"]
_RANK = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    """One thing wrong: how bad, what (``title``), the figures seen, and what to do."""

    severity: Severity
    check: str
    title: str
    seen: str
    action: str
    #: What it is about: a worker id, a queue, a container … (empty: the cluster).
    subject: str = ""


@dataclass(frozen=True)
class Thresholds:
    """Where a figure turns into a finding."""

    memory_warning: float = 0.75  # share of maxmemory / a container's limit
    memory_error: float = 0.90
    rtt_warning_ms: float = 100.0  # a Redis round trip
    clock_skew_ms: float = 1000.0  # a worker's clock against Redis's; leases need less
    backlog_target_s: float = 600.0  # a backlog that clears later is worth scaling for
    stalled_after_s: float = 60.0  # oldest waiting job, nothing finished meanwhile
    disk_error_bytes: int = 1 << 30
    disk_error_share: float = 0.05
    disk_warning_share: float = 0.10
    restart_window_s: float = 3600.0  # a container restarted longer ago is only a note
    #: The most workers ``mimir cluster scale`` accepts (MIMIR_MAX_WORKERS; ``diagnose``
    #: takes the backend's setting when it is not given).
    max_workers: int = 64


@dataclass
class ClusterFacts:
    """What the cluster backend tells about its containers or processes."""

    backend: str
    project: str
    instances: list[Instance] = field(default_factory=list)
    stats: list[ServiceStats] = field(default_factory=list)
    #: OOM kills the engine reported within the last hour, by container name.
    oom_events: dict[str, int] = field(default_factory=dict)
    #: When the facts were read (seconds since the epoch), for the instances' start times.
    now: float = field(default_factory=time.time)
    redis_disk: DiskState | None = None
    error: str = ""


@dataclass
class Report:
    target: str
    findings: list[Finding] = field(default_factory=list)
    #: The checks that ran (their names), whether or not they found anything.
    checks: list[str] = field(default_factory=list)
    server_version: str = ""
    snapshot: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        """0 nothing wrong, 1 warnings, 2 errors (``mimir doctor``'s exit status)."""
        if any(f.severity == "error" for f in self.findings):
            return 2
        return 1 if any(f.severity == "warning" for f in self.findings) else 0

    def counts(self) -> dict[str, int]:
        out = {"error": 0, "warning": 0, "info": 0}
        for finding in self.findings:
            out[finding.severity] += 1
        return out

    def summary(self) -> str:
        counts = self.counts()
        if not self.findings:
            return f"nothing wrong ({len(self.checks)} checks)"
        parts = [
            f"{n} {name}{'s' if n != 1 else ''}"
            for name, n in (("error", counts["error"]), ("warning", counts["warning"]))
            if n
        ]
        if counts["info"]:
            parts.append(f"{counts['info']} note{'s' if counts['info'] != 1 else ''}")
        return f"{', '.join(parts)} ({len(self.checks)} checks)"

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "exit_code": self.exit_code,
            "server_version": self.server_version,
            "checks": self.checks,
            "findings": [asdict(f) for f in self.findings],
            "snapshot": self.snapshot,
        }

    def sort(self) -> None:
        self.findings.sort(key=lambda f: (_RANK[f.severity], f.check, f.subject))


# ---------------------------------------------------------------------- formatting


def _mib(value: float) -> str:
    return f"{value / 1024 / 1024:.1f} MiB"


def _gib(value: float) -> str:
    return f"{value / 1024**3:.1f} GiB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _scale_command(workers: int, project: str) -> str:
    suffix = "" if project in ("", "mimir") else f" --project {project}"
    return f"mimir cluster scale {workers}{suffix}"


# ---------------------------------------------------------------------- the rules


def _redis_rules(snap: QueueSnapshot, t: Thresholds, out: list[Finding]) -> None:
    r = snap.redis
    if snap.rtt_ms > t.rtt_warning_ms:
        out.append(
            Finding(
                "warning",
                "redis.latency",
                "Redis answers the API slowly",
                f"PING round trip from the API {snap.rtt_ms:.0f} ms "
                f"(over {t.rtt_warning_ms:.0f} ms)",
                "Check the network between the API and Redis and Redis's load "
                "(`redis-cli --latency`, `INFO commandstats`); a Redis that swaps is slow too.",
                "redis",
            )
        )
    if r.maxmemory:
        share = r.used_memory / r.maxmemory
        refuses = r.maxmemory_policy == "noeviction"
        if share >= t.memory_warning:
            severity: Severity = "error" if share >= t.memory_error else "warning"
            consequence = (
                "once full it refuses new data: enqueue answers 503 (queue full), while "
                "workers go on draining the queue and recording outcomes (heartbeats and "
                "progress wait)"
                if refuses
                else f"policy {r.maxmemory_policy} evicts keys: job records and queue entries "
                "are lost"
            )
            out.append(
                Finding(
                    severity,
                    "redis.memory",
                    "Redis is close to its memory limit"
                    if share < 1
                    else "Redis is at its memory limit",
                    f"used {_mib(r.used_memory)} of maxmemory {_mib(r.maxmemory)} "
                    f"({share:.0%}), policy {r.maxmemory_policy}: {consequence}",
                    "Raise its limit: set MIMIR_REDIS_MAXMEMORY and restart Redis (a Redis "
                    "a backend starts takes maxmemory from it at each start; one you run "
                    "yourself: its own configuration), or `CONFIG SET maxmemory …` for now "
                    "(lost at its next restart), leaving room under the container's memory "
                    "limit; lower MIMIR_JOB_TTL so ended jobs expire sooner, and clear the "
                    "dead letter; keep maxmemory-policy noeviction.",
                    "redis",
                )
            )
    if r.evicted_keys:
        out.append(
            Finding(
                "error",
                "redis.memory",
                "Redis has evicted keys",
                f"evicted_keys {r.evicted_keys}, maxmemory-policy {r.maxmemory_policy}",
                "Evicted keys are lost jobs and records: set `maxmemory-policy noeviction` "
                "and give Redis the memory it needs.",
                "redis",
            )
        )
    if not r.aof_enabled and not r.rdb_enabled:
        out.append(
            Finding(
                "warning",
                "redis.persistence",
                "Redis keeps nothing on disk",
                "appendonly no and no save rules",
                "A restart of Redis loses every queued job: turn AOF on "
                "(`appendonly yes`, as `mimir cluster up` starts it).",
                "redis",
            )
        )
    for name, status in (
        ("aof_last_write_status", r.aof_last_write_status if r.aof_enabled else "ok"),
        ("rdb_last_bgsave_status", r.rdb_last_bgsave_status),
        ("aof_last_bgrewrite_status", r.aof_last_bgrewrite_status),
    ):
        if status and status != "ok":
            out.append(
                Finding(
                    "error" if name != "aof_last_bgrewrite_status" else "warning",
                    "redis.persistence",
                    "Redis failed to write to disk",
                    f"{name}: {status} (dir {r.dir or '?'})",
                    "Look at Redis's log (`mimir cluster logs redis`): usually the disk under "
                    "its directory is full or read-only. Redis refuses writes after a failed "
                    "fsync until one succeeds.",
                    "redis",
                )
            )


def _worker_rules(snap: QueueSnapshot, t: Thresholds, out: list[Finding]) -> None:
    waiting = sum(s.lag for s in snap.streams)
    if not snap.workers:
        out.append(
            Finding(
                "error" if waiting else "warning",
                "workers.registered",
                "No worker is heartbeating",
                f"0 live workers; {_plural(waiting, 'job')} waiting",
                "Start workers: `mimir cluster up` / `mimir cluster scale N`, or `mimir worker` "
                "on a host that reaches Redis; if they run, read their logs "
                "(`mimir cluster logs worker`) — they may not reach Redis (REDIS_URL).",
            )
        )
    for w in snap.workers:
        # The offset is measured around one TIME call: it is known to within half that
        # round trip (a worker whose event loop was busy reads its clock late), so only
        # an offset beyond the limit by more than that is a skew.
        uncertainty = (w.redis_rtt_ms or 0.0) / 2
        if w.clock_offset_ms is not None and abs(w.clock_offset_ms) - uncertainty > t.clock_skew_ms:
            ahead = "ahead of" if w.clock_offset_ms > 0 else "behind"
            out.append(
                Finding(
                    "error",
                    "workers.clock",
                    "A worker's clock is off Redis's",
                    f"{w.worker_id} ({w.hostname}) is {abs(w.clock_offset_ms) / 1000:.1f} s "
                    f"{ahead} Redis's clock (± {uncertainty / 1000:.1f} s; limit "
                    f"{t.clock_skew_ms / 1000:.0f} s)",
                    "Leases, retry delays and throughput are timed across hosts: run NTP on "
                    "the worker's host (`timedatectl set-ntp true`, chrony) and check nothing "
                    "fakes its time (faketime, a container's time namespace).",
                    w.worker_id,
                )
            )
        if w.redis_rtt_ms is not None and w.redis_rtt_ms > t.rtt_warning_ms:
            out.append(
                Finding(
                    "warning",
                    "workers.latency",
                    "A worker reaches Redis slowly",
                    f"{w.worker_id}: TIME round trip {w.redis_rtt_ms:.0f} ms "
                    f"(over {t.rtt_warning_ms:.0f} ms)",
                    "Check the network between that host and Redis, and the host's load "
                    "(a worker starved of CPU answers late too).",
                    w.worker_id,
                )
            )
    live = {w.worker_id for w in snap.workers}
    orphaned: dict[str, list[tuple[StreamState, int, int]]] = {}
    for stream in snap.streams:
        for consumer in stream.consumers:
            if consumer.pending and consumer.name not in live:
                orphaned.setdefault(consumer.name, []).append(
                    (stream, consumer.pending, consumer.idle_ms)
                )
    for name, held in sorted(orphaned.items()):
        count = sum(n for _, n, _ in held)
        idle = min(i for _, _, i in held) / 1000
        queues = sorted({s.queue for s, _, _ in held})
        servers = [w.worker_id for w in snap.workers if set(w.queues) & set(queues)]
        takeover = (
            f"a live worker of {', '.join(queues)} reclaims them once their lease "
            "(MIMIR_WORKER_LEASE, 30 s) runs out"
            if servers
            else f"no live worker serves {', '.join(queues)}, so nothing will take them over"
        )
        out.append(
            Finding(
                "error",
                "workers.gone",
                "Jobs are pending on a worker whose heartbeat is gone",
                f"{_plural(count, 'job')} held by {name}, silent for {_duration(idle)}; {takeover}",
                "If the process still exists it is frozen (SIGSTOP, a paused container, a "
                "swapping host): kill it or `mimir cluster restart worker`; its log says why "
                "it stopped (`mimir cluster logs worker`). Start a worker for the queue if "
                "none serves it.",
                name,
            )
        )


def _queue_rules(snap: QueueSnapshot, t: Thresholds, project: str, out: list[Finding]) -> None:
    by_queue: dict[str, list[StreamState]] = {}
    for stream in snap.streams:
        by_queue.setdefault(stream.queue, []).append(stream)
    served = {q for w in snap.workers for q in w.queues}
    running_total = sum(s.pending for s in snap.streams)
    rate = snap.throughput.per_second
    workers = len(snap.workers)
    slots = sum(w.concurrency for w in snap.workers)
    live = {w.worker_id for w in snap.workers}
    # Jobs delivered to live workers and not yet acknowledged (a heartbeat's job list is
    # a sample taken between jobs as often as during one).
    busy = sum(c.pending for s in snap.streams for c in s.consumers if c.name in live)
    for queue, streams in sorted(by_queue.items()):
        waiting = sum(s.lag for s in streams)
        pending = sum(s.pending for s in streams)
        ages = [s.oldest_waiting_s for s in streams if s.oldest_waiting_s is not None]
        oldest = max(ages) if ages else 0.0
        per_priority = ", ".join(f"{s.priority} {s.lag}" for s in streams if s.lag)
        if not waiting:
            continue
        if queue not in served:
            out.append(
                Finding(
                    "error",
                    "queues.unserved",
                    "Jobs wait in a queue no worker serves",
                    f"{_plural(waiting, 'job')} in '{queue}' ({per_priority}), oldest "
                    f"{_duration(oldest)}; live workers serve: "
                    f"{', '.join(sorted(served)) or 'nothing'}",
                    f"Start a worker for it (`mimir worker --queues {queue}`, "
                    "MIMIR_WORKER_QUEUES), or enqueue to a queue that is served.",
                    queue,
                )
            )
            continue
        # The throughput counters are per cluster; a queue's share is its share of the
        # running jobs (all of it with one queue).
        share = pending / running_total if running_total else 1 / max(1, len(served))
        queue_rate = rate * share if len(served) > 1 else rate
        seen = (
            f"{_plural(waiting, 'job')} wait in '{queue}' ({per_priority}), oldest "
            f"{_duration(oldest)}; {snap.throughput.ended} ended in the last "
            f"{snap.throughput.window_s} s ({queue_rate:.2f}/s); "
            f"{_plural(workers, 'worker')}, {busy} of {slots} slots busy"
        )
        if queue_rate <= 0:
            if oldest >= t.stalled_after_s:
                out.append(
                    Finding(
                        "warning",
                        "queues.stalled",
                        "The backlog is not moving",
                        seen,
                        "Nothing ended for a minute while jobs wait: the running jobs are "
                        "long or stuck (Jobs panel, `mimir cluster logs worker`); more "
                        "workers take the waiting ones (`mimir cluster scale N`).",
                        queue,
                    )
                )
            continue
        eta = waiting / queue_rate
        if eta <= t.backlog_target_s:
            continue
        target = max(workers + 1, math.ceil(workers * eta / t.backlog_target_s))
        target = min(target, t.max_workers)
        if workers and target > workers:
            faster = eta * workers / target
            advice = (
                f"At the current rate the backlog clears in {_duration(eta)}; "
                f"`{_scale_command(target, project)}` would take ~{_duration(faster)}."
            )
            if slots and busy < slots:
                advice += (
                    f" Only {busy} of {slots} slots are busy, though: slow jobs, not too few "
                    "workers, may be the cause."
                )
        else:
            advice = (
                f"At the current rate the backlog clears in {_duration(eta)}; the cluster "
                f"is at MIMIR_MAX_WORKERS ({t.max_workers}): add hosts or make jobs cheaper."
            )
        out.append(Finding("warning", "queues.backlog", "The queue is backed up", seen, advice,
                           queue))  # fmt: skip


def _dead_rules(snap: QueueSnapshot, out: list[Finding]) -> None:
    dead = snap.dead
    if dead.recent:
        newest = _duration(dead.newest_age_s or 0)
        count = f"{dead.recent} or more" if dead.recent_capped else str(dead.recent)
        out.append(
            Finding(
                "warning",
                "dead_letter.growing",
                "Jobs are going to the dead letter",
                f"{count} added in the last {_duration(dead.window_s)} "
                f"({dead.total} in all); newest {newest} ago: {dead.newest_error or '?'}",
                "Read the errors (console: Jobs → Dead letter; `GET /api/v1/queue/"
                "dead-letter`), fix the cause, then retry them from there. A job that "
                "kills its worker (out of memory) lands here after its deliveries run out.",
            )
        )


def _disk_rule(disk: DiskState, what: str, t: Thresholds, out: list[Finding]) -> None:
    if not disk.total_bytes:
        return
    share = disk.free_bytes / disk.total_bytes
    nearly_full = share < t.disk_warning_share and disk.free_bytes < t.disk_error_bytes
    if share < t.disk_error_share or nearly_full:
        severity: Severity = "error"
    elif share < t.disk_warning_share:
        severity = "warning"
    else:
        return
    out.append(
        Finding(
            severity,
            "disk.free",
            f"Little disk space left under {what}",
            f"{disk.path}: {_gib(disk.free_bytes)} free of {_gib(disk.total_bytes)} ({share:.0%})",
            "Free space there (old outputs, logs, `docker system prune`), or move it to a "
            "larger volume; Redis stops accepting writes when its AOF cannot be written.",
            disk.path,
        )
    )


def analyse(
    snap: QueueSnapshot,
    disks: list[DiskState] | None = None,
    *,
    thresholds: Thresholds | None = None,
    project: str = "mimir",
) -> list[Finding]:
    """Findings from what the server read (pure: figures in, findings out)."""
    t = thresholds or Thresholds()
    out: list[Finding] = []
    _redis_rules(snap, t, out)
    _worker_rules(snap, t, out)
    _queue_rules(snap, t, project, out)
    _dead_rules(snap, out)
    for disk in disks or []:
        _disk_rule(disk, "the server's data directory", t, out)
    return out


def analyse_cluster(facts: ClusterFacts, thresholds: Thresholds | None = None) -> list[Finding]:
    """Findings about the containers (Docker) or processes (local) themselves."""
    t = thresholds or Thresholds()
    out: list[Finding] = []
    restart = "mimir cluster restart {name}" + (
        "" if facts.project in ("", "mimir") else f" --project {facts.project}"
    )
    for inst in facts.instances:
        if inst.state == "stale":
            out.append(
                Finding(
                    "error",
                    "processes.gone",
                    "A process of the cluster is gone",
                    f"{inst.name} (pid {inst.ident}) is recorded but no longer runs",
                    f"Read why it ended (`mimir cluster logs {inst.name}`), then `mimir cluster "
                    "up` starts what is missing (a killed Redis keeps its data).",
                    inst.name,
                )
            )
            continue
        ooms = facts.oom_events.get(inst.name, 0)
        if inst.oom_killed or ooms:
            out.append(
                Finding(
                    "error",
                    "containers.oom",
                    "A container ran out of memory",
                    f"{inst.name}: "
                    + ("OOMKilled in its state" if inst.oom_killed else "")
                    + (", " if inst.oom_killed and ooms else "")
                    + (f"{_plural(ooms, 'OOM kill')} in the last hour" if ooms else "")
                    + f"; restarted {_plural(inst.restarts, 'time')}",
                    "A step needed more memory than the container may use: raise the limit "
                    "(topology worker_memory, `mem_limit` in the compose file; 512m by "
                    "default), lower WORKER_CONCURRENCY so fewer jobs share it, or make the "
                    "step stream its data. The job that did it is redelivered and, after its "
                    "deliveries, dead-lettered.",
                    inst.name,
                )
            )
        elif inst.state == "restarting" or inst.restarts:
            # RestartCount only grows while the container lives: one restart weeks ago must
            # not fail every run from then on. Recent (or unknown) restarts are a warning,
            # older ones a note.
            since = facts.now - inst.started_at if inst.started_at is not None else None
            recent = since is None or since < t.restart_window_s
            severity: Severity = (
                "error" if inst.state == "restarting" else "warning" if recent else "info"
            )
            out.append(
                Finding(
                    severity,
                    "containers.restarting",
                    "A container keeps restarting"
                    if inst.state == "restarting"
                    else "A container has restarted",
                    f"{inst.name}: state {inst.state}, restarted "
                    f"{_plural(inst.restarts, 'time')}"
                    + (
                        f", last started {_duration(max(0.0, since))} ago"
                        if since is not None
                        else ""
                    )
                    + f", last exit code {inst.exit_code}",
                    f"Read its last lines (`mimir cluster logs {inst.name} --tail 50`); exit "
                    "code 137 is a kill (memory), 2 a configuration error.",
                    inst.name,
                )
            )
        elif inst.state not in ("running", "") and inst.service in ("redis", "backend"):
            out.append(
                Finding(
                    "error",
                    "containers.stopped",
                    "A service of the cluster is not running",
                    f"{inst.name}: {inst.state} (exit code {inst.exit_code})",
                    f"`mimir cluster up` starts it again; `{restart.format(name=inst.service)}`"
                    " restarts it.",
                    inst.name,
                )
            )
    for st in facts.stats:
        if st.memory_limit_bytes and st.memory_bytes / st.memory_limit_bytes >= t.memory_error:
            out.append(
                Finding(
                    "warning",
                    "containers.memory",
                    "A container is close to its memory limit",
                    f"{st.name}: {_mib(st.memory_bytes)} of {_mib(st.memory_limit_bytes)} "
                    f"({st.memory_bytes / st.memory_limit_bytes:.0%})",
                    "The kernel kills it at the limit: raise the limit or lower "
                    "WORKER_CONCURRENCY before it is OOM-killed.",
                    st.name,
                )
            )
    if facts.redis_disk is not None:
        _disk_rule(facts.redis_disk, "Redis's directory", t, out)
    return out


# ---------------------------------------------------------------------- gathering


async def _cluster_facts(backend: ClusterBackend) -> ClusterFacts:
    facts = ClusterFacts(backend=backend.backend, project=backend.project)
    instances = getattr(backend, "instances", None)
    try:
        if instances is not None:
            facts.instances = list(await instances())
        facts.stats = await backend.stats()
        oom_events = getattr(backend, "oom_events", None)
        if oom_events is not None:
            facts.oom_events = await oom_events(3600.0)
    except ClusterError as exc:
        facts.error = str(exc)
    return facts


async def _redis_disk(backend: ClusterBackend, directory: str) -> DiskState | None:
    if not directory:
        return None
    usage = getattr(backend, "disk_usage", None)
    try:
        if usage is not None:
            result: DiskState | None = await usage("redis", directory)
            return result
        if backend.backend == "local":
            return await asyncio.to_thread(disk_state, directory)
    except ClusterError:
        return None
    return None


async def diagnose(
    api: ApiClient,
    backend: ClusterBackend | None = None,
    *,
    thresholds: Thresholds | None = None,
) -> Report:
    """Run every check against the API ``api`` points at and, when given, the cluster
    ``backend`` drives; never raises for what it finds (an unreachable API is a finding)."""
    if thresholds is None:
        settings = getattr(backend, "settings", None)
        limits = settings.limits if settings is not None else default_limits()
        thresholds = replace(Thresholds(), max_workers=limits.max_workers)
    t = thresholds
    project = backend.project if backend is not None else "mimir"
    report = Report(target=api.base_url)
    out = report.findings
    report.checks.append("api.reachable")
    diagnostics: dict[str, Any] | None = None
    try:
        health = await api.health()
        report.server_version = str(health.get("version", ""))
        report.checks += ["api.version", "api.token"]
        if report.server_version and report.server_version != __version__:
            out.append(
                Finding(
                    "warning",
                    "api.version",
                    "The server runs another version than this console",
                    f"server {report.server_version}, console {__version__}",
                    "Rebuild the images (`mimir cluster build`) and restart "
                    "(`mimir cluster up`), or upgrade this install.",
                )
            )
        diagnostics = await api.request("GET", "/api/v1/diagnostics", timeout=15.0)
    except ApiUnreachable as exc:
        out.append(
            Finding(
                "error",
                "api.reachable",
                "The API does not answer",
                str(exc),
                "Is the cluster up (`mimir cluster status`)? Read the server's log "
                "(`mimir cluster logs backend`); a port already taken makes `up` fail with the "
                "process that holds it.",
            )
        )
    except ApiError as exc:
        if exc.status in (401, 403):
            out.append(
                Finding(
                    "error",
                    "api.token",
                    "The API refuses the token",
                    f"{exc.status}: {exc}",
                    "Give the server's MIMIR_API_TOKEN (profile token in the console, "
                    "`--token` or MIMIR_API_TOKEN for `mimir doctor`).",
                )
            )
        elif exc.status == 404:
            out.append(
                Finding(
                    "warning",
                    "api.version",
                    "The server has no diagnostics endpoint",
                    f"GET /api/v1/diagnostics: 404 (server {report.server_version or '?'})",
                    "Upgrade the server to this version to check Redis, workers and queues.",
                )
            )
        else:
            out.append(
                Finding("error", "api.reachable", "The API failed its diagnostics call",
                        f"{exc.status}: {exc}", "Read the server's log "
                        "(`mimir cluster logs backend`).")
            )  # fmt: skip
    if diagnostics is not None:
        report.checks += ["redis.reachable", "disk.free"]
        disks = [DiskState.model_validate(d) for d in diagnostics.get("disks", [])]
        if diagnostics.get("queue") is None:
            out.append(
                Finding(
                    "error",
                    "redis.reachable",
                    "The API cannot reach Redis",
                    str(diagnostics.get("redis_error") or "no answer"),
                    "Is Redis running (`mimir cluster status`; `mimir cluster up` starts a "
                    "stopped one)? Read its log (`mimir cluster logs redis`) and check the "
                    "server's REDIS_URL.",
                    "redis",
                )
            )
            for disk in disks:
                _disk_rule(disk, "the server's data directory", t, out)
        else:
            snap = QueueSnapshot.model_validate(diagnostics["queue"])
            report.snapshot = snap.model_dump()
            report.checks += [
                "redis.latency",
                "redis.memory",
                "redis.persistence",
                "workers.registered",
                "workers.clock",
                "workers.latency",
                "workers.gone",
                "queues.unserved",
                "queues.backlog",
                "queues.stalled",
                "dead_letter.growing",
            ]
            out.extend(analyse(snap, disks, thresholds=t, project=project))
            if backend is not None:
                facts_disk = await _redis_disk(backend, snap.redis.dir)
                if facts_disk is not None:
                    _disk_rule(facts_disk, "Redis's directory", t, out)
    if backend is not None:
        report.checks += (
            ["containers.oom", "containers.restarting", "containers.memory", "containers.stopped"]
            if backend.backend == "docker"
            else ["processes.gone"]
        )
        facts = await _cluster_facts(backend)
        if facts.error:
            out.append(
                Finding(
                    "warning",
                    "cluster.control",
                    "The cluster backend could not be asked",
                    facts.error,
                    "Check the Docker engine (`docker info`, DOCKER_HOST) or the local state "
                    "directory (MIMIR_STATE_DIR).",
                )
            )
        out.extend(analyse_cluster(facts, t))
    report.sort()
    return report


def format_report(report: Report) -> str:
    """The report as ``mimir doctor`` prints it."""
    lines = [f"mimir doctor: {report.target} (server {report.server_version or '?'})"]
    for f in report.findings:
        subject = f" [{f.subject}]" if f.subject else ""
        lines.append(f"{f.severity.upper():7} {f.check}{subject}: {f.title}")
        lines.append(f"        seen: {f.seen}")
        lines.append(f"        do:   {f.action}")
    lines.append(report.summary())
    return "\n".join(lines)


def report_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, default=str)
