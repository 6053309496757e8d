"""The backup-while-jobs-flow scenario both backends' restore tests run.

Each job calls a counter before it naps (``{{ mark }}`` names the job), so a test counts
each job's executions per cluster; the backend's test says where the counter is.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from mimir.app.cluster.backup import default_backup_dir, list_backups
from mimir.app.cluster.base import ClusterBackend
from mimir.core.backup.archive import verify_archive
from mimir.core.backup.manifest import Manifest
from tests.cluster.conftest import ClusterAPI
from tests.helpers import wait_until

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "ontologies"
#: Jobs enqueued before the backup is taken.
FLOWING = 200
QUERY = "SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } }"


def marked_pipeline(counter_url: str) -> dict[str, Any]:
    """Hit ``counter_url/hit/<mark>``, then nap ``nap`` seconds."""
    return {
        "name": "marked-nap",
        "steps": [
            {
                "name": "mark",
                "plugin": "Input.api",
                "config": {"url": counter_url + "/hit/{{ mark }}"},
                "output": "marked",
            },
            {"name": "nap", "plugin": "Debug.sleep", "config": {"seconds": "{{ nap }}"}},
        ],
    }


def seed(api: ClusterAPI, pipeline: dict[str, Any]) -> Any:
    """What the archive must carry: two pipelines, an ontology, a twin; answers the
    SPARQL answer to :data:`QUERY` the restored cluster must give too."""
    for name in ("alpha", "beta"):
        answer = api.client.put(
            f"/api/v1/pipelines/{name}", json={"yaml": yaml.safe_dump(pipeline)}
        )
        assert answer.status_code in (200, 201), answer.text
    uploaded = api.client.post(
        "/api/v1/ontologies?name=supply-chain",
        content=(RESOURCES / "supply_chain.ttl").read_bytes(),
        headers={"Content-Type": "text/turtle"},
    )
    assert uploaded.status_code == 201, uploaded.text
    twin = api.client.post(
        "/api/v1/twins", json={"name": "supply-chain", "ontology_id": "supply-chain"}
    )
    assert twin.status_code == 201, twin.text
    answer = api.client.get("/api/v1/kg/sparql", params={"query": QUERY})
    assert answer.status_code == 200, answer.text
    return answer.json()


#: The first jobs nap this long, so that some run for certain when the backup is taken.
HELD, HOLD_SECONDS = 3, 8.0


def enqueue_flowing(
    api: ClusterAPI, pipeline: dict[str, Any], naps: tuple[float, float]
) -> tuple[list[str], dict[str, str]]:
    """:data:`FLOWING` jobs, the first :data:`HELD` of them long (:data:`HOLD_SECONDS`),
    the others napping a random time in ``naps``; answers their ids and each one's mark."""
    rng = random.Random(18)
    ids: list[str] = []
    marks: dict[str, str] = {}
    for number in range(FLOWING):
        nap = HOLD_SECONDS if number < HELD else round(rng.uniform(*naps), 3)
        answer = api.client.post(
            "/api/v1/queue/pipelines/enqueue",
            json={"pipeline": pipeline, "context": {"mark": f"m{number}", "nap": nap}},
        )
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["job_id"])
        marks[ids[-1]] = f"m{number}"
    return ids, marks


def time_to_back_up(hits: Mapping[str, int]) -> bool:
    """Some jobs have run, the held ones are running (for seconds yet), most are queued:
    the moment to take the backup."""
    held = all(hits.get(f"m{number}", 0) for number in range(HELD))
    return held and sum(hits.values()) >= 20


def in_flight(manifest: Manifest) -> int:
    """Jobs queued or running when the backup was taken (the scenario needs some)."""
    count = manifest.counts.get("jobs_queued", 0) + manifest.counts.get("jobs_running", 0)
    assert count > 0, manifest.counts
    return count


def check_source(
    api: ClusterAPI,
    ids: list[str],
    marks: Mapping[str, str],
    hits: Callable[[], Mapping[str, int]],
) -> None:
    """The source served throughout: each of its jobs succeeded and ran once."""
    records = api.wait_finished(ids, timeout=180)
    assert {r["status"] for r in records.values()} == {"succeeded"}
    counted = hits()  # once every job has ended
    assert [counted.get(marks[i], 0) for i in ids] == [1] * len(ids)


def check_settled(said: list[str], flying: int) -> None:
    """The restore's reconcile queued at least one job again (the held ones were running),
    and no more than were in flight."""
    settled = next(m for m in said if "queued again" in m)
    assert settled.startswith(tuple(f"{n} job(s)" for n in range(1, flying + 1))), settled


def _stored(api: ClusterAPI, job_id: str) -> dict[str, Any] | None:
    """The run store's run ``job_id`` once it has it, else None."""
    answer = api.client.get(f"/api/v1/runs/{job_id}")
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    run: dict[str, Any] = answer.json()
    return run


def _wait_stored(api: ClusterAPI, job_id: str) -> dict[str, Any]:
    found = wait_until(lambda: _stored(api, job_id), timeout=30, message=job_id)
    assert found is not None
    return found


def _run_fields(run: dict[str, Any]) -> tuple[Any, ...]:
    return (run["status"], run["started_at"], run["finished_at"], len(run["steps"]))


def check_restored(
    restored: ClusterAPI,
    source: ClusterAPI,
    ids: list[str],
    marks: Mapping[str, str],
    hits: Callable[[], Mapping[str, int]],
    query_answer: Any,
) -> None:
    """Every job succeeded in the restored cluster and none ran twice there; the ontology
    answers the same, the twin is there, and a job that did not run again has the very
    run the source stored."""
    after = restored.wait_finished(ids, timeout=180)
    assert {r["status"] for r in after.values()} == {"succeeded"}
    counted = hits()
    executions = [counted.get(marks[i], 0) for i in ids]
    assert max(executions) == 1, "a job ran twice after the restore"
    assert sum(executions) >= 1
    assert restored.client.get("/api/v1/kg/sparql", params={"query": QUERY}).json() == query_answer
    twins = restored.client.get("/api/v1/twins").json()["twins"]
    assert [t["name"] for t in twins] == ["supply-chain"]
    for job_id in ids:
        # The server's ingest stores a run shortly after its job ends: the jobs queued
        # again by the restore ran last, so their runs may be a moment behind.
        run = _wait_stored(restored, job_id)
        if counted.get(marks[job_id], 0) == 0:
            original = source.client.get(f"/api/v1/runs/{job_id}").json()
            assert _run_fields(run) == _run_fields(original)


def check_pre_restore(target: ClusterBackend, into: Path) -> None:
    """A ``--force`` restore kept one pre-restore archive of what it replaced, which
    verifies and holds the pipeline only the target had."""
    kept = [e for e in list_backups(default_backup_dir(target)) if "pre-restore" in e.path.name]
    assert len(kept) == 1 and kept[0].manifest is not None, kept
    assert kept[0].manifest.project == target.project
    assert kept[0].manifest.counts["runs"] >= FLOWING
    replaced = verify_archive(kept[0].path, into)
    assert replaced.project == target.project
    assert (into / "pipelines" / "only-in-fresh.yaml").is_file()


def damaged_copy(archive: Path, into: Path) -> Path:
    """``archive`` with one byte flipped in its middle."""
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    into.write_bytes(bytes(data))
    return into


__all__ = [
    "FLOWING",
    "QUERY",
    "check_pre_restore",
    "check_restored",
    "check_settled",
    "check_source",
    "damaged_copy",
    "enqueue_flowing",
    "in_flight",
    "marked_pipeline",
    "seed",
    "time_to_back_up",
]
