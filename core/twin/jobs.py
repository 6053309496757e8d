"""The ``digital_twin`` job handler; importing this module registers it.

The job carries the twin and the scenario themselves (workers need no shared store);
the handler also records the outcome in the data directory's twin store when that store
holds the run (a worker beside the server), and returns it as the job's result (the whole
result, every series at every snapshot), from which the server fills its store otherwise.
A simulation that fails fails the job without a retry: it is deterministic.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable
from typing import Any, Literal

from mimir.core.jobs import Attempt, JobFailedError, register_job_handler
from mimir.core.twin import simulation
from mimir.core.twin.models import Scenario, SimulationResult, Twin
from mimir.core.twin.simulation import TwinError
from mimir.core.twin.store import TwinStore

__all__ = ["digital_twin_job", "metrics_only", "run_digital_twin_job", "simulate_run"]

logger = logging.getLogger(__name__)


def digital_twin_job(
    twin: Twin,
    scenario: Scenario,
    run_id: str,
    seed: int | None,
    keep: Literal["all", "metrics"] = "all",
) -> dict[str, Any]:
    """The payload of a ``digital_twin`` job; ``keep="metrics"`` (a what-if's runs) answers
    the metrics without the series and the timeline."""
    return {
        "twin": twin.model_dump(mode="json"),
        "scenario": scenario.model_dump(mode="json"),
        "run_id": run_id,
        "seed": seed,
        "keep": keep,
    }


def metrics_only(result: SimulationResult) -> SimulationResult:
    """``result`` without its series, effects and timeline (``resolution.method``:
    ``metrics``): what a what-if's summary needs, a few kilobytes whatever the twin."""
    return result.model_copy(
        update={
            "times": [],
            "utilisation": {},
            "series": {},
            "system": {},
            "events": [],
            "timeline": [],
            "resolution": {**result.resolution, "points": 0, "method": "metrics"},
        }
    )


def _finite(values: Iterable[float]) -> bool:
    values = list(values)
    # A sum is finite when every value is (and the values are not near the float limit).
    return math.isfinite(math.fsum(values)) or all(math.isfinite(v) for v in values)


def simulate_run(twin: Twin, scenario: Scenario, seed: int | None) -> SimulationResult:
    """:func:`~mimir.core.twin.simulation.simulate`, refusing a result that JSON cannot
    carry: figures that overflowed to infinity or NaN (each figure is bounded by
    ``MAX_FIGURE``, but many events can multiply one) fail the run as a :class:`TwinError`."""
    result = simulation.simulate(twin, scenario, seed)
    groups = [result.utilisation, *result.series.values()]
    ok = all(_finite(values) for group in groups for values in group.values())
    ok = ok and all(_finite(values) for values in result.system.values())
    numbers = [
        v
        for stats in result.metrics.get("per_entity", {}).values()
        for v in stats.values()
        if isinstance(v, float)
    ]
    numbers += [v for v in result.metrics.values() if isinstance(v, float)]
    if not (ok and _finite(numbers)):
        raise TwinError(
            "the simulation's figures overflowed (infinite or not a number): a capacity, "
            "demand, inventory or buffer, or the events multiplying it, are too large"
        )
    return result


async def run_digital_twin_job(payload: dict[str, Any], ctx: Attempt) -> dict[str, Any]:
    """Simulate ``payload["scenario"]`` on ``payload["twin"]``; answers the run's result."""
    try:
        twin = Twin.model_validate(payload.get("twin"))
        scenario = Scenario.model_validate(payload.get("scenario"))
    except ValueError as exc:
        raise JobFailedError(
            f"digital_twin job with an invalid payload: {exc}", retry=False
        ) from exc
    run_id = str(payload.get("run_id") or ctx.job_id)
    seed = payload.get("seed")
    ctx.report_progress(0, 1, f"simulating {scenario.name}")
    try:
        result = await asyncio.to_thread(simulate_run, twin, scenario, seed)
    except Exception as exc:
        # The same twin, scenario and seed fail the same way: no retry.
        error = str(exc) if isinstance(exc, TwinError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, TwinError):
            logger.warning("twin run %s: the simulation raised", run_id, exc_info=True)
        await asyncio.to_thread(_record, ctx, run_id, None, error)
        raise JobFailedError(error, retry=False) from exc
    ctx.report_progress(1, 1, scenario.name)
    if payload.get("keep") == "metrics":
        result = metrics_only(result)
    await asyncio.to_thread(_record, ctx, run_id, result, None)
    return {
        "run_id": run_id,
        "twin_id": twin.id,
        "scenario_id": scenario.id,
        **result.model_dump(mode="json"),
    }


def _record(ctx: Attempt, run_id: str, result: Any, error: str | None) -> None:
    if ctx.data_dir is None or not (ctx.data_dir / "twins.sqlite3").exists():
        return
    try:
        TwinStore.in_data_dir(ctx.data_dir).finish_run(run_id, result, error)
    except Exception:  # the job's result still carries the outcome to the server
        logger.warning("could not record twin run %s in %s", run_id, ctx.data_dir, exc_info=True)


register_job_handler("digital_twin", run_digital_twin_job)
