"""What-if analysis: the variant (apply_changes), the summary over seeds (summarise), and a
batch queued through the API onto a real worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from mimir.core.twin import (
    Entity,
    Relationship,
    RunRecord,
    Scenario,
    Twin,
    TwinError,
    TwinStore,
    simulate,
)
from mimir.core.twin.whatif import (
    BatchRun,
    Change,
    WhatIfBatch,
    WhatIfStore,
    apply_changes,
    batch_status,
    digest,
    percentile,
    stats,
    summarise,
)
from tests.helpers import RedisServer, ServerProcess, WorkerProcess, free_port, wait_until

CAPACITY_MINUS_30 = {"target": "supplier", "parameter": "capacity", "factor": 0.7}
SUPPLIER_OUT_10_DAYS = {
    "event": {"at": 10, "type": "resource.unavailable", "target": "supplier", "duration": 10}
}


def line(duration: float = 60, **scenario: Any) -> tuple[Twin, Scenario]:
    """Supplier (capacity 10/day) -> store (external demand 8/day)."""
    twin = Twin(
        id="line",
        name="line",
        entities=[
            Entity(id="urn:x#supplier", label="supplier", capacity=10.0),
            Entity(id="urn:x#store", label="store", demand=8.0),
        ],
        relationships=[
            Relationship(source="urn:x#supplier", target="urn:x#store", type="supplies")
        ],
    )
    return twin, Scenario(id="base", name="base", duration=duration, **scenario)


def changes(*raw: dict) -> list[Change]:
    return [Change.model_validate(c) for c in raw]


# -- apply_changes ----------------------------------------------------------------------


def test_capacity_minus_30_percent_makes_the_backlog_grow_one_a_day() -> None:
    twin, scenario = line()
    variant_twin, variant = apply_changes(twin, scenario, changes(CAPACITY_MINUS_30))
    assert variant_twin.entity_index()["urn:x#supplier"].capacity == pytest.approx(7.0)
    assert twin.entity_index()["urn:x#supplier"].capacity == 10.0  # the base is untouched
    assert variant.events == [] and variant.id == "base"
    base = simulate(twin, scenario, 1)
    after = simulate(variant_twin, variant, 1)
    assert base.metrics["backlog"] == 0 and base.metrics["fill_rate"] == 1.0
    # 7 < 8: one unit a day more backlog, from the first day on.
    assert after.system["backlog"][:6] == pytest.approx([0, 1, 2, 3, 4, 5])
    assert after.metrics["backlog"] == pytest.approx(60)
    assert after.metrics["throughput"] == pytest.approx(7)
    assert after.metrics["bottlenecks"][0]["label"] == "supplier"


def test_supplier_out_ten_days_backlogs_80_cleared_at_2_a_day() -> None:
    twin, scenario = line()
    variant_twin, variant = apply_changes(
        twin, scenario, changes(SUPPLIER_OUT_10_DAYS), variant_id="base.whatif-1"
    )
    assert variant_twin == twin and variant.id == "base.whatif-1"
    assert [e.type.value for e in variant.events] == ["resource.unavailable"]
    assert scenario.events == []
    backlog = simulate(variant_twin, variant, 1).system["backlog"]
    assert backlog[20] == pytest.approx(80)  # 10 days x 8
    assert backlog[21:25] == pytest.approx([78, 76, 74, 72])  # spare capacity 10 - 8
    assert backlog[60] == pytest.approx(0)  # 80 / 2 = 40 days after it came back


def test_values_factors_in_order_and_names() -> None:
    twin, scenario = line()
    variant_twin, _ = apply_changes(
        twin,
        scenario,
        changes(
            {"target": "store", "parameter": "demand", "value": 5},
            {"target": "store", "parameter": "demand", "factor": 2},  # after the value: 10
            {"target": "urn:x#supplier", "parameter": "lead_time", "value": 2},
            {"target": "supplier", "parameter": "inventory", "value": 30},
            {"target": "store", "parameter": "buffer", "value": 50},
            {"target": "store", "parameter": "target_stock", "value": 4},
        ),
    )
    store = variant_twin.entity_index()["urn:x#store"]
    supplier = variant_twin.entity_index()["urn:x#supplier"]
    assert store.demand == 10 and store.buffer == 50 and store.target_stock == 4
    assert supplier.lead_time == 2 and supplier.inventory == 30


def test_bad_changes_are_refused_naming_what() -> None:
    twin, scenario = line()
    with pytest.raises(TwinError, match=r"changes\[0\]\.target: 'Mars'"):
        apply_changes(
            twin, scenario, changes({"target": "Mars", "parameter": "capacity", "factor": 0.5})
        )
    with pytest.raises(TwinError, match=r"changes\[1\]\.event: .*'Pluto'"):
        apply_changes(
            twin,
            scenario,
            changes(
                CAPACITY_MINUS_30,
                {"event": {"at": 1, "type": "external.outage", "target": "Pluto"}},
            ),
        )
    with pytest.raises(TwinError, match="unbounded"):  # the store's capacity is None
        apply_changes(
            twin, scenario, changes({"target": "store", "parameter": "capacity", "factor": 2})
        )
    with pytest.raises(TwinError, match=r"changes\[0\]\.factor: .* not a finite number"):
        apply_changes(
            twin,
            scenario,
            changes({"target": "supplier", "parameter": "capacity", "factor": 1e308}),
        )
    with pytest.raises(TwinError, match="at or after the end"):
        apply_changes(
            twin,
            scenario,
            changes({"event": {"at": 60, "type": "external.outage", "target": "supplier"}}),
        )
    for bad, word in (
        ({"target": "supplier", "parameter": "colour", "factor": 1}, "parameter"),
        ({"target": "supplier", "parameter": "capacity", "factor": -0.1}, "factor"),
        ({"target": "supplier", "parameter": "capacity", "factor": 1, "value": 2}, "exactly one"),
        ({"target": "supplier", "parameter": "capacity"}, "exactly one"),
        ({"parameter": "capacity", "factor": 1}, "target"),
        ({"target": "supplier", "factor": 1}, "parameter"),
        ({**SUPPLIER_OUT_10_DAYS, "factor": 2}, "not both"),
        ({"target": "supplier", "parameter": "capacity", "factor": "lots"}, "factor"),
        ({"target": "supplier", "parameter": "capacity", "factor": 1, "colour": 1}, "colour"),
    ):
        with pytest.raises(ValidationError, match=word):
            Change.model_validate(bad)


# -- summarise --------------------------------------------------------------------------


def test_percentiles_interpolate_linearly_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0, 5.0]  # sorted 1..5: rank (n - 1) p / 100
    assert percentile(values, 0) == 1 and percentile(values, 100) == 5
    assert percentile(values, 50) == 3
    assert percentile(values, 5) == pytest.approx(1.2)  # rank 0.2
    assert percentile(values, 95) == pytest.approx(4.8)  # rank 3.8
    assert percentile(list(range(11)), 95) == pytest.approx(9.5)
    assert percentile([7.0], 5) == percentile([7.0], 95) == 7
    with pytest.raises(ValueError):
        percentile([], 50)
    assert stats([1, None, 3]) == {"mean": 2.0, "p5": 1.1, "p95": 2.9, "n": 2}
    assert stats([None]) == {"mean": None, "p5": None, "p95": None, "n": 0}


def fake(seed: int, backlog: float, top: str | None, **times: float) -> dict:
    """A run's digest with a given backlog and bottleneck times."""
    return {
        "seed": seed,
        "metrics": {
            "fill_rate": None if backlog < 0 else 1.0,
            "delivered": 100.0,
            "throughput": 1.0,
            "backlog": backlog,
            "peak_backlog": backlog,
            "avg_utilisation": 0.5,
        },
        "top": top,
        "bottlenecks": times,
        "labels": {e: e.upper() for e in times},
    }


def test_summary_of_seeds_pairs_and_bottleneck_ranking() -> None:
    base = [fake(1, 0, None), fake(2, 10, "b", b=5), fake(3, 20, "a", a=4, b=1)]
    variant = [fake(1, 15, "a", a=10), fake(2, 25, "a", a=20, b=2), fake(4, 60, "b", b=9)]
    summary = summarise(base, variant)
    assert summary["seeds"] == {"base": 3, "variant": 3, "paired": 2}
    assert summary["base"]["backlog"] == {"mean": 10.0, "p5": 1.0, "p95": 19.0, "n": 3}
    assert summary["variant"]["backlog"]["mean"] == pytest.approx(100 / 3, abs=1e-6)
    # Paired by seed: 15 - 0 and 25 - 10 (seed 3 and 4 ran on one side only).
    assert summary["delta"]["backlog"] == {"mean": 15.0, "p5": 15.0, "p95": 15.0, "n": 2}
    assert summary["delta"]["delivered"]["mean"] == 0
    ranking = summary["bottlenecks"]
    assert [r["entity"] for r in ranking] == ["a", "b"]
    a, b = ranking
    assert a["label"] == "A" and a["variant_share"] == pytest.approx(2 / 3, abs=1e-6)
    assert a["base_share"] == pytest.approx(1 / 3, abs=1e-6)
    assert a["mean_time"] == a["variant_mean_time"] == 10  # (10 + 20 + 0) / 3
    assert a["base_mean_time"] == pytest.approx(4 / 3, abs=1e-6)
    assert b["variant_share"] == pytest.approx(1 / 3, abs=1e-6)
    assert b["base_mean_time"] == 2 and b["variant_mean_time"] == pytest.approx(11 / 3, abs=1e-6)


def test_summary_of_real_runs_names_the_supplier() -> None:
    twin, scenario = line(noise=0.1)
    variant_twin, variant = apply_changes(twin, scenario, changes(CAPACITY_MINUS_30))
    base = [simulate(twin, scenario, seed) for seed in range(5)]
    after = [simulate(variant_twin, variant, seed) for seed in range(5)]
    summary = summarise(base, after)
    assert digest(digest(after[0])) == digest(after[0])
    for side in ("base", "variant", "delta"):
        for metric, s in summary[side].items():
            assert s["n"] == 5 and s["p5"] <= s["mean"] <= s["p95"], (side, metric, s)
    assert summary["variant"]["backlog"]["mean"] > summary["base"]["backlog"]["mean"] + 30
    assert summary["delta"]["fill_rate"]["p95"] < 0
    top = summary["bottlenecks"][0]
    assert top["entity"] == "urn:x#supplier" and top["label"] == "supplier"
    assert top["variant_share"] == 1.0


# -- batches ----------------------------------------------------------------------------


def test_batch_status_and_store(tmp_path: Path) -> None:
    def runs(*statuses: str) -> list[BatchRun]:
        return [
            BatchRun.model_validate({"id": f"r{i}", "side": "base", "seed": i, "status": s})
            for i, s in enumerate(statuses)
        ]

    assert batch_status(runs("queued", "queued")) == "queued"
    assert batch_status(runs("queued", "succeeded")) == "running"
    assert batch_status(runs("succeeded", "succeeded")) == "succeeded"
    assert batch_status(runs("failed", "succeeded")) == "failed"

    twins = TwinStore(tmp_path / "twins.sqlite3")
    twin = twins.add_twin(line()[0].model_copy(update={"id": ""}))
    store = WhatIfStore(tmp_path / "twins.sqlite3")
    batch = store.add(
        WhatIfBatch(id="b1", twin_id=twin.id, scenario_id="base", request={"seeds": [1]})
    )
    assert batch.created_at
    saved = batch.model_copy(update={"runs": runs("succeeded"), "status": "succeeded"})
    store.save(saved)
    assert store.get(twin.id, "b1") == saved
    assert [b.id for b in store.list_batches(twin.id)] == ["b1"]
    with pytest.raises(Exception, match="no what-if batch 'b2'"):
        store.get(twin.id, "b2")
    with pytest.raises(Exception, match="no twin"):
        store.add(WhatIfBatch(id="b3", twin_id="gone", scenario_id="base"))
    twins.add_run(RunRecord(id="r0", twin_id=twin.id, scenario_id="base", batch_id="b1"))
    twins.delete_twin(twin.id)  # its batches go with it
    assert store.list_batches(twin.id) == []


def test_a_batch_ends_failed_with_its_errors_and_the_runs_that_succeeded(tmp_path: Path) -> None:
    """The route's refresh on runs that ended in the twin store (no job to read)."""
    from mimir.server.routes.twin_whatif import _answer, _refresh

    twins = TwinStore(tmp_path / "twins.sqlite3")
    twin, scenario = line(noise=0.1)
    twin = twins.add_twin(twin.model_copy(update={"id": ""}))
    variant_twin, variant = apply_changes(twin, scenario, changes(CAPACITY_MINUS_30))
    entries = []
    for seed in (1, 2):
        for side, run_twin, run_scenario in (
            ("base", twin, scenario),
            ("variant", variant_twin, variant),
        ):
            run = twins.add_run(
                RunRecord(id=f"{side}-{seed}", twin_id=twin.id, scenario_id="base", batch_id="b")
            )
            if (side, seed) == ("variant", 2):
                twins.finish_run(run.id, None, "TwinError: it broke")
            else:
                twins.finish_run(run.id, simulate(run_twin, run_scenario, seed), None)
            entries.append(BatchRun.model_validate({"id": run.id, "side": side, "seed": seed}))
    entries.append(BatchRun(id="gone", side="base", seed=3))
    store = WhatIfStore(tmp_path / "twins.sqlite3")
    batch = store.add(WhatIfBatch(id="b", twin_id=twin.id, scenario_id="base", runs=entries))
    refreshed = asyncio.run(_refresh(store, twins, None, None, batch))  # type: ignore[arg-type]
    assert refreshed == store.get(twin.id, "b")  # stored as answered
    answer = _answer(refreshed).model_dump()
    assert (answer["status"], answer["done"], answer["total"], answer["failed"]) == (
        "failed",
        5,
        5,
        2,
    )
    assert answer["summarised"] == {"base": 2, "variant": 1, "paired": 1}
    assert answer["variant"]["backlog"]["n"] == 1
    assert [(e["run_id"], e["seed"], e["error"]) for e in answer["errors"]] == [
        ("variant-2", 2, "TwinError: it broke"),
        ("gone", 3, "run deleted"),
    ]
    assert answer["bottlenecks"][0]["label"] == "supplier"


# -- over HTTP, on a real worker --------------------------------------------------------


def test_whatif_batch_on_a_worker(
    api_client: httpx.Client,
    worker: WorkerProcess,
) -> None:
    twin, _ = line()
    created = api_client.post(
        "/api/v1/twins",
        json={
            "name": "line",
            "entities": [e.model_dump(mode="json") for e in twin.entities],
            "relationships": [r.model_dump(mode="json") for r in twin.relationships],
        },
    )
    assert created.status_code == 201, created.text
    twin_id = created.json()["id"]
    scenario = api_client.post(
        f"/api/v1/twins/{twin_id}/scenarios",
        json={"id": "noisy", "name": "noisy", "duration": 60, "noise": 0.1, "seed": 7},
    )
    assert scenario.status_code == 201, scenario.text
    url = f"/api/v1/twins/{twin_id}/whatif"

    accepted = api_client.post(
        url, json={"scenario_id": "noisy", "changes": [CAPACITY_MINUS_30], "seeds": 5}
    )
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["runs"] == 10 and len(body["run_ids"]) == 10
    assert body["seeds"] == [7, 8, 9, 10, 11]  # from the scenario's seed
    assert body["status"] == "queued" and "warning" not in body
    batch_id = body["batch_id"]

    def finished() -> dict | None:
        answer = api_client.get(f"{url}/{batch_id}")
        assert answer.status_code == 200, answer.text
        batch = answer.json()
        return batch if batch["status"] in ("succeeded", "failed") else None

    batch = wait_until(finished, timeout=120, interval=0.2, message="the what-if batch")
    assert batch["status"] == "succeeded", (batch, worker.output())
    assert (batch["done"], batch["total"], batch["failed"]) == (10, 10, 0)
    assert batch["summarised"] == {"base": 5, "variant": 5, "paired": 5}
    for side in ("base", "variant", "delta"):
        for metric, s in batch[side].items():
            assert s["p5"] <= s["mean"] <= s["p95"], (side, metric, s)
    assert batch["variant"]["backlog"]["mean"] > batch["base"]["backlog"]["mean"]
    assert batch["delta"]["backlog"]["p5"] > 0
    top = batch["bottlenecks"][0]
    assert top["label"] == "supplier" and top["variant_share"] == 1.0
    assert sorted(batch["runs"]) == sorted(body["run_ids"])

    # Every run succeeded on the worker, belongs to the batch, and the variant's say so.
    for run_id in batch["runs"]:
        run = api_client.get(f"/api/v1/twins/{twin_id}/runs/{run_id}").json()
        assert run["status"] == "succeeded" and run["batch_id"] == batch_id, run
        expected = "noisy" if run_id in batch["base_runs"] else batch["variant_scenario_id"]
        assert run["scenario_id"] == expected
        # A batch's runs keep their metrics only (a few KB in Redis whatever the twin).
        assert run["result"]["resolution"]["method"] == "metrics", run["result"]["resolution"]
        assert run["result"]["times"] == [] and run["result"]["metrics"]["per_entity"]
    assert batch["variant_scenario_id"] == f"noisy.whatif-{batch_id}"
    listed = api_client.get(url).json()["batches"]
    assert [(b["batch_id"], b["status"], b["done"]) for b in listed] == [
        (batch_id, "succeeded", 10)
    ]
    assert listed[0]["changes"] == [CAPACITY_MINUS_30]

    # A batch of one seed given by hand, with an event, says every seed is the same...
    quiet = api_client.post(
        f"/api/v1/twins/{twin_id}/scenarios", json={"id": "quiet", "name": "quiet"}
    )
    assert quiet.status_code == 201, quiet.text
    same = api_client.post(
        url, json={"scenario_id": "quiet", "changes": [SUPPLIER_OUT_10_DAYS], "seeds": [3]}
    )
    assert same.status_code == 202, same.text
    assert same.json()["seeds"] == [3] and "same result" in same.json()["warning"]

    # ... and bad requests are 4xx naming what is wrong.
    def refused(payload: dict, status: int = 422) -> str:
        answer = api_client.post(url, json={"scenario_id": "noisy", **payload})
        assert answer.status_code == status, answer.text
        return answer.json()["error"]

    good = {"changes": [CAPACITY_MINUS_30]}
    assert "seeds" in refused({**good, "seeds": 101})
    assert "seeds" in refused({**good, "seeds": 0})
    assert "seeds" in refused({**good, "seeds": list(range(101))})
    assert "distinct" in refused({**good, "seeds": [1, 1]})
    assert "changes" in refused({"changes": []})
    assert "'Mars'" in refused(
        {"changes": [{"target": "Mars", "parameter": "capacity", "factor": 0.7}]}
    )
    assert "changes.0.parameter" in refused(
        {"changes": [{"target": "supplier", "parameter": "colour", "factor": 0.7}]}
    )
    assert "changes.0.factor" in refused(
        {"changes": [{"target": "supplier", "parameter": "capacity", "factor": -1}]}
    )
    assert "exactly one" in refused(
        {"changes": [{"target": "supplier", "parameter": "capacity", "factor": 1, "value": 1}]}
    )
    assert "changes[0].event" in refused(
        {"changes": [{"event": {"at": 1, "type": "external.outage", "target": "Pluto"}}]}
    )
    assert "nope" in refused({**good, "scenario_id": "nope"}, 404)
    assert (
        api_client.post(
            "/api/v1/twins/nope/whatif", json={"scenario_id": "noisy", **good}
        ).status_code
        == 404
    )
    assert api_client.get(f"{url}/nope").status_code == 404


def test_whatif_without_redis_is_503_and_keeps_no_batch(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = make_server(redis_url=f"127.0.0.1:{free_port()}").start()
    twin, _ = line()
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        created = client.post(
            "/api/v1/twins",
            json={
                "name": "line",
                "entities": [e.model_dump(mode="json") for e in twin.entities],
                "relationships": [r.model_dump(mode="json") for r in twin.relationships],
            },
        ).json()
        url = f"/api/v1/twins/{created['id']}/whatif"
        client.post(f"/api/v1/twins/{created['id']}/scenarios", json={"id": "b", "name": "b"})
        answer = client.post(
            url, json={"scenario_id": "b", "changes": [CAPACITY_MINUS_30], "seeds": 2}
        )
        assert answer.status_code == 503 and "Redis" in answer.json()["error"], answer.text
        assert client.get(url).json() == {"batches": []}


def test_batches_and_runs_too_large_are_refused_before_anything_is_queued(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = make_server(
        redis_url=redis_server.url,
        MIMIR_TWIN_MAX_BATCH_BYTES="20000",
        MIMIR_TWIN_MAX_STEPS="500",
    ).start()
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        twin, _ = line()
        twin_id = client.post(
            "/api/v1/twins",
            json={
                "name": "line",
                "entities": [e.model_dump(mode="json") for e in twin.entities],
                "relationships": [r.model_dump(mode="json") for r in twin.relationships],
            },
        ).json()["id"]
        for sid, duration in (("short", 60), ("long", 300)):
            made = client.post(
                f"/api/v1/twins/{twin_id}/scenarios",
                json={"id": sid, "name": sid, "duration": duration},
            )
            assert made.status_code == 201, made.text
        url = f"/api/v1/twins/{twin_id}/whatif"
        # 2 entities x 60 days fit 500 entity-steps; 20 seeds of them do not fit 20 kB.
        big = client.post(
            url, json={"scenario_id": "short", "changes": [CAPACITY_MINUS_30], "seeds": 20}
        )
        assert big.status_code == 422 and "MIMIR_TWIN_MAX_BATCH_BYTES" in big.text, big.text
        # 2 x 300 = 600 entity-steps: refused, queued or inline.
        for body in ({"scenario_id": "long"}, {"scenario_id": "long", "wait": True}):
            run = client.post(f"/api/v1/twins/{twin_id}/runs", json=body)
            assert run.status_code == 422 and "MIMIR_TWIN_MAX_STEPS" in run.text, run.text
        long = client.post(
            url, json={"scenario_id": "long", "changes": [CAPACITY_MINUS_30], "seeds": 1}
        )
        assert long.status_code == 422 and "MIMIR_TWIN_MAX_STEPS" in long.text, long.text
        # Nothing was queued, and no batch kept.
        assert client.get(url).json() == {"batches": []}
        assert client.get("/api/v1/queue/status").json()["queue_length"] == 0
