"""The autoscaler's decision for one pool, as a pure function of what it sees.

Given a pool's :class:`~mimir.core.pools.AutoscalePolicy`, its ``min``..``max`` replicas,
the replicas it runs now, its queue figures (jobs waiting and running, the oldest waiting
job's age), the time and what the autoscaler remembers of the pool (:class:`PoolState`:
its last change, since when its backlog has been low), :func:`decide` says whether to
change the replicas, to how many, and why:

- **backlog** = jobs waiting + jobs running; the pool wants ``ceil(backlog /
  target_backlog)`` replicas, unless the backlog is within :data:`TOLERANCE` (±10 %) of
  ``target_backlog x current`` (then it wants what it has);
- one ``step_up`` more when the oldest waiting job has waited longer than ``target_age``;
- always within ``min``..``max`` (a pool outside them is brought back at once);
- a change moves at most ``step_up`` or ``step_down`` replicas;
- up waits ``cooldown_up`` seconds after the previous change, down ``cooldown_down``, and
  down also waits until the backlog has been low (wanting fewer replicas) for
  ``cooldown_down`` seconds: a load that only dips does not shrink the pool;
- a pool at zero with work waits for nothing: it wakes at once.

No Redis, no clock, no I/O: :func:`evaluate` also returns the state to remember, and the
server's loop (:mod:`mimir.server.autoscaler`) stores it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

from mimir.core.pools import AutoscalePolicy

__all__ = [
    "TOLERANCE",
    "Decision",
    "Evaluation",
    "Figures",
    "PoolState",
    "decide",
    "evaluate",
]

#: A backlog within this fraction of ``target_backlog x current`` changes nothing.
TOLERANCE = 0.1


class Figures(Protocol):
    """What the decision reads of a pool's queues (``PoolFigures`` has these and more)."""

    @property
    def queued(self) -> int: ...

    @property
    def running(self) -> int: ...

    @property
    def oldest_age_s(self) -> float | None: ...


@dataclass(frozen=True)
class PoolState:
    """What the autoscaler remembers of a pool between evaluations (times in seconds,
    the caller's clock)."""

    #: When its replicas were last changed (``None``: never by the autoscaler).
    last_change: float | None = None
    #: Since when it has wanted fewer replicas than it runs (``None``: it does not).
    low_since: float | None = None


@dataclass(frozen=True)
class Decision:
    """Change the pool from ``current`` to ``replicas`` replicas, because ``reason``."""

    current: int
    replicas: int
    reason: str

    @property
    def direction(self) -> str:
        return "up" if self.replicas > self.current else "down"


@dataclass(frozen=True)
class Evaluation:
    """:func:`evaluate`'s answer: the decision (``None``: keep the replicas), the
    replicas the pool wants before steps and cooldowns, why, and the state to remember."""

    decision: Decision | None
    wanted: int
    reason: str
    state: PoolState


def _wanted(
    policy: AutoscalePolicy, *, pool_min: int, pool_max: int, current: int, figures: Figures
) -> tuple[int, str]:
    queued = max(0, int(figures.queued))
    backlog = queued + max(0, int(figures.running))
    target = policy.target_backlog
    wanted = math.ceil(backlog / target) if backlog > 0 else 0
    per = f"{target:g} per replica"
    if (
        current > 0
        and wanted != current
        and abs(backlog / (target * current) - 1) <= TOLERANCE + 1e-9
    ):
        wanted = current
        reason = f"backlog {backlog} within {TOLERANCE:.0%} of {per} x {current}"
    else:
        reason = f"backlog {backlog} ({queued} waiting) at {per}"
    age = figures.oldest_age_s
    if policy.target_age is not None and queued > 0 and age is not None and age > policy.target_age:
        wanted = max(wanted, current + policy.step_up)
        reason += f"; oldest waiting {age:.0f} s > target_age {policy.target_age:g} s"
    if wanted > pool_max:
        wanted = pool_max
        reason += f"; max {pool_max}"
    if wanted < pool_min:
        wanted = pool_min
        reason += f"; min {pool_min}"
    return wanted, reason


def evaluate(
    policy: AutoscalePolicy,
    *,
    pool_min: int,
    pool_max: int,
    current: int,
    figures: Figures,
    now: float,
    state: PoolState,
) -> Evaluation:
    """The decision for a pool now (see the module's text), with the state to keep."""
    pool_max = max(pool_min, pool_max)
    wanted, reason = _wanted(
        policy, pool_min=pool_min, pool_max=pool_max, current=current, figures=figures
    )
    low_since = (
        (state.low_since if state.low_since is not None else now) if wanted < current else None
    )
    kept = replace(state, low_since=low_since)

    def change(replicas: int, why: str) -> Evaluation:
        after = PoolState(last_change=now, low_since=low_since if replicas < current else None)
        return Evaluation(Decision(current, replicas, why), wanted, reason, after)

    if wanted == current:
        return Evaluation(None, wanted, reason, kept)
    since_change = math.inf if state.last_change is None else now - state.last_change
    # Outside min..max (a policy just changed, or a hand scale): back at once, no step.
    if current < pool_min:
        return change(pool_min, f"{current} is below min {pool_min}")
    if current > pool_max:
        return change(pool_max, f"{current} is above max {pool_max}")
    if wanted > current:
        if current == 0:
            return change(min(wanted, policy.step_up), f"wake from zero: {reason}")
        if since_change < policy.cooldown_up:
            return Evaluation(None, wanted, f"{reason}; cooling down", kept)
        return change(min(wanted, current + policy.step_up), reason)
    low_for = now - low_since if low_since is not None else 0.0
    if since_change < policy.cooldown_down or low_for < policy.cooldown_down:
        return Evaluation(None, wanted, f"{reason}; low for {low_for:.0f} s, waiting", kept)
    return change(max(wanted, current - policy.step_down), f"{reason}; low for {low_for:.0f} s")


def decide(
    policy: AutoscalePolicy,
    *,
    pool_min: int,
    pool_max: int,
    current: int,
    figures: Figures,
    now: float,
    state: PoolState,
) -> Decision | None:
    """The change to make to a pool now, or ``None`` (:func:`evaluate`'s decision)."""
    return evaluate(
        policy,
        pool_min=pool_min,
        pool_max=pool_max,
        current=current,
        figures=figures,
        now=now,
        state=state,
    ).decision
