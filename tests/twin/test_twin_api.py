"""Twins over HTTP on a real server; runs as ``digital_twin`` jobs on a real worker."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.helpers import RedisServer, ServerProcess, WorkerProcess, wait_until


def test_twin_scenario_and_inline_run(api_client: httpx.Client, twin: dict[str, str]) -> None:
    twin_id = twin["twin_id"]
    listed = api_client.get("/api/v1/twins").json()["twins"]
    assert [(t["id"], t["entities"], t["relationships"]) for t in listed] == [(twin_id, 7, 6)]
    detail = api_client.get(f"/api/v1/twins/{twin_id}").json()
    assert {e["label"] for e in detail["entities"]} >= {"North DC", "SteelCo"}
    # Goods flow along sc:supplies (a role by its name); every entity has a capacity.
    assert {r["role"] for r in detail["relationships"]} == {"supplies"}
    assert detail["warnings"] == []
    run = api_client.post(
        f"/api/v1/twins/{twin_id}/runs", json={"scenario_id": twin["scenario_id"], "wait": True}
    )
    assert run.status_code == 201, run.text
    result = run.json()["result"]
    metrics = result["metrics"]
    assert metrics["bottlenecks"][0]["label"] == "North DC"
    # The flow: the stores' backlog grows through the rush and the outage.
    assert metrics["backlog"] > 0 and metrics["fill_rate"] < 1
    assert result["resolution"]["snapshots"] == len(result["times"]) == 61
    assert set(result["series"]) == {"inventory", "backlog", "throughput"}
    assert result["system"]["backlog"][-1] == metrics["backlog"]
    stored = api_client.get(f"/api/v1/twins/{twin_id}/runs/{run.json()['id']}").json()
    assert stored["status"] == "succeeded" and stored["result"]["metrics"] == metrics
    assert stored["result"]["series"] == result["series"]
    listed = api_client.get(f"/api/v1/twins/{twin_id}/runs").json()["runs"]
    assert listed[0]["result"] is None and listed[0]["summary"]["bottleneck"] == "North DC"
    assert api_client.delete(f"/api/v1/twins/{twin_id}").status_code == 204
    assert api_client.get(f"/api/v1/twins/{twin_id}/runs/{run.json()['id']}").status_code == 404
    assert api_client.get(f"/api/v1/twins/{twin_id}/scenarios").status_code == 404
    assert api_client.get("/api/v1/twins").json()["twins"] == []


def test_twin_errors_are_4xx(api_client: httpx.Client, twin: dict[str, str]) -> None:
    twin_id = twin["twin_id"]
    assert api_client.get("/api/v1/twins/nope").status_code == 404
    assert api_client.get(f"/api/v1/twins/{twin_id}/runs/nope").status_code == 404
    bad_target = api_client.post(
        f"/api/v1/twins/{twin_id}/scenarios",
        json={"name": "x", "events": [{"at": 1, "type": "demand.surge", "target": "Mars"}]},
    )
    assert bad_target.status_code == 422 and "Mars" in bad_target.json()["error"]
    bad_type = api_client.post(
        f"/api/v1/twins/{twin_id}/scenarios",
        json={"name": "x", "events": [{"at": 1, "type": "meteor", "target": "SteelCo"}]},
    )
    assert bad_type.status_code == 422
    no_source = api_client.post("/api/v1/twins", json={"name": "x"})
    assert no_source.status_code == 422
    unknown_ontology = api_client.post("/api/v1/twins", json={"name": "x", "ontology_id": "zz"})
    assert unknown_ontology.status_code == 404


def test_the_seed_call_runs_the_twin_on_a_worker(
    api_client: httpx.Client, twin: dict[str, str], worker: WorkerProcess
) -> None:
    accepted = api_client.post(
        "/api/v1/queue/digital-twins/enqueue",
        json={"twin_id": twin["twin_id"], "operation": "simulate"},
    )
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["message"] == "Digital twin job enqueued successfully"
    assert body["status"] == "queued" and body["scenario_id"] == twin["scenario_id"]
    assert "warning" not in body  # the worker serves the queue default
    elsewhere = api_client.post(
        "/api/v1/queue/digital-twins/enqueue", json={"twin_id": twin["twin_id"], "queue": "gpu"}
    )
    assert elsewhere.status_code == 202, elsewhere.text
    assert "no live worker serves queue 'gpu'" in elsewhere.json()["warning"]
    api_client.post(f"/api/v1/queue/jobs/{elsewhere.json()['job_id']}/cancel")
    job = api_client.get(f"/api/v1/queue/jobs/{body['job_id']}/wait", params={"timeout": "60s"})
    record = job.json()
    assert record["status"] == "succeeded", (record, worker.output())
    assert record["type"] == "digital_twin" and record["worker_id"] == worker.worker_id
    run = api_client.get(f"/api/v1/twins/{twin['twin_id']}/runs/{body['run_id']}").json()
    assert run["status"] == "succeeded" and run["job_id"] == body["job_id"]
    assert run["result"]["metrics"]["bottlenecks"][0]["label"] == "North DC"
    assert run["result"]["seed"] == 42  # the scenario's seed
    # The job's result carries every series; the server stored them with the run.
    assert len(record["result"]["times"]) == 61 and len(record["result"]["utilisation"]) == 7
    series = api_client.get(
        f"/api/v1/twins/{twin['twin_id']}/runs/{body['run_id']}/series",
        params={"entities": "North DC", "metrics": "utilisation"},
    ).json()
    north = next(iter(series["entities"].values()))["utilisation"]
    assert north == next(
        values for entity, values in record["result"]["utilisation"].items() if "NorthDC" in entity
    )


def test_a_run_queued_through_the_twin_api(
    api_client: httpx.Client, twin: dict[str, str], worker: WorkerProcess
) -> None:
    twin_id = twin["twin_id"]
    queued = api_client.post(
        f"/api/v1/twins/{twin_id}/runs", json={"scenario_id": twin["scenario_id"], "seed": 5}
    )
    assert queued.status_code == 202, queued.text
    run_id = queued.json()["id"]

    def finished() -> dict | None:
        run = api_client.get(f"/api/v1/twins/{twin_id}/runs/{run_id}").json()
        return run if run["status"] in ("succeeded", "failed") else None

    run = wait_until(finished, timeout=60, interval=0.1, message="the queued twin run")
    assert run["status"] == "succeeded", (run, worker.output())
    assert run["seed"] == 5 and run["result"]["seed"] == 5


def test_enqueue_without_redis_is_503(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    from tests.helpers import free_port

    server = make_server(redis_url=f"127.0.0.1:{free_port()}").start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        twin = client.post(
            "/api/v1/twins",
            json={"name": "t", "entities": [{"id": "http://e/a", "label": "a"}]},
        ).json()
        answer = client.post("/api/v1/queue/digital-twins/enqueue", json={"twin_id": twin["id"]})
        assert answer.status_code == 503 and "Redis" in answer.json()["error"]
