"""The twin's flow model on cases whose answers can be worked out by hand.

Conventions (core/twin/simulation.py): one step per time unit unless said; the snapshot at
time t shows the state after the steps before t; ``system["backlog"]`` is the external
demand not yet delivered.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from mimir.core.ontology.formats import parse_triples, resolve_format
from mimir.core.twin import (
    Entity,
    Relationship,
    Scenario,
    ScenarioEvent,
    Twin,
    TwinError,
    simulate,
    twin_from_triples,
)
from mimir.core.twin.builder import diff_twins
from mimir.core.twin.simulation import bounded

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "ontologies"
E = "http://e/"


def line(*stages: tuple[str, float | None, float], **extra: dict[str, Any]) -> Twin:
    """``A supplies B supplies C …`` with (name, capacity, external demand) each; ``extra``
    gives more fields by name."""
    entities = [
        Entity(id=E + n, label=n, capacity=c, demand=d, **extra.get(n, {})) for n, c, d in stages
    ]
    links = [
        Relationship(source=a.id, target=b.id, type="supplies")
        for a, b in itertools.pairwise(entities)
    ]
    return Twin(name="line", entities=entities, relationships=links)


def per(result: Any, name: str) -> dict[str, Any]:
    return result.metrics["per_entity"][E + name]


def run(twin: Twin, duration: float = 10, events: list[dict[str, Any]] | None = None,
        **options: Any) -> Any:  # fmt: skip
    scenario = Scenario(
        name="s",
        duration=duration,
        events=[ScenarioEvent.model_validate(e) for e in events or []],
        **options,
    )
    return simulate(twin, scenario, seed=1)


# -- the acceptance cases ----------------------------------------------------------------


def test_a_slower_second_stage_bounds_the_line() -> None:
    # A makes 10 a day, B can pass on 6, customers want 20 at B.
    result = run(line(("A", 10, 0), ("B", 6, 20)))
    m = result.metrics
    assert m["throughput"] == 6 and m["delivered"] == 60 and m["demand"] == 200
    # B orders only what it can work: A runs at 60 %, B at 100 %.
    assert per(result, "A")["avg_utilisation"] == 0.6
    assert per(result, "B")["avg_utilisation"] == 1.0
    assert result.system["backlog"] == [14.0 * t for t in range(11)]
    assert [b["label"] for b in m["bottlenecks"]] == ["B"]
    assert m["bottlenecks"][0]["time_over_threshold"] == 10
    assert per(result, "B")["time_starved"] == 0


def test_a_slower_first_stage_bounds_the_line_and_starves_the_next() -> None:
    result = run(line(("A", 6, 0), ("B", 10, 20)))
    m = result.metrics
    assert m["throughput"] == 6
    assert per(result, "A")["avg_utilisation"] == 1.0
    assert per(result, "B")["avg_utilisation"] == 0.6
    assert [b["label"] for b in m["bottlenecks"]] == ["A"]
    # B has a backlog and spare capacity but nothing to work on: starved, every step.
    assert per(result, "B")["time_starved"] == 10 and per(result, "B")["time_bottleneck"] == 0


def test_a_supplier_outage_backlog_clears_at_the_spare_capacity_rate() -> None:
    # S (10/day) supplies F, whose customers want 8/day; S is out on days 20-29.
    result = run(
        line(("S", 10, 0), ("F", 100, 8)),
        duration=100,
        events=[{"at": 20, "type": "resource.unavailable", "target": "S", "duration": 10}],
    )
    backlog = result.system["backlog"]
    assert backlog[:21] == [0.0] * 21
    assert backlog[21:31] == [8.0 * k for k in range(1, 11)]  # 8 a day while S is out
    # Then S ships 10 a day against 8 of new demand: the 80 clear at 2 a day, 40 days.
    assert backlog[30:71] == [80.0 - 2 * k for k in range(41)]
    assert backlog[70:] == [0.0] * 31
    s, f = per(result, "S"), per(result, "F")
    assert s["time_down"] == 10 and s["time_bottleneck"] == 39  # days 30 .. 68 at capacity
    assert f["time_starved"] == 49 and f["fill_rate"] == 1.0
    kinds = [(t["time"], t["kind"], t["entity"][len(E) :]) for t in result.timeline]
    assert kinds[:4] == [(20, "event", "S"), (20, "down", "S"), (20, "starved", "F"),
                         (20, "backlog", "F")]  # fmt: skip
    assert (70 - 1, "backlog_cleared", "F") in kinds


def test_seeded_runs_are_reproducible() -> None:
    twin = line(("A", 30, 0), ("B", 40, 20, ), B={"mtbf": 5.0, "mttr": 2.0})  # fmt: skip
    scenario = Scenario(name="noisy", duration=60, noise=0.3)
    first = simulate(twin, scenario, seed=7)
    again = simulate(twin, scenario, seed=7)
    other = simulate(twin, scenario, seed=8)
    for field in ("utilisation", "series", "system", "metrics", "timeline"):
        assert getattr(first, field) == getattr(again, field), field
    assert first.system != other.system and first.timeline != other.timeline
    seeded = simulate(twin, scenario.model_copy(update={"seed": 7}))
    assert seeded.system == first.system and seeded.seed == 7


# -- flow mechanics ----------------------------------------------------------------------


def test_shipments_arrive_after_the_lead_time() -> None:
    # A ships with a lead time of 3 days; B starts empty and sells 5 a day.
    result = run(line(("A", 10, 0), ("B", 10, 5), A={"lead_time": 3.0}), duration=12)
    backlog = result.system["backlog"]
    # Nothing arrives for the first three days: 5, 10, 15 owed; the first shipment lands on
    # day 3, and from then on B delivers as fast as A's 10 a day minus new demand allows.
    assert backlog[1:4] == [5.0, 10.0, 15.0]
    assert backlog[3] > backlog[4] > backlog[5]
    assert backlog[-1] == 0
    assert result.series["inventory"][E + "B"][:4] == [0.0, 0.0, 0.0, 0.0]


def test_assembly_needs_every_input_and_alternatives_add_up() -> None:
    def twin(inputs: str) -> Twin:
        entities = [
            Entity(id=E + "P", label="P", capacity=10),
            Entity(id=E + "Q", label="Q", capacity=4),
            Entity(id=E + "M", label="M", capacity=100, demand=50, inputs=inputs),
        ]
        links = [
            Relationship(source=E + "P", target=E + "M", type="supplies"),
            Relationship(source=E + "Q", target=E + "M", type="supplies"),
        ]
        return Twin(name=inputs, entities=entities, relationships=links)

    assert run(twin("all")).metrics["throughput"] == 4  # a unit needs one of each
    assert run(twin("any")).metrics["throughput"] == 14  # either supplier will do
    assembly = run(twin("all")).metrics
    # Q binds; P cannot keep up with the orders either, but its parts pile up at M.
    assert assembly["bottlenecks"][0]["label"] == "Q"
    assert run(twin("all")).series["inventory"][E + "M"][-1] == 60  # (10 - 4) x 10 of P's


def test_a_full_buffer_holds_back_its_supplier() -> None:
    # B holds at most 12 and sells 2 a day; A could ship 10 a day and B orders up to a
    # target stock of 30 it has no room for.
    result = run(line(("A", 10, 0), ("B", 50, 2), B={"buffer": 12.0, "target_stock": 30.0}))
    assert max(result.series["inventory"][E + "B"]) == 10  # 12 held, 2 sold in the step
    assert per(result, "A")["processed"] == pytest.approx(12 + 2 * 9)


def test_depends_on_stops_the_dependant_with_its_dependency() -> None:
    entities = [
        Entity(id=E + "Power", label="Power", capacity=None),
        Entity(id=E + "Plant", label="Plant", capacity=20, demand=10),
    ]
    twin = Twin(
        name="dep",
        entities=entities,
        relationships=[Relationship(source=E + "Plant", target=E + "Power", type="poweredBy")],
    )
    assert twin.role_of(twin.relationships[0]) == "depends_on"
    result = run(
        twin,
        duration=20,
        events=[{"at": 5, "type": "external.outage", "target": "Power", "duration": 3}],
    )
    plant = per(result, "Plant")
    assert plant["time_down"] == 3
    assert result.system["backlog"][6:9] == [10.0, 20.0, 30.0]
    assert result.system["backlog"][9:12] == [20.0, 10.0, 0.0]  # 10 spare a day


def test_random_failures_and_repairs() -> None:
    result = run(line(("A", 20, 10), A={"mtbf": 10.0, "mttr": 2.0}), duration=200)
    kinds = [t["kind"] for t in result.timeline if t["kind"] in ("failure", "repair")]
    assert kinds and kinds[::2] == ["failure"] * len(kinds[::2])
    assert kinds[1::2] == ["repair"] * len(kinds[1::2])
    assert result.metrics["failures"] == kinds.count("failure") > 5
    assert 0 < per(result, "A")["time_down"] < 100
    assert result.metrics["fill_rate"] < 1 or result.metrics["backlog"] == 0


# -- each event family -------------------------------------------------------------------


def test_resource_events() -> None:
    result = run(
        line(("A", 10, 8)),
        events=[{"at": 2, "type": "resource.capacity_change", "target": "A", "magnitude": 0.5,
                 "duration": 4}],
    )  # fmt: skip
    # 5 a day against 8 on days 2-5 (3 short each), then 2 spare a day.
    assert result.system["backlog"][:11] == [0, 0, 0, 3, 6, 9, 12, 10, 8, 6, 4]
    unavailable = run(
        line(("A", 10, 8)),
        events=[{"at": 2, "type": "resource.unavailable", "target": "A", "duration": 1}],
    )
    assert unavailable.system["backlog"][:6] == [0, 0, 0, 8, 6, 4]


def test_demand_events() -> None:
    surge = run(
        line(("A", 10, 8)),
        events=[{"at": 3, "type": "demand.surge", "target": "A", "magnitude": 1.5,
                 "duration": 2}],
    )  # fmt: skip
    assert surge.system["demand"][3:7] == [8, 12, 12, 8]  # snapshot t: the step before t
    assert surge.system["backlog"][3:8] == [0, 2, 4, 2, 0]
    drop = run(line(("A", 10, 8)), events=[{"at": 0, "type": "demand.drop", "target": "A"}])
    assert drop.metrics["demand"] == 40  # half of 8 for 10 days
    order = run(
        line(("A", 10, 8)),
        events=[{"at": 2, "type": "demand.order", "target": "A", "magnitude": 50}],
    )
    # One order of 50 on day 2: 48 left after that day, cleared at 2 a day.
    assert order.system["backlog"][3:6] == [48, 46, 44]
    assert order.metrics["demand"] == 130
    with pytest.raises(ValidationError, match="needs a magnitude"):
        ScenarioEvent(at=1, type="demand.order", target="A")


def test_process_events() -> None:
    delay = run(
        line(("A", 12, 8)),
        events=[{"at": 2, "type": "process.delay", "target": "A", "magnitude": 2.0,
                 "duration": 2}],
    )  # fmt: skip
    assert delay.system["backlog"][:7] == [0, 0, 0, 2, 4, 0, 0]  # 6 a day, then 12
    failure = run(
        line(("A", 12, 8)),
        events=[{"at": 1, "type": "process.failure", "target": "A", "duration": 1}],
    )
    assert failure.system["backlog"][:4] == [0, 0, 8, 4] and per(failure, "A")["time_down"] == 1
    yielded = run(
        line(("A", 100, 10)), events=[{"at": 0, "type": "process.yield", "target": "A",
                                        "magnitude": 0.5}],
    )  # fmt: skip
    a = per(yielded, "A")
    assert (a["processed"], a["scrap"], a["delivered"]) == (200, 100, 100)
    with pytest.raises(ValidationError, match="above 0"):
        ScenarioEvent(at=1, type="process.delay", target="A", magnitude=0)
    with pytest.raises(ValidationError, match="from 0 to 1"):
        ScenarioEvent(at=1, type="process.yield", target="A", magnitude=1.5)


def test_policy_events() -> None:
    stocked = run(
        line(("A", 100, 0), ("B", 100, 5)),
        events=[{"at": 4, "type": "policy.target_stock", "target": "B", "magnitude": 30}],
    )
    inventory = stocked.series["inventory"][E + "B"]
    assert inventory[:5] == [0] * 5 and inventory[-1] == 30
    expedited = run(
        line(("A", 10, 0), ("B", 10, 5), A={"lead_time": 4.0}),
        duration=12,
        events=[{"at": 0, "type": "policy.expedite", "target": "A", "magnitude": 0.5}],
    )
    # Lead time 4 x 0.5 = 2: the first goods reach B on day 2.
    assert expedited.system["backlog"][1:3] == [5.0, 10.0]
    assert expedited.system["backlog"][3] < 15.0


def test_external_events() -> None:
    slow = run(
        line(("A", 10, 0), ("B", 10, 5), A={"lead_time": 1.0}),
        duration=12,
        events=[{"at": 0, "type": "external.transport_delay", "target": "A", "magnitude": 3}],
    )
    assert slow.system["backlog"][1:4] == [5.0, 10.0, 15.0]  # 1 x 3 = 3 days in transit
    out = run(
        line(("A", 10, 0), ("B", 10, 5)),
        events=[{"at": 2, "type": "external.outage", "target": "A", "duration": 2}],
    )
    assert per(out, "A")["time_down"] == 2 and per(out, "B")["time_starved"] == 2


def test_propagate_spreads_an_event_scaled_per_hop() -> None:
    # An explicit spread: a surge at A reaches B and C, halved per hop, a day per hop.
    twin = line(("A", 100, 10), ("B", 100, 10), ("C", 100, 10))
    result = run(
        twin,
        events=[{"at": 2, "type": "demand.surge", "target": "A", "magnitude": 2.0,
                 "propagate": "outgoing", "delay": 1}],
    )  # fmt: skip
    effects = [(e["time"], e["entity"][len(E) :], e["factor"]) for e in result.events]
    assert effects == [(2, "A", 2.0), (3, "B", 1.5), (4, "C", 1.25)]
    # Without ``propagate`` an event stays on its target (the flow carries the rest).
    alone = run(twin, events=[{"at": 2, "type": "demand.surge", "target": "A"}])
    assert [e["entity"] for e in alone.events] == [E + "A"]


def test_results_are_bounded_to_a_resolution() -> None:
    result = run(line(("A", 10, 0), ("B", 6, 20)), duration=100)
    assert result.resolution == {"snapshots": 101, "points": 101, "method": "full"}
    small = bounded(result, 11)
    assert small.resolution == {"snapshots": 101, "points": 11, "method": "mean"}
    assert small.times == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert small.system["backlog"] == [14.0 * t for t in small.times]  # a level: bucket end
    assert small.series["throughput"][E + "B"][1:] == [6.0] * 10  # a rate: bucket mean
    assert bounded(result, 500) == result.model_copy(update={"resolution": result.resolution})


# -- scenarios and twins -----------------------------------------------------------------


def test_unknown_targets_and_empty_twins_are_errors() -> None:
    twin = line(("A", 100, 50))
    bad = Scenario(name="x", events=[ScenarioEvent(at=1, type="demand.surge", target="Z")])
    with pytest.raises(TwinError, match="'Z'"):
        simulate(twin, bad)
    with pytest.raises(TwinError, match="no entities"):
        simulate(Twin(name="empty"), Scenario(name="x"))
    with pytest.raises(ValueError, match="event"):
        Scenario.model_validate(
            {"name": "x", "events": [{"at": 1, "type": "meteor", "target": "A"}]}
        )
    with pytest.raises(ValidationError, match="whole number of steps"):
        Scenario(name="x", step=0.4, snapshot_interval=1)
    assert Scenario(name="x", snapshot_interval=2.5).flow_step == pytest.approx(2.5 / 3)


def test_a_twin_from_an_ontology_declares_roles_and_says_what_it_assumed() -> None:
    ttl = b"""@prefix ex: <http://ex/> . @prefix owl: <http://www.w3.org/2002/07/owl#> .
    ex:Mine a ex:Site ; ex:capacity 30 ; ex:feeds ex:Mill .
    ex:Mill a ex:Site ; ex:capacity 20 ; ex:leadTime 2 ; ex:demand 15 ; ex:poweredBy ex:Grid ;
        ex:ownedBy ex:Corp ; ex:mtbf 40 ; ex:mttr 2 .
    ex:Grid a ex:Utility . ex:Corp a ex:Company .
    """
    triples = list(parse_triples(ttl, resolve_format("turtle")))
    twin = twin_from_triples("t", triples)
    mill = twin.entity_index()["http://ex/Mill"]
    assert (mill.capacity, mill.demand, mill.lead_time, mill.mtbf, mill.mttr) == (20, 15, 2, 40, 2)
    roles = {r.type: r.role for r in twin.relationships}
    assert roles == {"feeds": "supplies", "poweredBy": "depends_on", "ownedBy": "none"}
    assert twin.warnings == [
        "2 entities have no capacity and are modelled as unbounded: Grid, Corp",
        "relationships carry nothing in the flow (declare their role in roles): ownedBy",
    ]
    declared = twin_from_triples("t", triples, roles={"ownedBy": "depends_on", "feeds": "none"})
    assert {r.type: r.role for r in declared.relationships}["ownedBy"] == "depends_on"
    assert "no relationship supplies another entity" in declared.warnings[-1]
    # supplied_by: goods flow from the object to the subject.
    inverse = twin_from_triples("t", triples, roles={"feeds": "supplied_by"})
    assert simulate(inverse, Scenario(name="x", duration=5)).metrics["demand"] == 75


def test_diff_twins_says_what_changed() -> None:
    old = line(("A", 10, 0), ("B", 6, 20))
    new = line(("A", 12, 0), ("B", 6, 20), ("C", None, 5))
    diff = diff_twins(old, new)
    assert diff["entities"]["added"] == [E + "C"] and diff["entities"]["removed"] == []
    assert diff["entities"]["changed"] == [
        {"id": E + "A", "label": "A", "fields": {"capacity": [10, 12]}}
    ]
    assert diff["relationships"]["added"] == [
        {"source": E + "B", "type": "supplies", "target": E + "C", "role": "supplies"}
    ]
    assert diff["unchanged"] is False and diff_twins(old, old)["unchanged"] is True


def test_the_supply_chain_example() -> None:
    triples = parse_triples((RESOURCES / "supply_chain.ttl").read_bytes(), resolve_format("turtle"))
    twin = twin_from_triples("supply-chain", triples)
    assert len(twin.entities) == 7 and len(twin.relationships) == 6 and twin.warnings == []
    dc = next(e for e in twin.entities if e.label == "North DC")
    assert (dc.type, dc.capacity, dc.demand, dc.inventory) == ("DistributionCentre", 500, 0, 1000)
    scenario = Scenario.model_validate(
        yaml.safe_load((RESOURCES / "supply_chain_scenario.yaml").read_text())
    )
    result = simulate(twin, scenario)
    backlog = result.system["backlog"]
    # As the scenario file says: no backlog before the rush, then 20 more a day (520 sold
    # against North DC's 500), 120 a day while SteelCo is out, 20 a day again after.
    assert backlog[:11] == [0.0] * 11
    assert [round(b - a, 6) for a, b in itertools.pairwise(backlog[11:24])] == [20.0] * 12
    assert [round(b - a, 6) for a, b in itertools.pairwise(backlog[25:38])] == [120.0] * 12
    assert [round(b - a, 6) for a, b in itertools.pairwise(backlog[38:])] == [20.0] * 22
    m = result.metrics
    summary = [(b["label"], b["first_over_at"], b["time_over_threshold"]) for b in m["bottlenecks"]]
    assert summary[:2] == [("North DC", 10, 36), ("PlastiCorp", 20, 15)]
    assert 0 < m["stability_score"] < 1 and 0.9 < m["fill_rate"] < 0.95


def test_hostile_figures_and_long_dependency_chains() -> None:
    with pytest.raises(ValidationError, match="1,000,000 steps"):
        Scenario(name="x", step=5e-324)
    with pytest.raises(ValidationError, match="1,000,000 steps"):
        Scenario(name="x", duration=5e-324, step=5e-324)  # interval / step overflowed
    with pytest.raises(ValidationError, match="100,000 snapshots"):
        Scenario(name="x", snapshot_interval=5e-324)
    with pytest.raises(ValidationError, match="less than or equal"):
        Entity(id="a", capacity=1e308)
    # 1,500 entities each depending on the next: the last one's outage stops them all.
    chain = [Entity(id=f"{E}{k}", capacity=10, demand=1 if k == 0 else 0) for k in range(1500)]
    links = [
        Relationship(source=a.id, target=b.id, type="dependsOn")
        for a, b in itertools.pairwise(chain)
    ]
    twin = Twin(name="deps", entities=chain, relationships=links)
    result = run(
        twin, duration=3, events=[{"at": 1, "type": "resource.unavailable", "target": f"{E}1499"}]
    )
    assert result.metrics["per_entity"][f"{E}0"]["time_down"] == 2


def test_a_result_that_overflowed_fails_the_run() -> None:
    from mimir.core.twin.jobs import simulate_run

    surges = [
        {"at": 1, "type": "demand.surge", "target": "A", "magnitude": 1e12} for _ in range(30)
    ]
    scenario = Scenario(
        name="x", duration=3, events=[ScenarioEvent.model_validate(e) for e in surges]
    )
    with pytest.raises(TwinError, match="overflowed"):
        simulate_run(line(("A", 1e12, 1e12)), scenario, seed=1)
