"""The autoscaler's pure decision (:mod:`mimir.core.autoscale`): backlog, age, clamps,
tolerance, steps, cooldowns, scale-down only after a low backlog lasted, waking from zero,
and no flapping on a steady load at the boundary of the target."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import pytest

from mimir.core.autoscale import Decision, PoolState, decide, evaluate
from mimir.core.pools import AutoscalePolicy


@dataclass(frozen=True)
class F:
    queued: int
    running: int = 0
    oldest_age_s: float | None = None


POLICY = AutoscalePolicy(
    target_backlog=10, step_up=4, step_down=1, cooldown_up=15, cooldown_down=60
)


def run(
    figures: F,
    current: int,
    *,
    policy: AutoscalePolicy = POLICY,
    pool_min: int = 1,
    pool_max: int = 8,
    now: float = 1000.0,
    state: PoolState | None = None,
) -> Decision | None:
    return decide(
        policy,
        pool_min=pool_min,
        pool_max=pool_max,
        current=current,
        figures=figures,
        now=now,
        state=state or PoolState(),
    )


def test_backlog_is_queued_plus_running_over_the_target() -> None:
    decision = run(F(queued=20, running=10), 1)
    assert decision is not None
    assert (decision.current, decision.replicas, decision.direction) == (1, 3, "up")
    assert "backlog 30" in decision.reason


def test_steady_backlog_at_target_changes_nothing() -> None:
    assert run(F(queued=30, running=10), 4) is None


@pytest.mark.parametrize("backlog", [37, 40, 44])
def test_within_ten_percent_of_the_target_changes_nothing(backlog: int) -> None:
    # 4 replicas x 10: 36..44 is within 10 %; ceil(41/10) = 5 would be a change.
    assert run(F(queued=backlog), 4) is None


def test_just_beyond_the_tolerance_scales() -> None:
    decision = run(F(queued=45), 4)
    assert decision is not None and decision.replicas == 5


def test_clamped_to_max_and_at_most_step_up_per_change() -> None:
    decision = run(F(queued=300), 1, pool_max=4)
    assert decision is not None and decision.replicas == 4  # 30 wanted, max 4, step 4
    decision = run(F(queued=300), 1, pool_max=20)
    assert decision is not None and decision.replicas == 5  # 1 + step_up


def test_never_below_min_nor_above_max_even_in_cooldown() -> None:
    recent = PoolState(last_change=995.0)
    below = run(F(queued=0), 0, pool_min=2, state=recent)
    assert below is not None and below.replicas == 2 and "below min" in below.reason
    above = run(F(queued=0), 9, pool_max=4, state=recent)
    assert above is not None and above.replicas == 4 and "above max" in above.reason


def test_old_waiting_job_adds_a_step() -> None:
    policy = POLICY.model_copy(update={"target_age": 30.0})
    # Backlog at the target (2 x 10) but the oldest job waited 45 s: one step up more.
    decision = run(F(queued=20, oldest_age_s=45.0), 2, policy=policy)
    assert decision is not None and decision.replicas == 6
    assert "target_age" in decision.reason
    assert run(F(queued=20, oldest_age_s=10.0), 2, policy=policy) is None
    # No waiting job: the age aim does not apply.
    assert run(F(queued=0, running=20, oldest_age_s=45.0), 2, policy=policy) is None


def test_cooldown_up_since_the_last_change() -> None:
    state = PoolState(last_change=990.0)
    assert run(F(queued=80), 2, state=state, now=1000.0) is None
    decision = run(F(queued=80), 2, state=state, now=1005.0)
    assert decision is not None and decision.replicas == 6


def test_wake_from_zero_at_once_despite_the_cooldown() -> None:
    state = PoolState(last_change=999.0)
    decision = run(F(queued=1), 0, pool_min=0, state=state)
    assert decision is not None and decision.replicas == 1 and "wake" in decision.reason
    assert run(F(queued=0), 0, pool_min=0, state=state) is None


def test_scale_down_waits_until_the_backlog_was_low_for_cooldown_down() -> None:
    state = PoolState(last_change=0.0)
    low = F(queued=5)
    first = evaluate(
        POLICY, pool_min=1, pool_max=8, current=4, figures=low, now=1000.0, state=state
    )
    assert first.decision is None and first.state.low_since == 1000.0
    # Still low, 59 s later: waits; 60 s: one step down.
    later = evaluate(
        POLICY, pool_min=1, pool_max=8, current=4, figures=low, now=1059.0, state=first.state
    )
    assert later.decision is None
    down = evaluate(
        POLICY, pool_min=1, pool_max=8, current=4, figures=low, now=1060.0, state=later.state
    )
    assert down.decision is not None and down.decision.replicas == 3  # step_down 1
    assert down.state.last_change == 1060.0
    # A moment of high backlog resets the low time.
    high = evaluate(
        POLICY,
        pool_min=1,
        pool_max=8,
        current=4,
        figures=F(queued=40),
        now=1030.0,
        state=first.state,
    )
    assert high.state.low_since is None


def test_cooldown_down_since_the_last_change() -> None:
    state = PoolState(last_change=990.0, low_since=900.0)
    assert run(F(queued=0), 4, state=state, now=1000.0) is None
    decision = run(F(queued=0), 4, state=state, now=1050.0)
    assert decision is not None and decision.replicas == 3


def test_scale_to_zero_when_idle() -> None:
    state = PoolState(low_since=0.0)
    decision = run(F(queued=0), 1, pool_min=0, state=state)
    assert decision is not None and decision.replicas == 0


def simulate(
    backlogs: list[int], *, start: int, period: float = 5.0
) -> list[tuple[float, Decision]]:
    """Evaluate every ``period`` seconds with the given backlog at each; the replicas
    follow each decision at once. The changes, with their times."""
    state = PoolState()
    current = start
    changes = []
    for i, backlog in enumerate(backlogs):
        now = i * period
        result = evaluate(
            POLICY,
            pool_min=1,
            pool_max=16,
            current=current,
            figures=F(queued=backlog // 2, running=backlog - backlog // 2),
            now=now,
            state=state,
        )
        state = result.state
        if result.decision is not None:
            changes.append((now, result.decision))
            current = result.decision.replicas
    return changes


def assert_no_flapping(changes: list[tuple[float, Decision]]) -> None:
    for (t0, _), (t1, second) in itertools.pairwise(changes):
        gap = POLICY.cooldown_up if second.direction == "up" else POLICY.cooldown_down
        assert t1 - t0 >= gap, changes
    # At most one change per cooldown over the hour.
    assert len(changes) <= math.ceil(3600 / POLICY.cooldown_down) + 1


HOUR = 3600 // 5


@pytest.mark.parametrize("seed", range(5))
def test_steady_load_at_the_boundary_does_not_flap(seed: int) -> None:
    # The backlog oscillates around target x current (40 for 4 replicas), ±8 %.
    rng = random.Random(seed)
    backlogs = [40 + rng.randint(-3, 3) for _ in range(HOUR)]
    assert simulate(backlogs, start=4) == []


@pytest.mark.parametrize("seed", range(5))
def test_noisy_load_across_the_boundary_changes_at_most_once_per_cooldown(seed: int) -> None:
    # ±25 % around the boundary (30..50 for 4 replicas): crosses ceil() and the tolerance.
    rng = random.Random(seed)
    backlogs = [40 + rng.randint(-10, 10) for _ in range(HOUR)]
    changes = simulate(backlogs, start=4)
    assert_no_flapping(changes)


def test_square_wave_faster_than_the_cooldown_changes_at_most_once_per_cooldown() -> None:
    # 35 and 46 alternating every 10 s: each alone would scale (down, up).
    backlogs = [35 if (i // 2) % 2 else 46 for i in range(HOUR)]
    changes = simulate(backlogs, start=4)
    assert_no_flapping(changes)
    assert len(changes) <= 1  # up once to 5; never low for a whole cooldown_down after


def test_burst_then_idle_goes_up_fast_and_down_slowly() -> None:
    backlogs = [300] * 12 + [0] * (HOUR - 12)  # a minute of burst
    changes = simulate(backlogs, start=1)
    ups = [d for _, d in changes if d.direction == "up"]
    downs = [(t, d) for t, d in changes if d.direction == "down"]
    assert [(d.current, d.replicas) for d in ups] == [(1, 5), (5, 9), (9, 13), (13, 16)]
    assert [d.replicas for _, d in downs] == list(range(15, 0, -1))
    first_down = downs[0][0]
    assert first_down >= 60 + POLICY.cooldown_down  # low since t=60 for cooldown_down
    assert_no_flapping(changes)
