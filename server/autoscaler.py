"""The server's autoscaler: one loop per server, one acting per cluster.

Every server runs an :class:`Autoscaler`; only the holder of the Redis lease
``{p}autoscaler:lease`` (:class:`~mimir.server.lease.RedisLease`, its owner this server's
:attr:`Autoscaler.server_id`) evaluates and acts. Every ``period`` seconds (the cluster
file's ``autoscaler.period`` from ``MIMIR_POOLS``, default 5; ``MIMIR_AUTOSCALE_PERIOD``
overrides) the holder reads the policies, its remembered state and every pool's figures
(:meth:`JobQueue.pool_figures`: a couple of pipelined round trips), asks
:func:`mimir.core.autoscale.evaluate` per autoscaled pool, and for each change:

- records the decision (time, pool, from, to, reason, figures) in the capped stream
  ``{p}autoscaler:decisions`` and publishes it on ``{p}autoscaler:events``, which every
  server's :class:`~mimir.server.live.LiveHub` relays as a ``scale`` event;
- runs ``mimir cluster scale --pool POOL N --project P --backend B`` (as ``python -m
  mimir.core.cli``: the package has no ``__main__``) as an asyncio subprocess (one in
  flight per pool; ``MIMIR_AUTOSCALE_COMMAND`` replaces the ``python -m mimir.core.cli
  cluster scale`` part, for tests); its end (ok, or failed with the tail of its stderr)
  is recorded in the stream as a ``result`` and published too.

Keys (built here from ``settings.key_prefix``; the queue's own keys are in
:class:`~mimir.core.queue.keys.QueueKeys`)::

    {p}autoscaler:lease      string  the acting server's id (SET NX PX, renewed each period)
    {p}autoscaler:policies   hash    pool -> its PoolSpec as JSON (queues, min, max, policy)
    {p}autoscaler:seed       string  digest of the MIMIR_POOLS the policies were seeded from
    {p}autoscaler:state      hash    pool -> JSON: last change, low since, wanted replicas,
                                     acting, last error
    {p}autoscaler:decisions  stream  decisions and their results (MAXLEN ~ DECISIONS_MAXLEN)
    {p}autoscaler:events     channel the same, as they happen (relayed as `scale` events)
    {p}autoscaler:counts     hash    ["pool","up"|"down"] -> decisions taken (for
                                     ``mimir_autoscaler_decisions_total``)

The policies are seeded from ``MIMIR_POOLS`` when it differs from the last seed (so a
policy changed over the API survives a restart with the same cluster file); without
``MIMIR_POOLS`` and nothing stored, the cluster is :func:`default_cluster`. The replicas a
pool runs now are the wanted count while a change settles (:data:`SETTLE` seconds, or
until the heartbeats show it), else its live workers that are not draining.

A server without ``MIMIR_CLUSTER_BACKEND`` (or ``MIMIR_PROJECT``) was not started by
``mimir cluster up``: it does not know how to scale, so its autoscaler is off, says so in
one log line and in ``GET /api/v1/autoscaler``, and never takes the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shlex
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from mimir.core.autoscale import PoolState, evaluate
from mimir.core.pools import (
    AutoscalePolicy,
    AutoscalerConfig,
    ClusterFile,
    ClusterFileError,
    PoolSpec,
    default_cluster,
    pools_from_env,
)
from mimir.core.queue import JobQueue, PoolFigures
from mimir.core.settings import Settings
from mimir.server.lease import RedisLease

__all__ = [
    "COMMAND_ENV",
    "PERIOD_ENV",
    "Autoscaler",
    "AutoscalerKeys",
    "AutoscalerView",
    "PoolList",
    "PoolView",
    "start",
]

logger = logging.getLogger(__name__)

#: Seconds between evaluations (overrides the cluster file's ``autoscaler.period``).
PERIOD_ENV = "MIMIR_AUTOSCALE_PERIOD"
#: The command that scales a pool, before ``--pool P N --project P --backend B``
#: (split like a shell would; default ``<python> -m mimir.core.cli cluster scale``). For
#: tests: it must take those arguments and exit 0 once the pool is scaled.
COMMAND_ENV = "MIMIR_AUTOSCALE_COMMAND"
#: Seconds a change is taken as done before the heartbeats show it.
SETTLE = 30.0
#: Decisions and results kept in the stream (approximately).
DECISIONS_MAXLEN = 1000
#: Decisions ``GET /api/v1/autoscaler`` shows, newest first.
DECISIONS_SHOWN = 50
#: Seconds one scaling command may take (a scale-down drains its workers first).
ACT_TIMEOUT = 900.0
#: Characters of a failed command's stderr kept with its result.
STDERR_TAIL = 2000
#: Seconds of processed-job samples kept for ``jobs_per_sec``.
RATE_WINDOW = 30.0

FiguresReader = Callable[[Mapping[str, Sequence[str]]], Awaitable[Mapping[str, Any]]]


#: Set by the Docker backend in the server's container when it was given the engine
#: (:data:`mimir.app.cluster.docker_backend.INSIDE_ENV`; the server may not import it).
DOCKER_INSIDE = "MIMIR_DOCKER_INSIDE"


@dataclass(frozen=True)
class AutoscalerKeys:
    """The autoscaler's Redis keys under ``prefix``."""

    prefix: str = "mimir:"

    @property
    def lease(self) -> str:
        return f"{self.prefix}autoscaler:lease"

    @property
    def policies(self) -> str:
        return f"{self.prefix}autoscaler:policies"

    @property
    def seed(self) -> str:
        return f"{self.prefix}autoscaler:seed"

    @property
    def state(self) -> str:
        return f"{self.prefix}autoscaler:state"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}autoscaler:decisions"

    @property
    def counts(self) -> str:
        return f"{self.prefix}autoscaler:counts"

    @property
    def events(self) -> str:
        return f"{self.prefix}autoscaler:events"


# -- what the API shows ----------------------------------------------------------------


class Leader(BaseModel):
    owner: str
    expires_in_s: float


class Replicas(BaseModel):
    #: What the autoscaler (or the last scale) asked for; the running count if nothing.
    wanted: int
    #: Live workers of the pool that are not draining (from their heartbeats).
    running: int


class PoolView(BaseModel):
    """One pool in ``GET /api/v1/autoscaler``."""

    queues: list[str]
    #: ``None``: the pool is scaled by hand only.
    policy: AutoscalePolicy | None
    min: int
    max: int
    replicas: Replicas
    figures: PoolFigures
    #: ISO time of the autoscaler's last change of this pool.
    last_change: str | None = None
    #: A scaling command of this pool is running.
    acting: bool = False
    #: Why the last scaling command failed (``None``: it did not).
    last_error: str | None = None


class DecisionView(BaseModel):
    id: str
    time: str
    pool: str
    #: Replicas before and after (``from`` in JSON).
    from_: int = Field(alias="from", serialization_alias="from")
    to: int
    reason: str
    figures: PoolFigures
    server: str
    #: ``None`` while its command runs; ``ok`` or ``failed`` once it ended.
    outcome: str | None = None
    error: str | None = None

    model_config = {"populate_by_name": True}


class AutoscalerView(BaseModel):
    """``GET /api/v1/autoscaler``."""

    enabled: bool
    #: Why it is off (``None`` when on).
    reason: str | None
    #: This server's id (the ``leader.owner`` of the server that acts).
    server: str
    leader: Leader | None
    period: float
    pools: dict[str, PoolView]
    decisions: list[DecisionView]


class PoolSummary(BaseModel):
    """One pool in ``GET /api/v1/pools``."""

    queues: list[str]
    autoscaled: bool
    replicas: Replicas
    queued: int
    running: int
    oldest_age_s: float | None
    jobs_per_sec: float
    workers: int
    busy: int
    draining: int


class PoolList(BaseModel):
    pools: dict[str, PoolSummary]


# -- state -------------------------------------------------------------------------------


@dataclass
class _Stored:
    """One pool's entry of ``{p}autoscaler:state``."""

    last_change: float | None = None
    low_since: float | None = None
    wanted: int | None = None
    wanted_at: float | None = None
    acting: bool = False
    last_error: str | None = None
    #: When its last scaling command failed (``None``: it did not).
    failed_at: float | None = None

    @classmethod
    def parse(cls, raw: str | None) -> _Stored:
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})
        except (ValueError, TypeError):
            return cls()

    def dump(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))


def _figures_of(raw: Any) -> PoolFigures:
    if raw is None:
        return PoolFigures()
    if isinstance(raw, PoolFigures):
        return raw
    if isinstance(raw, Mapping):
        return PoolFigures.model_validate(dict(raw))
    return PoolFigures.model_validate(raw, from_attributes=True)


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _digest(cluster: ClusterFile) -> str:
    text = json.dumps(cluster.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class Autoscaler:
    """This server's autoscaler (see the module's text)."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        *,
        environ: Mapping[str, str] | None = None,
        figures: FiguresReader | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self.settings = settings
        self.redis = redis
        self.keys = AutoscalerKeys(settings.key_prefix)
        self.queue = JobQueue(redis, settings.key_prefix, settings.job_ttl)
        self.read_figures: FiguresReader = figures or self._pool_figures
        self.server_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.limit = settings.limits.max_workers
        self.backend = settings.cluster_backend
        self.project = settings.project
        self.cluster: ClusterFile | None = None
        self.reason: str | None = None
        try:
            self.cluster = pools_from_env(environ)
        except ClusterFileError as exc:
            self.reason = f"autoscaling is off: {exc}"
        config = self.cluster.autoscaler if self.cluster else AutoscalerConfig.model_validate({})
        self.period = config.period
        override = (environ.get(PERIOD_ENV) or "").strip()
        if override:
            try:
                self.period = max(0.1, float(override))
            except ValueError:
                logger.warning(
                    "autoscaler: %s=%r is not a number; using %g s",
                    PERIOD_ENV,
                    override,
                    self.period,
                )
        if self.reason is None and not self.backend:
            self.reason = (
                "autoscaling is off: this server does not know the cluster's backend "
                "(MIMIR_CLUSTER_BACKEND is set by `mimir cluster up`)"
            )
        elif self.reason is None and not self.project:
            self.reason = (
                "autoscaling is off: MIMIR_PROJECT is not set (`mimir cluster up` sets it)"
            )
        elif self.reason is None and self.backend == "swarm":
            # `mimir cluster up --backend swarm` refuses autoscaled pools.
            self.reason = "autoscaling is off: autoscaled pools are not on Swarm yet"
        elif self.reason is None and self.backend == "docker" and not environ.get(DOCKER_INSIDE):
            # `mimir cluster up` gives the server's container the engine only when the
            # cluster file autoscales a pool: without it a scale command could only fail.
            self.reason = (
                "autoscaling is off: this server's container has no access to the Docker "
                "engine, which it gets only when the cluster file gives a pool an autoscale "
                "policy (then `mimir cluster up --file F` again)"
            )
        command = (environ.get(COMMAND_ENV) or "").strip()
        self.command = (
            shlex.split(command)
            if command
            else [sys.executable, "-m", "mimir.core.cli", "cluster", "scale"]
        )
        ttl_ms = int(max(3 * self.period, 3.0) * 1000)
        self.lease = RedisLease(redis, self.keys.lease, self.server_id, ttl_ms)
        self.leader = False
        self.seeded = False
        self.acting: dict[str, asyncio.Task[None]] = {}
        self._samples: dict[str, deque[tuple[float, int]]] = {}
        self._last_error = 0.0

    async def _pool_figures(self, pools: Mapping[str, Sequence[str]]) -> Mapping[str, Any]:
        return await self.queue.pool_figures(pools)

    @property
    def enabled(self) -> bool:
        return self.reason is None

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        if self.enabled:
            logger.info(
                "autoscaler: on (backend %s, project %s, every %g s; server %s)",
                self.backend,
                self.project,
                self.period,
                self.server_id,
            )
        else:
            logger.info("%s", self.reason)
        try:
            while True:
                started = time.monotonic()
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if time.monotonic() - self._last_error > 60:
                        self._last_error = time.monotonic()
                        logger.warning("autoscaler: evaluation failed: %s", exc)
                await asyncio.sleep(max(0.0, self.period - (time.monotonic() - started)))
        finally:
            await asyncio.shield(self._close())

    async def _close(self) -> None:
        running = [task for task in self.acting.values() if not task.done()]
        if running:  # a scale half done is worse than a server that stops 5 s later
            await asyncio.wait(running, timeout=5.0)
            for task in running:
                task.cancel()
        if self.leader:
            with contextlib.suppress(Exception):
                await self.lease.release()
            self.leader = False

    async def tick(self) -> None:
        """One period: seed the policies (once), and evaluate if this server leads."""
        if not self.seeded:
            await self.seed()
        if self.enabled and await self.lead():
            await self.evaluate()

    async def lead(self) -> bool:
        if self.leader:
            if await self.lease.renew():
                return True
            logger.info("autoscaler: lease lost; another server scales the pools")
            self.leader = False
        if await self.lease.take():
            logger.info("autoscaler: this server (%s) scales the pools", self.server_id)
            self.leader = True
        return self.leader

    async def seed(self) -> None:
        """Store ``MIMIR_POOLS``'s pools as the policies if it changed since the last seed."""
        if self.cluster is not None:
            digest = _digest(self.cluster)
            if await self.redis.get(self.keys.seed) != digest:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(self.keys.policies)
                    pipe.hset(self.keys.policies, mapping=self._encoded(self.cluster.pools))
                    pipe.set(self.keys.seed, digest)
                    await pipe.execute()
                logger.info(
                    "autoscaler: policies seeded from MIMIR_POOLS (%s)",
                    ", ".join(self.cluster.pools),
                )
        self.seeded = True

    @staticmethod
    def _encoded(pools: Mapping[str, PoolSpec]) -> dict[Any, Any]:
        return {name: pool.model_dump_json(exclude_none=True) for name, pool in pools.items()}

    # -- reading ---------------------------------------------------------------------

    async def pools(self) -> dict[str, PoolSpec]:
        """The pools and their policies as stored (else as declared, else ``default``)."""
        return self._parse_pools(await self.redis.hgetall(self.keys.policies))

    def _parse_pools(self, raw: Any) -> dict[str, PoolSpec]:
        if not raw:
            return dict((self.cluster or default_cluster()).pools)
        pools = {}
        for name, text in sorted(dict(raw).items()):
            try:
                pools[name] = PoolSpec.model_validate_json(text)
            except ValueError as exc:
                logger.warning("autoscaler: stored policy of pool %s is invalid: %s", name, exc)
        return pools

    async def _pools_and_states(self) -> tuple[dict[str, PoolSpec], dict[str, _Stored]]:
        """:meth:`pools` and :meth:`states` in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.policies)
            pipe.hgetall(self.keys.state)
            policies, states = await pipe.execute()
        return self._parse_pools(policies), {
            name: _Stored.parse(text) for name, text in dict(states).items()
        }

    @staticmethod
    def running_of(figures: PoolFigures) -> int:
        return max(0, figures.workers - figures.draining)

    def current(self, figures: PoolFigures, stored: _Stored, now: float, *, acting: bool) -> int:
        """The replicas the pool runs now, as the decision counts them (``acting``: its
        scaling command is running)."""
        live = self.running_of(figures)
        if stored.wanted is None:
            return live
        if acting:
            return stored.wanted
        settling = stored.wanted_at is not None and now - stored.wanted_at < SETTLE
        return stored.wanted if settling and live != stored.wanted else live

    # -- one evaluation --------------------------------------------------------------

    async def evaluate(self) -> None:
        # Pools whose command runs now, or ran while the state was read (its end is not
        # in what was read): left to the next period.
        busy = {name for name, task in self.acting.items() if not task.done()}
        pools, states = await self._pools_and_states()
        raw = await self.read_figures({name: pool.queues for name, pool in pools.items()})
        busy |= {name for name, task in self.acting.items() if not task.done()}
        now = time.time()
        changed: dict[Any, Any] = {}
        for name, pool in pools.items():
            if not pool.autoscaled or name in busy:
                continue
            assert pool.autoscale is not None
            stored = states.get(name, _Stored())
            if stored.failed_at is not None and now - stored.failed_at < max(
                pool.autoscale.cooldown_up, self.period
            ):
                continue  # a failed command is tried again after a cooldown, not each period
            figures = _figures_of(raw.get(name))
            # The leader knows its own commands; a flag left by a previous leader is not one.
            current = self.current(figures, stored, now, acting=False)
            result = evaluate(
                pool.autoscale,
                pool_min=pool.min,
                pool_max=pool.max_replicas(self.limit),
                current=current,
                figures=figures,
                now=now,
                state=PoolState(stored.last_change, stored.low_since),
            )
            after = _Stored(
                last_change=result.state.last_change,
                low_since=result.state.low_since,
                wanted=stored.wanted,
                wanted_at=stored.wanted_at,
                acting=False,
                last_error=stored.last_error,
                failed_at=stored.failed_at,
            )
            decision = result.decision
            if decision is not None:
                after.wanted, after.wanted_at, after.acting = decision.replicas, now, True
                entry = {
                    "kind": "decision",
                    "time": _iso(now),
                    "pool": name,
                    "from": decision.current,
                    "to": decision.replicas,
                    "reason": decision.reason,
                    "figures": figures.model_dump(),
                    "server": self.server_id,
                }
                decision_id = await self._record(entry)
                action = "up" if decision.replicas > decision.current else "down"
                await self.redis.hincrby(self.keys.counts, json.dumps([name, action]), 1)
                logger.info(
                    "autoscaler: pool %s %d -> %d (%s)",
                    name,
                    decision.current,
                    decision.replicas,
                    decision.reason,
                )
                self.acting[name] = asyncio.create_task(
                    self._act(name, decision_id, decision.replicas), name=f"autoscale-{name}"
                )
            if after != stored:
                changed[name] = after.dump()
        if changed:
            await self.redis.hset(self.keys.state, mapping=changed)

    async def _record(self, entry: dict[str, Any]) -> str:
        """Add ``entry`` to the decisions stream and publish it (with its id)."""
        data = json.dumps(entry, separators=(",", ":"))
        entry_id = str(
            await self.redis.xadd(
                self.keys.decisions, {"data": data}, maxlen=DECISIONS_MAXLEN, approximate=True
            )
        )
        await self.redis.publish(self.keys.events, json.dumps({"id": entry_id, **entry}))
        return entry_id

    # -- acting ------------------------------------------------------------------------

    def scale_command(self, pool: str, replicas: int) -> list[str]:
        return [
            *self.command,
            "--pool",
            pool,
            str(replicas),
            "--project",
            self.project,
            "--backend",
            str(self.backend),
            # New workers show in the heartbeats, which the next evaluations read; waiting
            # for them here would hold the pool's next decision for seconds.
            "--no-wait",
        ]

    async def _act(self, pool: str, decision_id: str, replicas: int) -> None:
        command = self.scale_command(pool, replicas)
        started = time.monotonic()
        error: str | None = None
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C of the server's terminal is not its
            )
            try:
                _, stderr = await asyncio.wait_for(process.communicate(), ACT_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()
                error = f"timed out after {ACT_TIMEOUT:g} s"
            else:
                if process.returncode != 0:
                    tail = stderr.decode(errors="replace").strip()[-STDERR_TAIL:]
                    error = f"exit code {process.returncode}: {tail}"
        except OSError as exc:
            error = f"cannot run {command[0]}: {exc}"
        seconds = round(time.monotonic() - started, 3)
        if error is None:
            logger.info("autoscaler: pool %s scaled to %d in %.1f s", pool, replicas, seconds)
        else:
            logger.warning("autoscaler: scaling pool %s to %d failed: %s", pool, replicas, error)
        try:
            stored = _Stored.parse(cast(str | None, await self.redis.hget(self.keys.state, pool)))
            stored.acting = False
            stored.last_error = error
            if error is not None:  # the heartbeats say what runs, not the failed wish
                stored.wanted_at = None
                stored.failed_at = time.time()
            else:
                stored.wanted_at = time.time()  # settling starts when the command ended
                stored.failed_at = None
            await self.redis.hset(self.keys.state, pool, stored.dump())
            await self._record(
                {
                    "kind": "result",
                    "time": _iso(time.time()),
                    "decision": decision_id,
                    "pool": pool,
                    "to": replicas,
                    "outcome": "ok" if error is None else "failed",
                    "error": error,
                    "seconds": seconds,
                    "server": self.server_id,
                }
            )
        except Exception as exc:
            logger.warning("autoscaler: cannot record the end of scaling pool %s: %s", pool, exc)

    # -- what the API shows ------------------------------------------------------------

    async def leader_info(self) -> Leader | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.lease)
            pipe.pttl(self.keys.lease)
            owner, pttl = await pipe.execute()
        if not owner:
            return None
        return Leader(owner=str(owner), expires_in_s=round(max(0, int(pttl)) / 1000, 3))

    async def decisions(self, count: int = DECISIONS_SHOWN) -> list[DecisionView]:
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await self.redis.xrevrange(self.keys.decisions, count=count * 2),
        )
        results: dict[str, dict[str, Any]] = {}
        out: list[DecisionView] = []
        for entry_id, fields in entries:
            try:
                data = json.loads(fields.get("data", "{}"))
            except ValueError:
                continue
            if data.get("kind") == "result":
                results.setdefault(str(data.get("decision")), data)
                continue
            result = results.get(str(entry_id), {})
            with contextlib.suppress(ValueError, TypeError):
                out.append(
                    DecisionView.model_validate(
                        {
                            **data,
                            "id": str(entry_id),
                            "outcome": result.get("outcome"),
                            "error": result.get("error"),
                        }
                    )
                )
        return out[:count]

    async def _gather(
        self,
    ) -> tuple[dict[str, PoolSpec], dict[str, _Stored], dict[str, PoolFigures]]:
        pools, states = await self._pools_and_states()
        raw = await self.read_figures({name: pool.queues for name, pool in pools.items()})
        return pools, states, {name: _figures_of(raw.get(name)) for name in pools}

    def _replicas(self, name: str, figures: PoolFigures, stored: _Stored, now: float) -> Replicas:
        running = self.running_of(figures)
        wanted = self.current(figures, stored, now, acting=stored.acting)
        return Replicas(wanted=wanted, running=running)

    async def view(self) -> AutoscalerView:
        pools, states, figures = await self._gather()
        now = time.time()
        views = {}
        for name, pool in pools.items():
            stored = states.get(name, _Stored())
            views[name] = PoolView(
                queues=list(pool.queues),
                policy=pool.autoscale,
                min=pool.min,
                max=pool.max_replicas(self.limit),
                replicas=self._replicas(name, figures[name], stored, now),
                figures=figures[name],
                last_change=_iso(stored.last_change),
                acting=stored.acting,
                last_error=stored.last_error,
            )
        return AutoscalerView(
            enabled=self.enabled,
            reason=self.reason,
            server=self.server_id,
            leader=await self.leader_info(),
            period=self.period,
            pools=views,
            decisions=await self.decisions(),
        )

    async def metrics(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        """For ``GET /metrics``: decisions taken by (pool, ``up``|``down``), and each pool's
        desired workers (what its autoscaler wants while a change settles, else what runs)."""
        counts = cast(dict[str, str], await self.redis.hgetall(self.keys.counts))
        pools, states, figures = await self._gather()
        now = time.time()
        desired = {
            name: self._replicas(name, figures[name], states.get(name, _Stored()), now).wanted
            for name in pools
        }
        decided: dict[tuple[str, str], int] = {}
        for field_name, count in counts.items():
            with contextlib.suppress(ValueError, TypeError):
                pool, action = json.loads(field_name)
                decided[(str(pool), str(action))] = int(count)
        return decided, desired

    async def pool_list(self) -> PoolList:
        pools, states, figures = await self._gather()
        now = time.time()
        out = {}
        for name, pool in pools.items():
            fig = figures[name]
            out[name] = PoolSummary(
                queues=list(pool.queues),
                autoscaled=pool.autoscaled,
                replicas=self._replicas(name, fig, states.get(name, _Stored()), now),
                queued=fig.queued,
                running=fig.running,
                oldest_age_s=fig.oldest_age_s,
                jobs_per_sec=self._rate(name, fig.processed, now),
                workers=fig.workers,
                busy=fig.busy,
                draining=fig.draining,
            )
        return PoolList(pools=out)

    def _rate(self, pool: str, processed: int, now: float) -> float:
        """Jobs a second the pool's workers processed, from this server's recent readings
        of their counters (0 until two readings a second apart)."""
        samples = self._samples.setdefault(pool, deque())
        samples.append((now, processed))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW:
            samples.popleft()
        then, before = samples[0]
        if now - then < 1.0:
            return 0.0
        return round(max(0, processed - before) / (now - then), 2)

    async def set_policy(self, name: str, pool: PoolSpec) -> None:
        """Store ``pool`` (already validated) as the pool ``name``; every server sees it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(self.keys.policies)
            exists = (await pipe.execute())[0]
        mapping: dict[Any, Any] = {name: pool.model_dump_json(exclude_none=True)}
        if not exists:  # the first change: store the whole cluster, this pool changed
            mapping = {**self._encoded((self.cluster or default_cluster()).pools), **mapping}
        await self.redis.hset(self.keys.policies, mapping=mapping)


async def start(app: Any) -> list[asyncio.Task[None]]:
    """Start this server's autoscaler loop (it acts while it holds the lease)."""
    autoscaler = Autoscaler(app.state.settings, app.state.redis)
    app.state.autoscaler = autoscaler
    return [asyncio.create_task(autoscaler.run(), name="autoscaler")]
