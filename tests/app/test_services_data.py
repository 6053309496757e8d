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


def test_job_store_merges_subset_events_and_bounds() -> None:
    store = JobStore(max_rows=3)
    assert store.upsert({"job_id": "a", "status": "queued", "pipeline": "p"}) == (0, True)
    assert store.upsert({"job_id": "a", "status": "running", "worker_id": None}) == (0, False)
    assert store.get("a") == {"job_id": "a", "status": "running", "pipeline": "p"}
    for name in "bcd":
        store.upsert({"job_id": name, "status": "succeeded"})
    assert store.over_limit() == 1
    store.drop_oldest(1)
    assert [r["job_id"] for r in store.rows] == ["b", "c", "d"]
    assert store.position("d") == 2
    assert store.counts() == {"succeeded": 3}
    assert job_matches({"job_id": "x1", "status": "failed", "error": "Boom"}, "failed", "boom")
    assert not job_matches({"job_id": "x1", "status": "failed"}, "succeeded", "")


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
