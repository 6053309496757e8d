"""A twin's runs over HTTP on a real server (and real workers): bounded answers, paged
series and timelines, comparisons, re-syncs from the ontology, failures that end their run
``failed`` (never retried on a worker), and the same result for the same seed whether run
here or on a worker."""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mimir.core.twin import RunRecord, Scenario, SimulationResult, Twin, TwinStore
from mimir.core.twin.store import SCHEMA_VERSION
from tests.helpers import RedisServer, ServerProcess, WorkerProcess, wait_until

SRC, SHOP, DEPOT = "http://e/src", "http://e/shop", "http://e/depot"
#: A supplier (10 a day) that supplies a shop selling 8 a day: hand-checkable.
PAIR = {
    "name": "pair",
    "entities": [
        {"id": SRC, "label": "src", "type": "Supplier", "capacity": 10.0},
        {"id": SHOP, "label": "shop", "type": "Store", "demand": 8.0},
    ],
    "relationships": [{"source": SRC, "target": SHOP, "type": "supplies"}],
}


def ttl(src_capacity: float, depot: bool = False) -> str:
    """The pair as an ontology (and a depot the supplier also supplies)."""
    text = f"""
        @prefix e: <http://e/> .
        @prefix owl: <http://www.w3.org/2002/07/owl#> .
        @prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
        e:src a owl:NamedIndividual , e:Supplier ; rdfs:label "src" ; e:capacity {src_capacity} ;
            e:supplies e:shop .
        e:shop a owl:NamedIndividual , e:Store ; rdfs:label "shop" ; e:demand 8.0 .
    """
    if depot:
        text += """
        e:depot a owl:NamedIndividual , e:Depot ; rdfs:label "depot" ; e:capacity 5.0 .
        e:src e:supplies e:depot .
        """
    return textwrap.dedent(text)


def upload(client: httpx.Client, name: str, version: str, text: str) -> dict[str, Any]:
    answer = client.post(
        f"/api/v1/ontologies?name={name}&version={version}",
        content=text.encode(),
        headers={"Content-Type": "text/turtle"},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def make_twin(client: httpx.Client, body: dict[str, Any] | None = None) -> str:
    created = client.post("/api/v1/twins", json=body or PAIR)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def add_scenario(client: httpx.Client, twin_id: str, **scenario: Any) -> str:
    stored = client.post(f"/api/v1/twins/{twin_id}/scenarios", json=scenario)
    assert stored.status_code == 201, stored.text
    return str(stored.json()["id"])


def run_here(client: httpx.Client, twin_id: str, scenario_id: str, **extra: Any) -> dict:
    answer = client.post(
        f"/api/v1/twins/{twin_id}/runs", json={"scenario_id": scenario_id, "wait": True, **extra}
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def finished(client: httpx.Client, twin_id: str, run_id: str) -> dict:
    """The run once it has ended (it follows its job when read)."""

    def ended() -> dict | None:
        run = client.get(f"/api/v1/twins/{twin_id}/runs/{run_id}").json()
        return run if run["status"] in ("succeeded", "failed") else None

    return dict(wait_until(ended, timeout=90, interval=0.1, message=f"run {run_id} to end"))


def all_series(client: httpx.Client, twin_id: str, run_id: str) -> dict[str, Any]:
    """Every entity's series of a run, page by page."""
    url = f"/api/v1/twins/{twin_id}/runs/{run_id}/series"
    found: dict[str, Any] = {}
    offset: int | None = 0
    times = None
    while offset is not None:
        page = client.get(url, params={"offset": offset, "limit": 1}).json()
        times = page["times"]
        found.update(page["entities"])
        offset = page["next_offset"]
    return {"times": times, "entities": found}


# -- bounded answers, paged series and timelines -----------------------------------------


def test_points_bound_the_answer_and_resolution_says_so(api_client: httpx.Client) -> None:
    twin_id = make_twin(api_client)
    scenario = add_scenario(api_client, twin_id, name="long", duration=1000, seed=1)
    run = run_here(api_client, twin_id, scenario, points=50)
    result = run["result"]
    assert result["resolution"]["snapshots"] == 1001 and result["resolution"]["points"] == 50
    assert len(result["times"]) == 50 and result["times"][0] == 0 and result["times"][-1] == 1000
    assert all(len(v) == 50 for v in result["utilisation"].values())
    assert all(len(v) == 50 for m in result["series"].values() for v in m.values())
    url = f"/api/v1/twins/{twin_id}/runs/{run['id']}"
    stored = api_client.get(url).json()["result"]  # default: 200 points
    assert len(stored["times"]) == 200 and stored["resolution"]["method"] == "mean"
    # Throughput is a rate: a bucket's mean is still the 8 a day the shop sells.
    assert set(stored["series"]["throughput"][SHOP][1:]) == {8.0}
    assert stored["metrics"] == result["metrics"]
    assert api_client.get(url).json()["result"] == stored  # kept, answered again
    two = api_client.get(url, params={"points": 2}).json()["result"]
    assert two["times"] == [0, 1000] and two["resolution"]["points"] == 2
    full = api_client.get(url, params={"points": 10_000}).json()["result"]
    assert len(full["times"]) == 1001 and full["resolution"]["method"] == "full"
    for bad in ("1", "10001", "x"):
        refused = api_client.get(url, params={"points": bad})
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["field"] == "query.points"


def test_many_entities_get_fewer_points(api_client: httpx.Client) -> None:
    """At most 100,000 values in all (4 series per entity): 1,200 entities get 20
    snapshots, however many are asked for."""
    entities = [{"id": f"http://e/n{i}", "capacity": 1.0} for i in range(1200)]
    twin_id = make_twin(api_client, {"name": "wide", "entities": entities})
    assert "1200 entities" not in str(api_client.get(f"/api/v1/twins/{twin_id}").json())
    scenario = add_scenario(api_client, twin_id, name="q", duration=300, seed=1)
    run = run_here(api_client, twin_id, scenario, points=10_000)
    resolution = run["result"]["resolution"]
    assert resolution["max_points"] == 100_000 // (4 * 1200) == resolution["points"] == 20
    assert len(run["result"]["times"]) == 20
    # The full series are there all the same, a page at a time.
    page = api_client.get(
        f"/api/v1/twins/{twin_id}/runs/{run['id']}/series", params={"limit": 200}
    ).json()
    assert page["total"] == 1200 and len(page["entities"]) == 200 and page["next_offset"] == 200
    assert len(page["times"]) == 301


def test_series_pages_windows_and_errors(api_client: httpx.Client) -> None:
    twin_id = make_twin(api_client)
    half = add_scenario(
        api_client,
        twin_id,
        name="half",
        duration=10,
        seed=1,
        events=[{"at": 0, "type": "resource.capacity_change", "target": "src", "magnitude": 0.5}],
    )
    run_id = run_here(api_client, twin_id, half)["id"]
    url = f"/api/v1/twins/{twin_id}/runs/{run_id}/series"
    first = api_client.get(url, params={"limit": 1}).json()
    assert first["times"] == [float(t) for t in range(11)]
    assert list(first["entities"]) == [SRC] and first["total"] == 2
    assert first["offset"] == 0 and first["limit"] == 1 and first["next_offset"] == 1
    assert set(first["entities"][SRC]) == {"utilisation", "inventory", "backlog", "throughput"}
    # The supplier ships 5 a day to a shop that sells 8: the backlog grows by 3 a day.
    assert first["entities"][SRC]["throughput"][1:] == [5.0] * 10
    second = api_client.get(url, params={"offset": 1, "limit": 1}).json()
    assert list(second["entities"]) == [SHOP] and second["next_offset"] is None
    assert second["entities"][SHOP]["backlog"] == [0.0, *(3.0 * d for d in range(1, 11))]
    # A window of times, chosen metrics, entities by label or id, in the order asked.
    window = api_client.get(
        url, params={"start": 2, "end": 4, "metrics": "backlog", "entities": f"shop,{SRC}"}
    ).json()
    assert window["times"] == [2.0, 3.0, 4.0]
    assert window["entities"] == {
        SHOP: {"backlog": [6.0, 9.0, 12.0]},
        SRC: {"backlog": [6.0, 9.0, 12.0]},
    }
    assert list(window["entities"]) == [SHOP, SRC] and window["total"] == 2
    empty = api_client.get(url, params={"start": 10.5}).json()
    assert empty["times"] == [] and empty["entities"][SRC]["utilisation"] == []
    past = api_client.get(url, params={"offset": 5}).json()
    assert past["entities"] == {} and past["next_offset"] is None and past["total"] == 2

    unknown = api_client.get(url, params={"entities": "shop,mars"})
    assert unknown.status_code == 404 and "'mars'" in unknown.json()["error"], unknown.text
    bad_metric = api_client.get(url, params={"metrics": "backlog,speed"})
    assert bad_metric.status_code == 422, bad_metric.text
    assert bad_metric.json()["detail"] == [
        {
            "field": "query.metrics",
            "message": "unknown 'speed' (known: utilisation, inventory, backlog, throughput)",
        }
    ]
    backwards = api_client.get(url, params={"start": 5, "end": 1})
    assert backwards.status_code == 422 and backwards.json()["detail"][0]["field"] == "query.start"
    too_many = api_client.get(url, params={"limit": 201})
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["field"] == "query.limit"
    assert api_client.get(f"/api/v1/twins/{twin_id}/runs/nope/series").status_code == 404


def test_timeline_pages_and_filters(api_client: httpx.Client) -> None:
    twin_id = make_twin(api_client)
    scenario = add_scenario(
        api_client,
        twin_id,
        name="outages",
        duration=30,
        seed=1,
        events=[
            {"at": at, "type": "resource.unavailable", "target": "src", "duration": 2}
            for at in (3, 9, 15, 21)
        ],
    )
    run = run_here(api_client, twin_id, scenario)
    url = f"/api/v1/twins/{twin_id}/runs/{run['id']}/timeline"
    everything = api_client.get(url, params={"limit": 1000}).json()
    entries = everything["entries"]
    assert everything["total"] == len(entries) and everything["next_offset"] is None
    assert everything["truncated"] is False
    assert [e["time"] for e in entries] == sorted(e["time"] for e in entries)
    assert run["result"]["timeline"] == entries[:100]
    assert run["result"]["resolution"]["timeline_entries"] == len(entries)
    # Each outage: the event, its end, the supplier down and up again.
    events = api_client.get(url, params={"kind": "event"}).json()
    assert [e["time"] for e in events["entries"]] == [3.0, 9.0, 15.0, 21.0]
    assert events["total"] == 4 and all(e["entity"] == SRC for e in events["entries"])
    ends = api_client.get(url, params={"kind": "event_end,event"}).json()
    assert ends["total"] == 8
    # Pages of two, in order, add up to the whole.
    paged: list[dict] = []
    offset: int | None = 0
    while offset is not None:
        page = api_client.get(url, params={"offset": offset, "limit": 2}).json()
        assert page["limit"] == 2 and page["offset"] == offset and len(page["entries"]) <= 2
        paged += page["entries"]
        offset = page["next_offset"]
    assert paged == entries
    shop = api_client.get(url, params={"entity": "shop", "limit": 1000}).json()
    assert shop["entries"] == [e for e in entries if e.get("entity") == SHOP]
    assert shop["total"] > 0
    by_both = api_client.get(url, params={"entity": SRC, "kind": "event"}).json()
    assert by_both["total"] == 4
    bad_kind = api_client.get(url, params={"kind": "meteor"})
    assert bad_kind.status_code == 422 and bad_kind.json()["detail"][0]["field"] == "query.kind"
    unknown = api_client.get(url, params={"entity": "mars"})
    assert unknown.status_code == 404, unknown.text


# -- compare --------------------------------------------------------------------------


def test_compare_two_runs_by_hand(api_client: httpx.Client) -> None:
    """The supplier at 10 a day, then at 5: the shop sells 8 a day for 10 days."""
    twin_id = make_twin(api_client)
    base = add_scenario(api_client, twin_id, name="base", duration=10, seed=1)
    half = add_scenario(
        api_client,
        twin_id,
        name="half",
        duration=10,
        seed=2,
        events=[{"at": 0, "type": "resource.capacity_change", "target": "src", "magnitude": 0.5}],
    )
    a = run_here(api_client, twin_id, base)["id"]
    b = run_here(api_client, twin_id, half)["id"]
    answer = api_client.get(f"/api/v1/twins/{twin_id}/compare", params={"runs": f"{a},{b}"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["runs"] == [
        {"id": a, "scenario_id": base, "seed": 1},
        {"id": b, "scenario_id": half, "seed": 2},
    ]
    system = body["system"]
    assert system["delivered"] == {"a": 80.0, "b": 50.0, "delta": -30.0, "delta_pct": -37.5}
    assert system["fill_rate"] == {"a": 1.0, "b": 0.625, "delta": -0.375, "delta_pct": -37.5}
    assert system["throughput"] == {"a": 8.0, "b": 5.0, "delta": -3.0, "delta_pct": -37.5}
    assert system["backlog"] == {"a": 0.0, "b": 30.0, "delta": 30.0, "delta_pct": None}
    assert system["avg_utilisation"] == {"a": 0.4, "b": 0.5, "delta": 0.1, "delta_pct": 25.0}
    # Sums over the entities: the supplier is the bottleneck, the shop starved, 10 days.
    assert system["time_bottleneck"]["delta"] == 10.0
    assert system["time_starved"]["delta"] == 10.0
    assert system["time_down"] == {"a": 0.0, "b": 0.0, "delta": 0.0, "delta_pct": None}
    src, shop = body["entities"][SRC], body["entities"][SHOP]
    assert src["label"] == "src" and shop["label"] == "shop"
    assert src["avg_utilisation"] == {"a": 0.8, "b": 1.0, "delta": 0.2}
    assert src["throughput"] == {"a": 8.0, "b": 5.0, "delta": -3.0}
    assert shop["delivered"] == {"a": 80.0, "b": 50.0, "delta": -30.0}
    assert shop["backlog"]["delta"] == 30.0 and shop["time_starved"]["b"] == 10.0
    assert set(src) == {"label", *system}

    swapped = api_client.get(f"/api/v1/twins/{twin_id}/compare", params={"runs": f"{b},{a}"})
    assert swapped.json()["system"]["delivered"]["delta"] == 30.0
    compare = f"/api/v1/twins/{twin_id}/compare"
    for runs in (a, f"{a},{b},{a}", f"{a},{a}", f"{a},"):
        refused = api_client.get(compare, params={"runs": runs})
        assert refused.status_code == 422, (runs, refused.text)
        assert refused.json()["detail"][0]["field"] == "query.runs"
    assert api_client.get(compare).status_code == 422
    missing = api_client.get(compare, params={"runs": f"{a},nope"})
    assert missing.status_code == 404 and "'nope'" in missing.json()["error"]
    other = make_twin(api_client)
    assert (
        api_client.get(f"/api/v1/twins/{other}/compare", params={"runs": f"{a},{b}"}).status_code
        == 404
    )
    assert (
        api_client.get("/api/v1/twins/nope/compare", params={"runs": f"{a},{b}"}).status_code == 404
    )


def test_compare_names_a_run_that_has_not_succeeded(api_client: httpx.Client) -> None:
    """A queued run (no worker here) cannot be compared: 409 naming it."""
    twin_id = make_twin(api_client)
    scenario = add_scenario(api_client, twin_id, name="base", duration=10, seed=1)
    done = run_here(api_client, twin_id, scenario)["id"]
    queued = api_client.post(f"/api/v1/twins/{twin_id}/runs", json={"scenario_id": scenario})
    assert queued.status_code == 202, queued.text
    waiting = queued.json()["id"]
    answer = api_client.get(
        f"/api/v1/twins/{twin_id}/compare", params={"runs": f"{done},{waiting}"}
    )
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == (
        f"run {waiting!r} is queued: only succeeded runs can be compared"
    )
    for part in ("series", "timeline"):
        early = api_client.get(f"/api/v1/twins/{twin_id}/runs/{waiting}/{part}")
        assert early.status_code == 409 and waiting in early.json()["error"], early.text


# -- sync ------------------------------------------------------------------------------


def test_sync_shows_the_diff_and_dry_run_changes_nothing(api_client: httpx.Client) -> None:
    upload(api_client, "pair", "1", ttl(10.0))
    created = api_client.post("/api/v1/twins", json={"name": "pair", "ontology_id": "pair"})
    assert created.status_code == 201, created.text
    twin = created.json()
    twin_id = twin["id"]
    assert twin["ontology_id"] == "pair@1" and twin["synced_at"] is None
    capacities = {e["label"]: e["capacity"] for e in twin["entities"]}
    assert capacities == {"src": 10.0, "shop": None}
    sync = f"/api/v1/twins/{twin_id}/sync"

    same = api_client.post(sync, json={})
    assert same.status_code == 200, same.text
    assert same.json()["diff"]["unchanged"] is True and same.json()["applied"] is True

    upload(api_client, "pair", "2", ttl(6.0, depot=True))
    dry = api_client.post(sync, json={"dry_run": True})
    assert dry.status_code == 200, dry.text
    diff = dry.json()["diff"]
    assert dry.json()["applied"] is False and diff["unchanged"] is False
    assert diff["entities"]["added"] == [DEPOT] and diff["entities"]["removed"] == []
    assert diff["entities"]["changed"] == [
        {"id": "http://e/src", "label": "src", "fields": {"capacity": [10.0, 6.0]}}
    ]
    assert diff["relationships"]["added"] == [
        {"source": SRC, "type": "supplies", "target": DEPOT, "role": "supplies"}
    ]
    assert dry.json()["twin"]["ontology_id"] == "pair@2"
    stored = api_client.get(f"/api/v1/twins/{twin_id}").json()
    assert stored["ontology_id"] == "pair@1" and len(stored["entities"]) == 2
    assert {e["label"]: e["capacity"] for e in stored["entities"]}["src"] == 10.0

    applied = api_client.post(sync)  # no body: the newest version of its ontology
    assert applied.status_code == 200, applied.text
    assert applied.json()["applied"] is True and applied.json()["diff"] == diff
    stored = api_client.get(f"/api/v1/twins/{twin_id}").json()
    assert stored["ontology_id"] == "pair@2" and stored["synced_at"]
    assert stored["created_at"] == twin["created_at"] and stored["id"] == twin_id
    assert {e["label"]: e["capacity"] for e in stored["entities"]} == {
        "src": 6.0,
        "shop": None,
        "depot": 5.0,
    }
    again = api_client.post(sync, json={"dry_run": True}).json()
    assert again["diff"]["unchanged"] is True

    # Back to another ontology named explicitly: the depot goes.
    upload(api_client, "other", "1", ttl(10.0))
    back = api_client.post(sync, json={"ontology_id": "other"}).json()
    assert back["diff"]["entities"]["removed"] == [DEPOT]
    assert api_client.get(f"/api/v1/twins/{twin_id}").json()["ontology_id"] == "other@1"

    # Errors name what is wrong.
    given = make_twin(api_client)
    no_ontology = api_client.post(f"/api/v1/twins/{given}/sync", json={})
    assert no_ontology.status_code == 422 and "ontology_id" in no_ontology.json()["error"]
    unknown = api_client.post(sync, json={"ontology_id": "zz"})
    assert unknown.status_code == 404, unknown.text
    extra = api_client.post(sync, json={"dry": True})
    assert extra.status_code == 422 and extra.json()["detail"][0]["field"] == "dry"
    assert api_client.post("/api/v1/twins/nope/sync", json={}).status_code == 404


def test_create_with_roles_and_warnings(api_client: httpx.Client) -> None:
    text = textwrap.dedent(
        """
        @prefix e: <http://e/> .
        @prefix owl: <http://www.w3.org/2002/07/owl#> .
        e:src a owl:NamedIndividual , e:Supplier ; e:capacity 10.0 ; e:shipsGoodsTo e:shop .
        e:shop a owl:NamedIndividual , e:Store ; e:demand 8.0 .
        """
    )
    upload(api_client, "roles", "1", text)
    plain = api_client.post("/api/v1/twins", json={"name": "p", "ontology_id": "roles"}).json()
    assert plain["relationships"][0]["role"] == "none"
    assert any("shipsGoodsTo" in w for w in plain["warnings"])
    declared = api_client.post(
        "/api/v1/twins",
        json={"name": "d", "ontology_id": "roles", "roles": {"shipsGoodsTo": "supplies"}},
    )
    assert declared.status_code == 201, declared.text
    body = declared.json()
    assert body["roles"] == {"shipsGoodsTo": "supplies"}
    assert body["relationships"][0]["role"] == "supplies"
    assert not any("shipsGoodsTo" in w for w in body["warnings"])
    bad_role = api_client.post(
        "/api/v1/twins", json={"name": "x", "ontology_id": "roles", "roles": {"a": "feeds"}}
    )
    assert bad_role.status_code == 422 and bad_role.json()["detail"][0]["field"] == "roles.a"
    # Given entities: checked, with the same warnings.
    given = api_client.post("/api/v1/twins", json=PAIR).json()
    assert given["warnings"] == ["1 entities have no capacity and are modelled as unbounded: shop"]
    dangling = api_client.post(
        "/api/v1/twins",
        json={**PAIR, "relationships": [{"source": SRC, "target": "http://e/x"}]},
    )
    assert dangling.status_code == 422, dangling.text
    assert dangling.json()["error"] == (
        "invalid request: relationships.0.target: no entity 'http://e/x'"
    )
    twice = api_client.post("/api/v1/twins", json={**PAIR, "entities": PAIR["entities"] * 2})
    assert twice.status_code == 422 and "entities.2.id" in twice.json()["error"]


def test_runs_list_a_summary(api_client: httpx.Client) -> None:
    twin_id = make_twin(api_client)
    scenario = add_scenario(api_client, twin_id, name="base", duration=10, seed=1)
    run_here(api_client, twin_id, scenario)
    listed = api_client.get(f"/api/v1/twins/{twin_id}/runs").json()["runs"]
    assert listed[0]["result"] is None
    assert listed[0]["summary"] == {
        "fill_rate": 1.0,
        "backlog": 0.0,
        "delivered": 80.0,
        "peak_utilisation": 0.8,
        "bottleneck": None,
    }


# -- failures --------------------------------------------------------------------------

#: Loaded by every Python process started with this directory on PYTHONPATH: a
#: simulation of a scenario named "explode" raises a ZeroDivisionError (a stand-in for
#: any bug in the model), others run as they are.
FAULT = """
from mimir.core.twin import simulation

_simulate = simulation.simulate


def _faulty(twin, scenario, seed=None):
    if scenario.name == "explode":
        raise ZeroDivisionError("float division by zero")
    return _simulate(twin, scenario, seed)


simulation.simulate = _faulty
"""


@pytest.fixture
def fault_path(tmp_path: Path) -> str:
    directory = tmp_path / "fault"
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(FAULT)
    return str(directory)


@pytest.fixture
def faulty_client(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, fault_path: str
) -> Iterator[httpx.Client]:
    server = make_server(redis_url=redis_server.url, PYTHONPATH=fault_path).start()
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


@pytest.fixture
def faulty_worker(
    redis_server: RedisServer, tmp_path: Path, fault_path: str
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        {
            "REDIS_URL": redis_server.url,
            "MIMIR_DATA_DIR": str(tmp_path / "worker-data"),
            "PYTHONPATH": fault_path,
        },
        concurrency=2,
        log_path=tmp_path / "faulty-worker.log",
    ).start()
    yield process
    process.stop()


def test_a_failed_inline_run_ends_failed(faulty_client: httpx.Client) -> None:
    client = faulty_client
    twin_id = make_twin(client)
    runs = f"/api/v1/twins/{twin_id}/runs"
    # Any exception: a JSON 500 that names the run, which is failed with the error.
    boom = add_scenario(client, twin_id, name="explode", duration=10)
    answer = client.post(runs, json={"scenario_id": boom, "wait": True})
    assert answer.status_code == 500, answer.text
    run_id = answer.json()["detail"]["run_id"]
    assert answer.json()["error"] == (
        f"the simulation failed: ZeroDivisionError: float division by zero (run {run_id} failed)"
    )
    run = client.get(f"{runs}/{run_id}").json()
    assert run["status"] == "failed" and run["finished_at"] and run["result"] is None
    assert run["error"] == "ZeroDivisionError: float division by zero"

    # A scenario that no longer fits its twin (the shop went in a re-sync): 422.
    given = client.post("/api/v1/twins", json={"name": "g", "entities": PAIR["entities"][:1]})
    lonely = given.json()["id"]
    upload(client, "solo", "1", ttl(10.0))
    synced = client.post("/api/v1/twins", json={"name": "s", "ontology_id": "solo"}).json()
    stale = add_scenario(
        client,
        synced["id"],
        name="surge",
        duration=10,
        events=[{"at": 1, "type": "demand.surge", "target": "shop"}],
    )
    upload(client, "solo", "2", ttl(10.0).split("e:shop a")[0].replace("e:supplies e:shop ", ""))
    resync = client.post(f"/api/v1/twins/{synced['id']}/sync", json={}).json()
    assert resync["diff"]["entities"]["removed"] == [SHOP]
    assert resync["stale_scenarios"] == [{"id": stale, "name": "surge", "targets": ["shop"]}]
    misfit = client.post(
        f"/api/v1/twins/{synced['id']}/runs", json={"scenario_id": stale, "wait": True}
    )
    assert misfit.status_code == 422, misfit.text
    assert "'shop'" in misfit.json()["error"] and "failed)" in misfit.json()["error"]
    failed = client.get(f"/api/v1/twins/{synced['id']}/runs").json()["runs"]
    assert [(r["status"], "'shop'" in r["error"]) for r in failed] == [("failed", True)]

    # Figures too large to add up are refused when the twin is made (MAX_FIGURE).
    huge = client.post(
        "/api/v1/twins",
        json={
            "name": "huge",
            "entities": [
                {"id": SRC, "capacity": 1e308, "demand": 1e308},
                {"id": SHOP, "demand": 1e308},
            ],
            "relationships": [{"source": SRC, "target": SHOP, "type": "supplies"}],
        },
    )
    assert huge.status_code == 422 and "capacity" in huge.text, huge.text
    # Nothing stays running; the server still answers.
    assert all(r["status"] != "running" for r in client.get(runs).json()["runs"])
    assert client.get(f"/api/v1/twins/{lonely}").status_code == 200


def test_a_failed_queued_run_is_not_retried(
    faulty_client: httpx.Client, faulty_worker: WorkerProcess
) -> None:
    client = faulty_client
    twin_id = make_twin(client)
    boom = add_scenario(client, twin_id, name="explode", duration=10)
    fine = add_scenario(client, twin_id, name="fine", duration=10, seed=3)
    queued = client.post(
        "/api/v1/queue/digital-twins/enqueue",
        json={"twin_id": twin_id, "scenario_id": boom, "max_retries": 3},
    )
    assert queued.status_code == 202, queued.text
    job_id, run_id = queued.json()["job_id"], queued.json()["run_id"]
    job = client.get(f"/api/v1/queue/jobs/{job_id}/wait", params={"timeout": "60s"}).json()
    assert job["status"] == "failed", (job, faulty_worker.output())
    assert job["attempts"] == 1  # 3 retries allowed, none taken: it would fail the same way
    assert job["error"] == "ZeroDivisionError: float division by zero"
    run = finished(client, twin_id, run_id)
    assert run["status"] == "failed" and run["error"] == job["error"]
    # The same worker runs the next one: only the simulation failed.
    other = client.post(f"/api/v1/twins/{twin_id}/runs", json={"scenario_id": fine})
    assert finished(client, twin_id, other.json()["id"])["status"] == "succeeded"


def test_a_scenario_that_no_longer_fits_fails_on_the_worker_once(
    api_client: httpx.Client, worker: WorkerProcess
) -> None:
    upload(api_client, "pair", "1", ttl(10.0))
    twin_id = api_client.post("/api/v1/twins", json={"name": "p", "ontology_id": "pair"}).json()[
        "id"
    ]
    stale = add_scenario(
        api_client,
        twin_id,
        name="surge",
        duration=10,
        events=[{"at": 1, "type": "demand.surge", "target": "shop"}],
    )
    upload(
        api_client, "pair", "2", ttl(10.0).split("e:shop a")[0].replace("e:supplies e:shop ", "")
    )
    assert api_client.post(f"/api/v1/twins/{twin_id}/sync", json={}).status_code == 200
    queued = api_client.post(
        "/api/v1/queue/digital-twins/enqueue", json={"twin_id": twin_id, "scenario_id": stale}
    )
    job_id, run_id = queued.json()["job_id"], queued.json()["run_id"]
    job = api_client.get(f"/api/v1/queue/jobs/{job_id}/wait", params={"timeout": "60s"}).json()
    assert job["status"] == "failed" and job["attempts"] == 1, (job, worker.output())
    run = finished(api_client, twin_id, run_id)
    assert run["status"] == "failed" and "'shop'" in run["error"]


def test_an_inline_run_whose_client_left_still_ends(api_client: httpx.Client) -> None:
    """The client gives up while the simulation runs: the run still records its result."""
    twin_id = make_twin(api_client)
    scenario = add_scenario(api_client, twin_id, name="long", duration=100_000, snapshot_interval=2)
    with pytest.raises(httpx.ReadTimeout):
        api_client.post(
            f"/api/v1/twins/{twin_id}/runs",
            json={"scenario_id": scenario, "wait": True},
            timeout=0.5,
        )
    runs = f"/api/v1/twins/{twin_id}/runs"
    assert [r["status"] for r in api_client.get(runs).json()["runs"]] == ["running"]

    def ended() -> dict | None:
        listed = api_client.get(runs).json()["runs"]
        return listed[0] if listed[0]["status"] != "running" else None

    run = wait_until(ended, timeout=120, interval=0.2, message="the abandoned run to end")
    assert run["status"] == "succeeded" and run["summary"]["delivered"] == 800_000.0


# -- reproducibility --------------------------------------------------------------------


def test_same_seed_same_result_here_and_on_a_worker(
    api_client: httpx.Client, twin: dict[str, str], worker: WorkerProcess
) -> None:
    twin_id, scenario = twin["twin_id"], twin["scenario_id"]
    noisy = add_scenario(api_client, twin_id, name="noisy", duration=60, noise=0.2, events=[])
    for scenario_id in (scenario, noisy):
        here = [run_here(api_client, twin_id, scenario_id, seed=7)["id"] for _ in range(2)]
        queued = [
            api_client.post(
                f"/api/v1/twins/{twin_id}/runs", json={"scenario_id": scenario_id, "seed": 7}
            ).json()["id"]
            for _ in range(2)
        ]
        runs = [
            *(api_client.get(f"/api/v1/twins/{twin_id}/runs/{r}").json() for r in here),
            *(finished(api_client, twin_id, r) for r in queued),
        ]
        assert [r["status"] for r in runs] == ["succeeded"] * 4, runs
        metrics = [r["result"]["metrics"] for r in runs]
        assert all(m == metrics[0] for m in metrics)
        series = [all_series(api_client, twin_id, r["id"]) for r in runs]
        assert all(s == series[0] for s in series)
        assert len(series[0]["times"]) == 61 and len(series[0]["entities"]) == 7
        timelines = [
            api_client.get(
                f"/api/v1/twins/{twin_id}/runs/{r['id']}/timeline", params={"limit": 1000}
            ).json()["entries"]
            for r in runs
        ]
        assert all(t == timelines[0] for t in timelines)
    # Another seed changes a noisy run.
    other = run_here(api_client, twin_id, noisy, seed=8)
    assert other["result"]["metrics"] != metrics[0]
    assert api_client.get(f"/api/v1/twins/{twin_id}/runs/{other['id']}").json()["result"][
        "metrics"
    ]["bottlenecks"]


# -- the store -----------------------------------------------------------------------------


def test_store_keeps_series_apart_and_reads_old_runs(tmp_path: Path) -> None:
    from mimir.core.twin.simulation import simulate

    path = tmp_path / "twins.sqlite3"
    store = TwinStore(path)
    twin = store.add_twin(Twin.model_validate(PAIR))
    scenario = store.add_scenario(twin.id, Scenario(name="s", duration=10, seed=1))
    result = simulate(twin, scenario, 1)
    store.add_run(RunRecord(id="new", twin_id=twin.id, scenario_id=scenario.id, status="running"))
    store.finish_run("new", result)
    with sqlite3.connect(path) as db:
        body = db.execute("SELECT body FROM runs WHERE id = 'new'").fetchone()[0]
        rows = db.execute(
            "SELECT position, entity FROM run_series WHERE run_id = 'new' ORDER BY position"
        ).fetchall()
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert rows == [(-1, None), (0, SRC), (1, SHOP)]
    assert '"times":[]' in body and '"utilisation":{}' in body
    new = store.get_run("new")
    assert store.full_result(new) == result.model_copy(
        update={"resolution": {**result.resolution, "timeline_entries": len(result.timeline)}}
    )

    # A run written by schema 1: the whole result in its body. It reads the same.
    old = RunRecord(
        id="old", twin_id=twin.id, scenario_id=scenario.id, status="succeeded", result=result
    )
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
            ("old", twin.id, scenario.id, "succeeded", "2024-01-01", old.model_dump_json()),
        )
    legacy = store.get_run("old")
    assert store.full_result(legacy) == result
    assert store.run_frame(legacy) == store.run_frame(new)
    assert store.run_series(legacy, [SHOP]) == store.run_series(new, [SHOP])
    assert store.run_entities(legacy) == store.run_entities(new) == [SRC, SHOP]
    assert store.run_timeline(legacy, kinds=["backlog"]) == store.run_timeline(
        new, kinds=["backlog"]
    )

    # Views (answers at a resolution) are kept, the newest eight, and go when the result
    # is stored again (a job delivered twice).
    for points in range(2, 12):
        store.put_view("new", points, f'{{"points":{points}}}')
    assert store.get_view("new", 2) is None and store.get_view("new", 11) == '{"points":11}'
    store.finish_run("new", result)
    assert store.get_view("new", 11) is None
    store.put_view("new", 5, "{}")

    store.delete_twin(twin.id)
    with sqlite3.connect(path) as db:
        for table in ("runs", "run_series", "run_timeline", "run_views", "scenarios"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


def test_a_schema_1_database_is_brought_to_schema_3(tmp_path: Path) -> None:
    path = tmp_path / "twins.sqlite3"
    twin = Twin.model_validate({**PAIR, "id": "t1", "created_at": "2024-01-01"})
    result = SimulationResult(
        seed=1,
        duration=1,
        snapshot_interval=1,
        times=[0, 1],
        utilisation={SRC: [0, 1]},
        metrics={"entities": 1},
        events=[],
    )
    run = RunRecord(id="r1", twin_id="t1", scenario_id="s1", status="succeeded", result=result)
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE twins (id TEXT PRIMARY KEY, name TEXT NOT NULL,
                created_at TEXT NOT NULL, body TEXT NOT NULL);
            CREATE TABLE scenarios (id TEXT NOT NULL, twin_id TEXT NOT NULL
                REFERENCES twins(id) ON DELETE CASCADE, name TEXT NOT NULL,
                created_at TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (twin_id, id));
            CREATE TABLE runs (id TEXT PRIMARY KEY, twin_id TEXT NOT NULL
                REFERENCES twins(id) ON DELETE CASCADE, scenario_id TEXT NOT NULL,
                status TEXT NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL);
            PRAGMA user_version = 1;
            """
        )
        db.execute(
            "INSERT INTO twins VALUES ('t1', 'pair', '2024-01-01', ?)", (twin.model_dump_json(),)
        )
        db.execute(
            "INSERT INTO runs VALUES ('r1', 't1', 's1', 'succeeded', '2024-01-02', ?)",
            (run.model_dump_json(),),
        )
    store = TwinStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"run_series", "run_timeline", "run_views"} <= tables
    assert store.run_series(store.get_run("r1"))[SRC]["utilisation"] == [0, 1]
