"""Digital-twin flow model figures: ``python -m benchmarks.twin [--entities 1000 --days 365]``.

A layered supply network (suppliers -> factories -> distribution centres -> stores, each
store with customer demand, lead times between layers, random failures at a tenth of the
sites, 20 scenario events) simulated for ``--days`` days, each run in a fresh process so
that its peak memory is its own. Printed side by side, medians of ``--runs``:

- seconds per run and microseconds per entity-step;
- the process's peak RSS growth during the run (over the twin already built);
- the size of the result as JSON in full, and bounded as ``GET …/runs/{id}`` answers it
  by default (200 points per series, fewer for large twins: ``result_points``; the first
  100 timeline entries), and the timeline's length.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from mimir.core.twin import Entity, Relationship, Scenario, ScenarioEvent, Twin, simulate
from mimir.core.twin.simulation import bounded, result_points

EX = "http://bench.example/"
LAYERS = (0.1, 0.15, 0.15, 0.6)  # suppliers, factories, DCs, stores


def network(entities: int, seed: int = 4) -> Twin:
    """A layered supply network of ``entities`` sites; each site is supplied by 1-3 sites
    of the layer before, stores sell 20-60 units a day."""
    rng = random.Random(seed)
    sizes = [max(1, round(entities * share)) for share in LAYERS]
    sizes[-1] = entities - sum(sizes[:-1])
    layers: list[list[Entity]] = []
    count = 0
    for depth, size in enumerate(sizes):
        layer = []
        for _ in range(size):
            failing = rng.random() < 0.1
            layer.append(
                Entity(
                    id=f"{EX}n{count}",
                    label=f"L{depth}-{count}",
                    type=("Supplier", "Factory", "DC", "Store")[depth],
                    capacity=rng.uniform(60, 120) * (4 - depth),
                    demand=rng.uniform(20, 60) if depth == 3 else 0.0,
                    inventory=rng.uniform(0, 200),
                    lead_time=float(rng.randint(0, 3)) if depth < 3 else 0.0,
                    target_stock=rng.uniform(0, 50),
                    mtbf=rng.uniform(30, 90) if failing else None,
                    mttr=rng.uniform(1, 4) if failing else None,
                )
            )
            count += 1
        layers.append(layer)
    links = [
        Relationship(source=s.id, target=c.id, type="supplies")
        for upper, lower in itertools.pairwise(layers)
        for c in lower
        for s in rng.sample(upper, k=min(len(upper), rng.randint(1, 3)))
    ]
    return Twin(name="bench", entities=[e for layer in layers for e in layer], relationships=links)


def scenario(days: float, twin: Twin, seed: int = 4) -> Scenario:
    rng = random.Random(seed)
    kinds = [
        ("demand.surge", 1.5), ("resource.capacity_change", 0.6), ("process.delay", 1.5),
        ("resource.unavailable", None), ("external.transport_delay", 2.0),
    ]  # fmt: skip
    events = []
    for _ in range(20):
        kind, magnitude = rng.choice(kinds)
        events.append(
            ScenarioEvent(
                at=rng.uniform(0, days * 0.8),
                type=kind,
                target=rng.choice(twin.entities).id,
                magnitude=magnitude,
                duration=rng.uniform(5, 30),
            )
        )
    return Scenario(name="bench", duration=days, noise=0.1, events=events)


def one_run(entities: int, days: float) -> dict[str, float]:
    """One run in this process: time, memory and sizes."""
    twin = network(entities)
    plan = scenario(days, twin)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = simulate(twin, plan, seed=1)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    full = len(result.model_dump_json())
    kept = bounded(result, result_points(200, entities))
    small = len(kept.model_copy(update={"timeline": kept.timeline[:100]}).model_dump_json())
    return {
        "seconds": seconds,
        "us_per_entity_step": seconds / (entities * result.metrics["steps"]) * 1e6,
        "rss_growth_mb": (after - before) / 1024,
        "full_mb": full / 2**20,
        "bounded_kb": small / 1024,
        "timeline_entries": len(result.timeline),
        "fill_rate": result.metrics["fill_rate"] or 0.0,
    }


def measure(entities: int, days: float, runs: int) -> dict[str, float]:
    """Medians of ``runs`` runs, each in a fresh interpreter."""
    figures = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.twin", "--one", str(entities), str(days)],
            check=True,
            capture_output=True,
            text=True,
        )
        figures.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(f[key] for f in figures) for key in figures[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.twin", description=__doc__)
    parser.add_argument("--entities", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--days", type=float, default=365)
    parser.add_argument("--runs", type=int, default=3, help="runs per size; medians (3)")
    parser.add_argument("--one", nargs=2, metavar=("ENTITIES", "DAYS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(int(args.one[0]), float(args.one[1]))))
        return 0
    print(f"twin flow model: layered network, {args.days:g} days, step 1, 20 events, "
          f"medians of {args.runs} runs in fresh processes")  # fmt: skip
    header = (
        f"  {'entities':>8} {'seconds':>8} {'us/entity-step':>15} {'RSS +MB':>8} "
        f"{'full JSON MB':>13} {'bounded KB':>11} {'timeline':>9}"
    )
    print(header)
    rows: list[tuple[int, dict[str, Any]]] = []
    for entities in args.entities:
        f = measure(entities, args.days, args.runs)
        rows.append((entities, f))
        print(
            f"  {entities:>8,} {f['seconds']:>8.2f} {f['us_per_entity_step']:>15.1f} "
            f"{f['rss_growth_mb']:>8.1f} {f['full_mb']:>13.2f} "
            f"{f['bounded_kb']:>11.0f} {int(f['timeline_entries']):>9,}"
        )
    if len(rows) > 1:
        (n0, a), (n1, b) = rows[0], rows[-1]
        print(
            f"  x{n1 / n0:g} entities: time x{b['seconds'] / a['seconds']:.1f}, "
            f"RSS growth x{b['rss_growth_mb'] / max(a['rss_growth_mb'], 0.1):.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
