"""The twin simulation on scenarios whose answers can be worked out by hand."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

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

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "ontologies"
E = "http://e/"


def chain(*caps: tuple[str, float, float]) -> Twin:
    """A -> B -> C ... with (name, capacity, demand) each."""
    entities = [Entity(id=E + n, label=n, capacity=c, demand=d) for n, c, d in caps]
    links = [
        Relationship(source=a.id, target=b.id, type="feeds")
        for a, b in itertools.pairwise(entities)
    ]
    return Twin(name="chain", entities=entities, relationships=links)


def test_a_surge_propagates_with_multiplier_and_delay() -> None:
    twin = chain(("A", 100, 50), ("B", 100, 50), ("C", 100, 50))
    scenario = Scenario(
        name="surge",
        duration=30,
        events=[ScenarioEvent(at=10, type="demand.surge", target="A", magnitude=2.0, delay=5)],
    )
    result = simulate(twin, scenario)
    u = result.utilisation
    # A doubles at 10 (50/100 -> 1.0); B gets 1 + 1*0.5 at 15; C gets 1 + 1*0.25 at 20.
    assert u[E + "A"][9:11] == [0.5, 1.0]
    assert u[E + "B"][14:16] == [0.5, 0.75]
    assert u[E + "C"][19:21] == [0.5, 0.625]
    assert len(result.times) == 31 and result.times[-1] == 30
    m = result.metrics
    assert m["events_processed"] == 1 and m["effects_applied"] == 3
    assert m["entities_affected"] == 3
    assert [b["label"] for b in m["bottlenecks"]] == ["A"]
    assert m["bottlenecks"][0]["first_over_at"] == 10
    assert m["bottlenecks"][0]["time_over_threshold"] == 21  # snapshots 10..30
    assert m["peak_utilisation"] == 1.0 and m["peak_entity"] == E + "A"
    # mean of A (10 x 0.5 + 21 x 1), B (15 x 0.5 + 16 x 0.75), C (20 x 0.5 + 11 x 0.625) over 93
    expected = (10 * 0.5 + 21 + 15 * 0.5 + 16 * 0.75 + 20 * 0.5 + 11 * 0.625) / 93
    assert m["avg_utilisation"] == pytest.approx(expected, abs=1e-6)


def test_an_outage_with_duration_ends_and_leaves_unmet_demand() -> None:
    twin = chain(("A", 100, 80), ("B", 100, 40))
    scenario = Scenario(
        name="outage",
        duration=10,
        bottleneck_threshold=0.95,
        events=[
            ScenarioEvent(at=2, type="resource.unavailable", target=E + "A", duration=3,
                          multiplier=0.5, delay=1),
        ],
    )  # fmt: skip
    result = simulate(twin, scenario)
    # A stopped on 2, 3, 4 (utilisation 1, all 80/unit unmet); back at 5.
    assert result.utilisation[E + "A"][:7] == [0.8, 0.8, 1.0, 1.0, 1.0, 0.8, 0.8]
    # B loses half its capacity one step later for as long: 40/50 = 0.8 on 3, 4, 5.
    assert result.utilisation[E + "B"][:7] == [0.4, 0.4, 0.4, 0.8, 0.8, 0.8, 0.4]
    m = result.metrics
    assert m["per_entity"][E + "A"]["unmet_demand"] == pytest.approx(3 * 80)
    assert [b["entity"] for b in m["bottlenecks"]] == [E + "A"]
    assert m["bottlenecks"][0]["time_over_threshold"] == 3
    ended = [entry for entry in result.events if entry.get("ended")]
    assert [(e["time"], e["entity"]) for e in ended] == [(5, E + "A"), (6, E + "B")]


def test_delay_drop_and_capacity_change_compose() -> None:
    twin = chain(("A", 200, 100))
    scenario = Scenario(
        name="mix",
        duration=4,
        events=[
            ScenarioEvent(at=1, type="process.delay", target="A", magnitude=1.5),
            ScenarioEvent(at=2, type="demand.drop", target="A", magnitude=0.5),
            ScenarioEvent(at=3, type="resource.capacity_change", target="A", magnitude=0.5),
        ],
    )
    # 100/200; 100/(200/1.5); 50/(200/1.5); 50/(100/1.5)
    assert simulate(twin, scenario).utilisation[E + "A"] == [0.5, 0.75, 0.375, 0.75, 0.75]


def test_seeded_runs_are_reproducible() -> None:
    twin = chain(("A", 100, 50), ("B", 100, 60))
    scenario = Scenario(name="noisy", duration=50, noise=0.2, events=[])
    first = simulate(twin, scenario, seed=7)
    again = simulate(twin, scenario, seed=7)
    other = simulate(twin, scenario, seed=8)
    assert first.utilisation == again.utilisation and first.metrics == again.metrics
    assert first.utilisation != other.utilisation
    assert simulate(twin, scenario.model_copy(update={"seed": 7})).utilisation == first.utilisation


def test_unknown_targets_and_empty_twins_are_errors() -> None:
    twin = chain(("A", 100, 50))
    bad = Scenario(name="x", events=[ScenarioEvent(at=1, type="demand.surge", target="Z")])
    with pytest.raises(TwinError, match="'Z'"):
        simulate(twin, bad)
    with pytest.raises(TwinError, match="no entities"):
        simulate(Twin(name="empty"), Scenario(name="x"))
    with pytest.raises(ValueError, match="event"):
        Scenario.model_validate(
            {"name": "x", "events": [{"at": 1, "type": "meteor", "target": "A"}]}
        )


def test_the_supply_chain_example_has_its_bottleneck() -> None:
    triples = parse_triples((RESOURCES / "supply_chain.ttl").read_bytes(), resolve_format("turtle"))
    twin = twin_from_triples("supply-chain", triples)
    assert len(twin.entities) == 7 and len(twin.relationships) == 6
    dc = next(e for e in twin.entities if e.label == "North DC")
    assert (dc.type, dc.capacity, dc.demand) == ("DistributionCentre", 500, 420)
    scenario = Scenario.model_validate(
        yaml.safe_load((RESOURCES / "supply_chain_scenario.yaml").read_text())
    )
    m = simulate(twin, scenario).metrics
    summary = [(b["label"], b["first_over_at"], b["time_over_threshold"]) for b in m["bottlenecks"]]
    assert summary == [("North DC", 10, 51), ("SteelCo", 20, 15), ("Main factory", 21, 15)]
    assert m["per_entity"][dc.id]["peak_utilisation"] == 1.0
    assert 0 < m["stability_score"] < 1
