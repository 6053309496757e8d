"""ApiClient and LiveFeed against a real server, worker and redis-server (no Qt)."""

from __future__ import annotations

import asyncio

import pytest

from mimir.app.services.api import ApiClient, ApiError, ApiUnreachable
from mimir.app.services.events import LiveFeed
from tests.app.conftest import SLEEP_PIPELINE, Stack
from tests.helpers import async_wait_until, free_port


async def until(condition, timeout: float) -> None:
    """Wait for a plain (not awaitable) condition while the loop keeps running."""

    async def check() -> bool:
        return bool(condition())

    await async_wait_until(check, timeout=timeout)


def test_pipelines_crud_validate_execute(stack: Stack) -> None:
    async def scenario() -> None:
        api = ApiClient(stack.url)
        try:
            assert (await api.health())["status"] == "ok"
            names = [p["name"] for p in await api.list_pipelines()]
            assert "nap" in names
            await api.save_pipeline(
                "nap2", SLEEP_PIPELINE.replace("name: nap\n", "name: nap2\n", 1)
            )
            assert (await api.get_pipeline("nap2"))["yaml"].startswith("name: nap2")
            bad = await api.validate_pipeline("name: x\nsteps:\n  - name: a\n    plugin: Nope.x\n")
            assert bad["valid"] is False and bad["errors"]
            result = await api.execute_pipeline(name="nap2")
            assert result["success"] is True
            assert [s["name"] for s in result["steps"]] == ["nap"]
            await api.delete_pipeline("nap2")
            with pytest.raises(ApiError) as info:
                await api.get_pipeline("nap2")
            assert info.value.status == 404 and "nap2" in str(info.value)
            assert any(p["name"] == "Debug.sleep" for p in await api.plugins())
        finally:
            await api.aclose()

    asyncio.run(scenario())


def test_enqueue_jobs_workers_cancel(stack: Stack) -> None:
    async def scenario() -> None:
        api = ApiClient(stack.url)
        try:
            ids = await api.enqueue(name="nap", count=20, priority="high")
            assert len(set(ids)) == 20

            async def all_done() -> bool:
                page = await api.list_jobs("succeeded", limit=100)
                return page["total"] >= 20

            await async_wait_until(all_done, timeout=30)
            status = await api.queue_status()
            assert status["totals"]["succeeded"] >= 20
            workers = await api.workers()
            assert workers and workers[0]["worker_id"] == stack.worker.worker_id
            slow = {
                "name": "slow",
                "steps": [{"name": "s", "plugin": "Debug.sleep", "config": {"seconds": 30}}],
            }
            [job_id] = await api.enqueue(pipeline=slow, priority="low")
            await api.cancel_job(job_id)

            async def cancelled() -> bool:
                return (await api.get_job(job_id))["status"] == "cancelled"

            await async_wait_until(cancelled, timeout=20)
        finally:
            await api.aclose()

    asyncio.run(scenario())


def test_unreachable_and_bad_request_errors(stack: Stack) -> None:
    async def scenario() -> None:
        api = ApiClient(f"http://127.0.0.1:{free_port()}")
        try:
            with pytest.raises(ApiUnreachable):
                await api.health()
            api.configure(stack.url)
            with pytest.raises(ApiError) as info:
                await api.enqueue(name="no-such-pipeline")
            assert 400 <= info.value.status < 500
            assert "no-such-pipeline" in str(info.value)
        finally:
            await api.aclose()

    asyncio.run(scenario())


def test_live_feed_streams_stats_and_jobs(stack: Stack) -> None:
    async def scenario() -> None:
        api = ApiClient(stack.url)
        feed = LiveFeed(api, workers_interval=0.5)
        stats: list[dict] = []
        jobs: list[dict] = []
        workers: list[list] = []
        feed.subscribe("stats", stats.append)
        feed.subscribe("job", jobs.append)
        feed.subscribe("workers", workers.append)
        feed.start()
        try:
            await until(lambda: feed.mode == "events" and stats, timeout=15)
            ids = await api.enqueue(name="nap", count=5)
            await until(
                lambda: {j["job_id"] for j in jobs if j.get("status") == "succeeded"} >= set(ids),
                timeout=30,
            )
            await until(lambda: any(w for w in workers), timeout=10)
            assert "by_priority" in stats[-1]
        finally:
            await feed.stop()
            await api.aclose()

    asyncio.run(scenario())


def test_live_feed_asks_for_a_resync_each_time_the_stream_reconnects(stack: Stack) -> None:
    """Job changes made while the event stream was away are never sent again: on each
    (re)connection the feed says so, and the Jobs table lists the jobs again."""

    async def scenario() -> None:
        api = ApiClient(stack.url)
        feed = LiveFeed(api, poll_interval=0.2, retry_stream_after=30)
        resyncs: list[None] = []
        feed.subscribe("resync", resyncs.append)
        feed.start()
        try:
            await until(lambda: feed.mode == "events" and len(resyncs) == 1, timeout=15)
            await asyncio.to_thread(stack.server.stop)
            await until(lambda: feed.mode != "events", timeout=15)
            await asyncio.to_thread(stack.server.start, wait_for_redis=True)
            await until(lambda: feed.mode == "events" and len(resyncs) == 2, timeout=20)
        finally:
            await feed.stop()
            await api.aclose()

    asyncio.run(scenario())


def test_live_feed_polls_when_there_is_no_stream(stack: Stack) -> None:
    """A server path without SSE (here: a bogus prefix) makes the feed poll queue/status."""

    async def scenario() -> None:
        api = ApiClient(stack.url)
        original = api.stream_lines

        def no_stream(path: str, **kw):  # the stream 404s as an older server's would
            return original("/api/v1/no-such-events", **kw)

        api.stream_lines = no_stream  # type: ignore[method-assign]
        feed = LiveFeed(api, poll_interval=0.2)
        modes: list[tuple] = []
        stats: list[dict] = []
        feed.subscribe("mode", modes.append)
        feed.subscribe("stats", stats.append)
        feed.start()
        try:
            await until(lambda: len(stats) >= 3, timeout=15)
            assert feed.mode == "polling"
        finally:
            await feed.stop()
            await api.aclose()

    asyncio.run(scenario())


def test_knowledge_graph_upload_and_query(stack: Stack) -> None:
    from pathlib import Path

    turtle_path = (
        Path(__file__).resolve().parents[2] / "resources" / "ontologies" / "supply_chain.ttl"
    )
    turtle = turtle_path.read_text()

    async def scenario() -> None:
        api = ApiClient(stack.url)
        try:
            assert await api.has_kg() is True
            await api.upload_ontology("supply-chain", turtle)
            answer = await api.kg_query(
                "PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#> "
                "SELECT ?s ?label WHERE { ?s rdfs:label ?label } LIMIT 100"
            )
            from mimir.app.services.sparql import sparql_rows

            columns, rows = sparql_rows(answer)
            assert columns == ["s", "label"]
            assert any(row[1] == "Supply chain" for row in rows)
            import yaml

            scenario = (turtle_path.parent / "supply_chain_scenario.yaml").read_text()
            twin = await api.create_twin("supply-chain", "supply-chain")
            added = await api.add_scenario(twin["id"], yaml.safe_load(scenario))
            assert [s["id"] for s in await api.list_scenarios(twin["id"])] == [added["id"]]
            run = await api.run_twin(twin["id"], added["id"], wait=True)
            assert run["status"] == "succeeded"
            assert len(run["result"]["times"]) == 61
            assert max(max(v) for v in run["result"]["utilisation"].values()) >= 0.9
            with pytest.raises(ApiError) as info:
                await api.kg_query("SELEC nonsense")
            assert 400 <= info.value.status < 500
        finally:
            await api.aclose()

    asyncio.run(scenario())


def test_twin_runs_compare_and_whatif(stack: Stack) -> None:
    """The twin calls the Knowledge panel makes (issue 14), against a real server and worker."""
    from pathlib import Path

    import yaml

    ontologies = Path(__file__).resolve().parents[2] / "resources" / "ontologies"

    async def scenario() -> None:
        api = ApiClient(stack.url)
        try:
            await api.upload_ontology("supply-chain", (ontologies / "supply_chain.ttl").read_text())
            twin = await api.create_twin("supply-chain", "supply-chain")
            assert len((await api.get_twin(twin["id"]))["entities"]) == 7
            doc = yaml.safe_load((ontologies / "supply_chain_scenario.yaml").read_text())
            added = await api.add_scenario(twin["id"], {**doc, "noise": 0.1})
            first = await api.run_twin(twin["id"], added["id"], wait=True, seed=1)
            queued = await api.run_twin(twin["id"], added["id"], wait=False, seed=2)
            assert queued["status"] == "queued" and queued["seed"] == 2

            async def finished() -> bool:
                run = await api.get_run(twin["id"], queued["id"], points=10)
                return bool(run["status"] == "succeeded")

            await async_wait_until(finished, timeout=30)
            bounded = await api.get_run(twin["id"], queued["id"], points=10)
            assert len(bounded["result"]["times"]) <= 10
            listed = await api.list_runs(twin["id"])
            assert [r["id"] for r in listed] == [first["id"], queued["id"]]
            assert all(0 < r["summary"]["fill_rate"] <= 1 for r in listed)
            compared = await api.compare_runs(twin["id"], first["id"], queued["id"])
            assert [r["seed"] for r in compared["runs"]] == [1, 2]
            fill = compared["system"]["fill_rate"]
            assert fill["delta"] == pytest.approx(fill["b"] - fill["a"], abs=1e-6)
            with pytest.raises(ApiError) as info:
                await api.compare_runs(twin["id"], first["id"], "no-such-run")
            assert info.value.status == 404

            change = {"target": "NorthDC", "parameter": "capacity", "factor": 0.7}
            batch = await api.start_whatif(twin["id"], added["id"], [change], seeds=3)
            assert batch["runs"] == 6

            async def done() -> bool:
                answer = await api.get_whatif(twin["id"], batch["batch_id"])
                return bool(answer["status"] in ("succeeded", "failed"))

            await async_wait_until(done, timeout=60)
            answer = await api.get_whatif(twin["id"], batch["batch_id"])
            assert answer["status"] == "succeeded" and answer["done"] == answer["total"] == 6
            assert answer["variant"]["fill_rate"]["mean"] < answer["base"]["fill_rate"]["mean"]
            assert answer["bottlenecks"][0]["label"] == "North DC"
            assert [b["batch_id"] for b in await api.list_whatifs(twin["id"])] == [
                batch["batch_id"]
            ]
        finally:
            await api.aclose()

    asyncio.run(scenario())
