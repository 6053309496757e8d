"""Digital-twin runs, comparisons and what-ifs as the Knowledge panel shows them, without Qt.

- :func:`run_summary`: a run's fill rate and backlog, from its listed ``summary`` or its
  result's metrics;
- :func:`comparison_rows` / :func:`entity_rows`: ``GET /twins/{id}/compare?runs=a,b`` as
  table rows, each delta judged better or worse for the operator (a higher fill rate is
  better, a higher backlog worse; utilisation and inventory are neither);
- :func:`parameter_change` / :func:`outage_change`: one what-if change as the API takes it;
- :func:`distribution_rows` / :func:`bottleneck_rows`: ``GET /twins/{id}/whatif/{batch}``
  as rows (base and variant mean with p5-p95, the delta judged as above).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENTITY_METRICS",
    "KEY_METRICS",
    "PARAMETERS",
    "SHARE_METRICS",
    "CompareRow",
    "DistributionRow",
    "EntityRow",
    "bottleneck_rows",
    "busiest_entities",
    "comparison_rows",
    "describe_change",
    "distribution_rows",
    "entity_rows",
    "format_delta",
    "format_metric",
    "local_name",
    "outage_change",
    "parameter_change",
    "run_summary",
    "verdict",
]

#: Metric → (label, direction): +1 higher is better, -1 lower is better, 0 neither.
METRICS: dict[str, tuple[str, int]] = {
    "fill_rate": ("Fill rate", +1),
    "delivered": ("Delivered", +1),
    "throughput": ("Throughput", +1),
    "backlog": ("Backlog at end", -1),
    "peak_backlog": ("Peak backlog", -1),
    "unmet_demand": ("Unmet demand", -1),
    "avg_utilisation": ("Avg utilisation", 0),
    "peak_utilisation": ("Peak utilisation", 0),
    "avg_inventory": ("Avg inventory", 0),
    "inventory": ("Inventory at end", 0),
    "time_bottleneck": ("Days as bottleneck", -1),
    "time_starved": ("Days starved", -1),
    "time_down": ("Days down", -1),
    "stability_score": ("Stability", +1),
}


#: The what-if distribution's metrics, in the order the plots show them.
KEY_METRICS = ["fill_rate", "delivered", "backlog", "peak_backlog", "avg_utilisation"]

#: What-if parameters the form offers: parameter → label.
PARAMETERS = {"capacity": "Capacity", "demand": "Demand", "lead_time": "Lead time"}

EN_DASH = "\u2013"

#: Metrics that are shares (shown in %, deltas in percentage points).
SHARE_METRICS = {"fill_rate", "avg_utilisation", "peak_utilisation", "stability_score"}
_DAYS = {"time_bottleneck", "time_starved", "time_down"}


def local_name(iri: str) -> str:
    """``NorthDC`` for ``http://…/supply-chain#NorthDC``."""
    return iri.rsplit("#", 1)[-1].rsplit("/", 1)[-1] or iri


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def format_metric(metric: str, value: Any) -> str:
    """A metric's value as the operator reads it: shares in %, days with ``d``, amounts
    with thousands separators; ``—`` when there is none."""
    number = _number(value)
    if number is None:
        return "—"
    if metric in SHARE_METRICS:
        return f"{number * 100:.1f}%"
    if metric in _DAYS:
        return f"{number:.0f} d" if number == int(number) else f"{number:.1f} d"
    if abs(number) >= 10 or number == int(number):
        return f"{number:,.0f}"
    return f"{number:,.1f}"


def format_delta(metric: str, delta: Any) -> str:
    """A difference with its sign: ``+3.6 pp`` for shares, ``-120`` for amounts."""
    number = _number(delta)
    if number is None:
        return "—"
    if metric in SHARE_METRICS:
        text = f"{number * 100:+.1f} pp"
    elif metric in _DAYS:
        text = f"{number:+.1f} d" if number != int(number) else f"{number:+.0f} d"
    elif abs(number) >= 10:
        text = f"{number:+,.0f}"
    else:
        text = f"{number:+,.1f}"
    return text


def verdict(metric: str, delta: Any, base: Any = None) -> str:
    """``better``, ``worse``, ``same`` (no change worth a colour: below 0.5 % of the base,
    or 0.05 pp of a share) or ``neutral`` (a metric that is neither better nor worse
    higher, or no figure)."""
    number = _number(delta)
    direction = METRICS.get(metric, ("", 0))[1]
    if number is None or direction == 0:
        return "neutral"
    reference = abs(_number(base) or 0.0)
    tolerance = 0.0005 if metric in SHARE_METRICS else max(reference * 0.005, 1e-9)
    if abs(number) <= tolerance:
        return "same"
    return "better" if number * direction > 0 else "worse"


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    """``{fill_rate, backlog, delivered}`` of a run: its listed ``summary``, else its
    result's metrics; empty when it has neither (queued, failed, not fetched)."""
    summary = run.get("summary")
    if isinstance(summary, dict) and summary:
        return summary
    metrics = (run.get("result") or {}).get("metrics") or {}
    return {k: metrics[k] for k in ("fill_rate", "backlog", "delivered") if k in metrics}


@dataclass
class CompareRow:
    metric: str
    label: str
    a: str
    b: str
    delta: str
    verdict: str


def comparison_rows(compare: dict[str, Any]) -> list[CompareRow]:
    """The system metrics of a comparison, in the order the server lists them."""
    system: dict[str, Any] = compare.get("system") or {}
    rows = []
    for metric in system:
        cell = system[metric] or {}
        delta = cell.get("delta")
        text = format_delta(metric, delta)
        pct = _number(cell.get("delta_pct"))
        # A percentage of a near-zero base (+40,000 %) says nothing: left out.
        if pct is not None and abs(pct) < 1000 and metric not in SHARE_METRICS and text != "—":
            text += f" ({pct:+.1f}%)"
        rows.append(
            CompareRow(
                metric,
                METRICS.get(metric, (metric.replace("_", " ").capitalize(), 0))[0],
                format_metric(metric, cell.get("a")),
                format_metric(metric, cell.get("b")),
                text,
                verdict(metric, delta, cell.get("a")),
            )
        )
    return rows


#: The per-entity columns: metric shown as "b (delta)".
ENTITY_METRICS = ["fill_rate", "backlog", "avg_utilisation", "time_bottleneck", "time_starved"]


@dataclass
class EntityRow:
    entity: str
    label: str
    #: metric → (shown text, tooltip, verdict)
    cells: dict[str, tuple[str, str, str]]
    #: How much the entity changed (for the order: most changed first).
    weight: float


def entity_rows(compare: dict[str, Any]) -> list[EntityRow]:
    """One row an entity, the most changed first (its largest relative change over
    :data:`ENTITY_METRICS`), ties by label."""
    rows = []
    for entity, figures in (compare.get("entities") or {}).items():
        cells: dict[str, tuple[str, str, str]] = {}
        weight = 0.0
        for metric in ENTITY_METRICS:
            cell = figures.get(metric) or {}
            a, b, delta = cell.get("a"), cell.get("b"), cell.get("delta")
            shown = format_metric(metric, b)
            if _number(delta) is not None and verdict(metric, delta, a) != "same":
                shown += f" ({format_delta(metric, delta)})"
            tip = f"A: {format_metric(metric, a)} · B: {format_metric(metric, b)}"
            cells[metric] = (shown, tip, verdict(metric, delta, a))
            d, base = _number(delta), _number(a)
            if d is not None:
                scale = 1.0 if metric in SHARE_METRICS else max(abs(base or 0.0), 1.0)
                weight = max(weight, abs(d) / scale)
        label = str(figures.get("label") or local_name(entity))
        rows.append(EntityRow(entity, label, cells, weight))
    rows.sort(key=lambda r: (-r.weight, r.label))
    return rows


def busiest_entities(result: dict[str, Any], metric: str, count: int = 6) -> list[str]:
    """The ``count`` entities with the highest peak of ``metric`` (``utilisation`` or a
    series: ``backlog``, ``inventory``, ``throughput``), highest first."""
    if metric == "utilisation":
        series: dict[str, list[float]] = result.get("utilisation") or {}
    else:
        series = (result.get("series") or {}).get(metric) or {}
    peaks = {
        e: max((v for v in values if _number(v) is not None), default=0.0)
        for e, values in series.items()
    }
    return sorted(peaks, key=lambda e: (-peaks[e], e))[:count]


def parameter_change(target: str, parameter: str, percent: float) -> dict[str, Any]:
    """``capacity -30 %`` → ``{"target", "parameter": "capacity", "factor": 0.7}``."""
    if parameter not in PARAMETERS:
        raise ValueError(f"unknown parameter {parameter!r}")
    factor = round(1.0 + percent / 100.0, 6)
    if factor < 0:
        raise ValueError("a change below -100 % leaves nothing")
    return {"target": target, "parameter": parameter, "factor": factor}


def outage_change(target: str, days: float, from_day: float) -> dict[str, Any]:
    """``target`` out of service for ``days`` from day ``from_day`` (an added event)."""
    if days <= 0:
        raise ValueError("an outage lasts at least a day")
    return {
        "event": {
            "at": float(from_day),
            "type": "resource.unavailable",
            "target": target,
            "duration": float(days),
        }
    }


def describe_change(change: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """``North DC capacity -30 %`` / ``SteelCo out for 10 days from day 20``."""
    labels = labels or {}
    if "event" in change:
        event = change["event"]
        who = labels.get(event.get("target", ""), local_name(str(event.get("target", ""))))
        return f"{who} out for {event.get('duration', 0):g} days from day {event.get('at', 0):g}"
    who = labels.get(change.get("target", ""), local_name(str(change.get("target", ""))))
    name = PARAMETERS.get(change.get("parameter", ""), change.get("parameter", "")).lower()
    if "factor" in change:
        percent = (float(change["factor"]) - 1.0) * 100.0
        return f"{who} {name} {percent:+.0f} %"
    return f"{who} {name} = {change.get('value')}"


@dataclass
class DistributionRow:
    metric: str
    label: str
    #: (mean, p5, p95) of the base and of the variant; None when the batch has none.
    base: tuple[float, float, float] | None
    variant: tuple[float, float, float] | None
    base_text: str
    variant_text: str
    delta: str
    verdict: str


def _stats(block: Any) -> tuple[float, float, float] | None:
    if not isinstance(block, dict):
        return None
    mean, p5, p95 = (_number(block.get(k)) for k in ("mean", "p5", "p95"))
    if mean is None:
        return None
    return mean, p5 if p5 is not None else mean, p95 if p95 is not None else mean


def distribution_rows(
    batch: dict[str, Any], metrics: list[str] | None = None
) -> list[DistributionRow]:
    """Base and variant of each key metric (``metrics``, default :data:`KEY_METRICS`
    then the batch's others) with p5-p95, and the change of the mean judged."""
    base: dict[str, Any] = batch.get("base") or {}
    variant: dict[str, Any] = batch.get("variant") or {}
    delta: dict[str, Any] = batch.get("delta") or {}
    names = metrics or (
        [m for m in KEY_METRICS if m in base or m in variant]
        + sorted(m for m in {*base, *variant} if m not in KEY_METRICS)
    )
    rows = []
    for metric in names:
        b, v = _stats(base.get(metric)), _stats(variant.get(metric))
        change = _number((delta.get(metric) or {}).get("mean"))
        if change is None and b is not None and v is not None:
            change = v[0] - b[0]

        def text(stats: tuple[float, float, float] | None, metric: str = metric) -> str:
            if stats is None:
                return "—"
            mean, p5, p95 = (format_metric(metric, x) for x in stats)
            return f"{mean} ({p5}{EN_DASH}{p95})"

        rows.append(
            DistributionRow(
                metric,
                METRICS.get(metric, (metric.replace("_", " ").capitalize(), 0))[0],
                b,
                v,
                text(b),
                text(v),
                format_delta(metric, change),
                verdict(metric, change, b[0] if b else None),
            )
        )
    return rows


def _share(value: Any) -> str:
    """A share of the seeds: ``80%`` (a decimal only when it is not a whole percent)."""
    number = _number(value)
    if number is None:
        return "—"
    percent = number * 100
    return f"{percent:.0f}%" if abs(percent - round(percent)) < 0.05 else f"{percent:.1f}%"


def bottleneck_rows(batch: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """``(entity, base share, variant share, base mean days, variant mean days)`` as a
    bottleneck, the variant's most frequent top bottleneck first."""
    items = [b for b in batch.get("bottlenecks") or [] if isinstance(b, dict)]
    items.sort(
        key=lambda b: (
            -(_number(b.get("variant_share")) or 0.0),
            -(_number(b.get("variant_mean_time", b.get("mean_time"))) or 0.0),
            -(_number(b.get("base_share")) or 0.0),
            str(b.get("label") or b.get("entity")),
        )
    )
    return [
        (
            str(b.get("label") or local_name(str(b.get("entity", "")))),
            _share(b.get("base_share")),
            _share(b.get("variant_share")),
            format_metric("time_bottleneck", b.get("base_mean_time")),
            format_metric("time_bottleneck", b.get("variant_mean_time", b.get("mean_time"))),
        )
        for b in items
    ]
