"""Qt-free data services: SSE decoding, ring buffers, downsampling, profiles, job store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mimir.app.services.events import SseDecoder
from mimir.app.services.jobs import JobStore, job_matches
from mimir.app.services.profiles import (
    ConnectionProfile,
    DictSettings,
    ProfileStore,
    TokenStore,
)
from mimir.app.services.timeseries import RingSeries, SeriesSet, peak_downsample


def test_sse_decoder_handles_multiline_comments_and_crlf() -> None:
    decoder = SseDecoder()
    lines = [": keep-alive", "event: stats", 'data: {"a":', "data: 1}\r", "", "data: x", ""]
    events = [e for e in (decoder.feed(line) for line in lines) if e is not None]
    assert [e.event for e in events] == ["stats", "message"]
    assert events[0].json() == {"a": 1}
    assert events[1].data == "x"


def test_ring_series_wraps_and_windows() -> None:
    series = RingSeries(capacity=5)
    for t in range(8):
        series.append(float(t), float(t * 10))
    t, v = series.arrays()
    assert t.tolist() == [3, 4, 5, 6, 7]
    assert v.tolist() == [30, 40, 50, 60, 70]
    assert series.window(2.0)[0].tolist() == [5, 6, 7]
    assert series.last == 70
    with pytest.raises(ValueError):
        RingSeries(1)


def test_series_set_forgets_departed_workers() -> None:
    sets = SeriesSet(10)
    sets.append(0, {"cpu:a": 1, "cpu:b": 2, "queue": 3})
    sets.discard_missing(["cpu:a"], "cpu:")
    assert sorted(sets.names()) == ["cpu:a", "queue"]


def test_peak_downsample_keeps_spikes_and_tail() -> None:
    t = np.arange(3601, dtype=float)
    v = np.zeros(3601)
    v[1234] = 99.0
    v[10] = -5.0
    dt, dv = peak_downsample(t, v, 400)
    assert len(dt) <= 402
    assert dv.max() == 99.0 and dv.min() == -5.0
    assert dt[-1] == 3600.0
    assert np.all(np.diff(dt) >= 0)


def test_profiles_roundtrip_without_tokens_in_settings() -> None:
    settings = DictSettings()
    tokens = TokenStore(use_keyring=False)
    store = ProfileStore(settings, tokens)
    assert [p.kind for p in store.load()] == ["local_processes", "local_docker"]
    remote = ConnectionProfile("prod", "remote_api", api_url="https://mimir.example:8080")
    store.upsert(remote, token="s3cret-token")
    store.set_current("prod")
    assert store.current() == remote
    assert store.token("prod") == "s3cret-token"
    assert "s3cret-token" not in json.dumps(settings.data)
    with pytest.raises(ValueError, match="API URL"):
        store.upsert(ConnectionProfile("bad", api_url="ftp://x"))
    with pytest.raises(ValueError, match="Docker host"):
        ConnectionProfile("d", "remote_docker", docker_host="example:2375").validate()
    store.remove("prod")
    assert store.get("prod") is None and store.token("prod") is None


def test_profiles_survive_corrupt_settings() -> None:
    settings = DictSettings()
    settings.setValue(ProfileStore.LIST_KEY, "{not json")
    assert ProfileStore(settings, TokenStore(use_keyring=False)).load()[0].name == "Local processes"


def _job(job_id: str, version: int, status: str, **fields: object) -> dict[str, object]:
    return {"job_id": job_id, "version": version, "status": status, **fields}


def test_job_store_merges_subset_events_and_bounds() -> None:
    store = JobStore(max_rows=3)
    change = store.upsert({"job_id": "a", "status": "queued", "pipeline": "p"})
    assert change is not None and change.kind == "insert"
    store.upsert({"job_id": "a", "status": "running", "worker_id": None})
    assert store.get("a") == {
        "job_id": "a",
        "status": "running",
        "pipeline": "p",
        "worker_id": None,
    }
    for name in "bcd":
        store.upsert({"job_id": name, "status": "succeeded"})
    assert store.over_limit() and store.trim() == ["b", "c"]  # the oldest finished first
    assert [r["job_id"] for r in store.rows] == ["d", "a"]
    assert store.counts()["running"] == 1
    assert job_matches({"job_id": "x1", "status": "failed", "error": "Boom"}, "failed", "boom")
    assert not job_matches({"job_id": "x1", "status": "failed"}, "succeeded", "")


def test_job_store_never_lets_an_older_record_overwrite_a_newer_one() -> None:
    """Issue 13: the cancel reply (read right after the cancel script: running, version 3)
    arrives after the live ``cancelled`` event (version 4); the row must stay cancelled."""
    store = JobStore()
    store.upsert(_job("j", 1, "queued", enqueued_at="2026-01-01T00:00:00Z"))
    store.upsert(_job("j", 2, "running", worker_id="w1"))
    store.upsert(_job("j", 4, "cancelled", finished_at="2026-01-01T00:00:05Z"))
    assert store.prepare(_job("j", 3, "running", cancel_requested=True)) is None
    assert store.upsert(_job("j", 3, "running", cancel_requested=True)) is None
    assert store.get("j")["status"] == "cancelled"  # type: ignore[index]
    # The same version again (a listing of what the event said) merges: same state.
    store.upsert(_job("j", 4, "cancelled", result=None, error="cancelled while running"))
    assert store.get("j")["error"] == "cancelled while running"  # type: ignore[index]
    # A deletion removes the row; a late record of the deleted job does not bring it back.
    assert store.upsert({"job_id": "j", "version": 5, "deleted": True}).kind == "remove"  # type: ignore[union-attr]
    assert store.get("j") is None and len(store) == 0
    assert store.upsert(_job("j", 4, "cancelled")) is None  # a listing read before it
    assert store.get("j") is None


def test_job_store_forgets_the_times_and_result_of_a_retried_job() -> None:
    """Issue 13: a dead-letter retry kept the old started_at, so "Ran" showed 44.2 s for
    a 1 ms run; the retry's event (and record) sends the unset times as null."""
    from mimir.app.services.jobs import COLUMNS

    ran = next(c for c in COLUMNS if c.title == "Ran")
    store = JobStore()
    store.upsert(
        _job(
            "j", 4, "failed", enqueued_at="2026-01-01T00:00:00Z",
            started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:00:01Z",
            error="boom", result={"partial": 1},
        )
    )  # fmt: skip
    assert ran.text(store.get("j")) == "1.0 s"  # type: ignore[arg-type]
    store.upsert(_job("j", 5, "queued", started_at=None, finished_at=None, error=None))
    retried = store.get("j")
    assert retried is not None and ran.text(retried) == "" and "result" not in retried
    store.upsert(_job("j", 6, "running", started_at="2026-01-01T00:00:44Z"))
    store.upsert(_job("j", 7, "failed", finished_at="2026-01-01T00:00:44.001Z"))
    assert ran.text(store.get("j")) == "1 ms"  # type: ignore[arg-type]


def test_job_store_orders_newest_first_and_sorts_by_any_column() -> None:
    """Issue 13: a job listed after newer ones appeared at the bottom of a newest-first
    table; rows are placed by the sort column (ties in arrival order)."""
    store = JobStore()
    for n in (5, 9, 7):
        change = store.upsert(_job(f"j{n}", 1, "queued", enqueued_at=f"2026-01-01T00:00:0{n}Z"))
        assert change is not None
    assert [r["job_id"] for r in store.rows] == ["j9", "j7", "j5"]
    # A newer job arriving late still lands at the top; an older one below its elders.
    insert = store.prepare(_job("j8", 1, "queued", enqueued_at="2026-01-01T00:00:08Z"))
    assert insert is not None and (insert.kind, insert.to_row) == ("insert", 1)
    store.commit(insert)
    assert [r["job_id"] for r in store.rows] == ["j9", "j8", "j7", "j5"]
    assert store.row_of("j7") == 2 and store.record(0)["job_id"] == "j9"
    # Sorted by status: a change of status moves the row, and says where.
    store.sort(1, descending=False)  # all queued: arrival order
    assert [r["job_id"] for r in store.rows] == ["j5", "j9", "j7", "j8"]
    move = store.prepare(_job("j5", 2, "running"))
    assert move is not None and (move.kind, move.row, move.to_row) == ("move", 0, 3)
    store.commit(move)
    assert [r["job_id"] for r in store.rows] == ["j9", "j7", "j8", "j5"]
    still = store.prepare(_job("j8", 2, "queued", worker_id="w"))
    assert still is not None and (still.kind, still.row, still.to_row) == ("update", 2, 2)


def test_job_store_trims_the_oldest_finished_jobs_first() -> None:
    store = JobStore(max_rows=20)
    for n in range(21):
        store.upsert(_job(f"j{n:02d}", 1, "running" if n < 3 else "succeeded"))
    assert store.over_limit()
    dropped = store.trim()
    assert dropped == ["j03", "j04"] and len(store) == 19
    assert all(store.get(f"j{n:02d}") for n in range(3))
    kept = [*range(20, 4, -1), 2, 1, 0]  # newest first (all enqueued at once: by arrival)
    assert [r["job_id"] for r in store.rows] == [f"j{n:02d}" for n in kept]


def test_dead_letter_filter_and_readable_details() -> None:
    from mimir.app.services.jobs import DEAD_LETTER, count_text, describe_job

    assert job_matches({"status": "failed"}, DEAD_LETTER, "")
    assert job_matches({"status": "dead"}, DEAD_LETTER, "")
    assert not job_matches({"status": "cancelled"}, DEAD_LETTER, "")
    text = describe_job(
        _job(
            "abc", 3, "failed", pipeline="nap", priority="high", attempts=1, max_retries=0,
            enqueued_at="2026-01-01T00:00:00Z", started_at="2026-01-01T00:00:00.5Z",
            finished_at="2026-01-01T00:00:02Z", error="upstream 503", result={"n": 1},
        )
    )  # fmt: skip
    assert "Status      failed · in the dead letter" in text
    assert "Attempts    1 of 1" in text and "(waited 500 ms)" in text and "(ran 1.5 s)" in text
    assert "Error\nupstream 503" in text and '"n": 1' in text
    assert not text.lstrip().startswith("{")  # not raw JSON
    assert (count_text(1, "job"), count_text(2, "job")) == ("1 job", "2 jobs")


def test_dashboard_recorder_tracks_queue_and_workers() -> None:
    from mimir.app.services.timeseries import DashboardRecorder

    recorder = DashboardRecorder(capacity=10)
    stats = {"by_priority": {"high": 2, "normal": 5, "low": 1}, "running": 3, "workers": 2}
    recorder.add_stats({**stats, "completed_per_sec": 4.5}, t=1.0)
    recorder.add_workers([{"worker_id": "w1", "cpu_percent": 50.0, "memory_bytes": 2**21}], t=1.0)
    assert recorder.series["q:normal"].last == 5.0
    assert recorder.series["completed"].last == 4.5
    assert recorder.series["mem:w1"].last == 2.0
    recorder.add_workers([{"worker_id": "w2"}], t=2.0)
    assert recorder.worker_ids == ["w2"]
    assert "cpu:w1" not in recorder.series.names()
