"""Scheduled backups against a real server process with a real Redis.

The server takes a backup every second (``MIMIR_BACKUP_SCHEDULE``, six cron fields, the
seconds first) and keeps the 2 newest (``MIMIR_BACKUP_KEEP=2``): after at least three
backups exactly the two newest archives remain, while what retention must never touch
(a ``pre-restore-…`` archive, a ``.partial`` file, another project's archive, any other
file) is still there, and ``GET /metrics`` reports the backups and the last success.
Encrypted with the passphrase file, the pruned archives' clear manifests go with them. A
tick while another server's backup holds the lock is skipped (counted, logged). A bad
schedule stops the server at startup with the reason.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from mimir.core.backup.archive import read_manifest
from tests.helpers import RedisServer, ServerProcess

DEADLINE = 90.0
ARCHIVE = re.compile(r"^mimir-\d{8}T\d{6}Z\.tar\.gz$")


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_scheduled_backups_keep_the_newest(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, data_dir: Path
) -> None:
    backups = data_dir / "backups"
    backups.mkdir()
    untouchable = [
        backups / "pre-restore-20200101T000000Z-mimir-20200101T000000Z.tar.gz",
        backups / "mimir-20200101T000000Z.tar.gz.partial",
        backups / "mimir-other-20200101T000000Z.tar.gz",
        backups / "notes.txt",
    ]
    for path in untouchable:
        path.write_bytes(b"not an archive of this project")
    server = make_server(
        redis_url=redis_server.url,
        MIMIR_BACKUP_SCHEDULE="* * * * * *",
        MIMIR_BACKUP_KEEP="2",
    ).start(wait_for_redis=True)
    seen: set[str] = set()
    deadline = time.monotonic() + DEADLINE
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        while True:
            metrics = client.get("/metrics")
            assert metrics.status_code == 200, metrics.text
            succeeded = _metric(metrics.text, 'mimir_backups_total{outcome="succeeded"}') or 0
            present = sorted(p.name for p in backups.iterdir() if ARCHIVE.fullmatch(p.name))
            seen.update(present)
            if succeeded >= 3 and len(present) == 2 and len(seen) >= 3:
                break
            assert time.monotonic() < deadline, (
                f"after {DEADLINE}s: {succeeded} backups, archives {present}, seen {sorted(seen)}"
                f"\n{server.output()}"
            )
            time.sleep(0.1)
        # The two left are the newest taken (names sort by time).
        assert present == sorted(seen)[-2:], (present, sorted(seen))
        assert _metric(metrics.text, "mimir_backup_last_success_timestamp_seconds") is not None
        last = _metric(metrics.text, "mimir_backup_last_success_timestamp_seconds")
        assert last is not None and abs(time.time() - last) < DEADLINE
        assert _metric(metrics.text, 'mimir_backups_total{outcome="failed"}') == 0
        # The archives are the server's: listed by the API with their manifests.
        listed = client.get("/api/v1/admin/backups").json()["backups"]
        ours = [entry for entry in listed if ARCHIVE.fullmatch(entry["name"])]
        assert [entry["name"] for entry in ours] == present[::-1]
        assert all(entry["error"] is None for entry in ours), ours
    for path in untouchable:
        assert path.is_file(), f"retention deleted {path.name}"
    assert "scheduled backup" in server.output(400)


def test_scheduled_backups_encrypted_with_the_passphrase_file(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse battery\n")
    server = make_server(
        redis_url=redis_server.url,
        MIMIR_BACKUP_SCHEDULE="* * * * * *",
        MIMIR_BACKUP_KEEP="1",
        MIMIR_BACKUP_PASSPHRASE_FILE=str(passphrase),
        MIMIR_BACKUP_INCLUDE_SECRETS="1",
        MIMIR_PROJECT="nightly",
    ).start(wait_for_redis=True)
    backups = data_dir / "backups"
    deadline = time.monotonic() + DEADLINE
    seen: set[str] = set()
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        while True:
            text = client.get("/metrics").text
            succeeded = _metric(text, 'mimir_backups_total{outcome="succeeded"}') or 0
            names = sorted(p.name for p in backups.iterdir()) if backups.is_dir() else []
            archives = [n for n in names if n.endswith(".tar.gz.age")]
            sidecars = [n for n in names if n.endswith(".meta.json")]
            seen.update(archives)
            # A backup a second: wait for a moment between two (the newest archive's clear
            # manifest is written just after it); a pruned archive's manifest left behind
            # would never let this hold.
            settled = len(archives) == 1 and sidecars == [archives[0] + ".meta.json"]
            if succeeded >= 2 and len(seen) >= 2 and settled:
                break
            assert time.monotonic() < deadline, f"{succeeded} backups, {names}\n{server.output()}"
            time.sleep(0.1)
    (archive,) = archives
    assert archive.startswith("mimir-nightly-") and archive == max(seen)
    manifest = read_manifest(backups / archive, "correct horse battery")
    assert manifest.encrypted and manifest.includes_secrets


def test_a_tick_while_a_backup_runs_is_skipped(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, data_dir: Path
) -> None:
    # Another server's backup holds the cluster's backup lock.
    client = redis.Redis.from_url(redis_server.url)
    client.set("mimir:backup:lock", "another-server", px=120_000)
    server = make_server(redis_url=redis_server.url, MIMIR_BACKUP_SCHEDULE="* * * * * *").start(
        wait_for_redis=True
    )
    deadline = time.monotonic() + DEADLINE
    with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
        while True:
            text = http.get("/metrics").text
            if (_metric(text, 'mimir_backups_total{outcome="skipped"}') or 0) >= 2:
                break
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        assert _metric(text, 'mimir_backups_total{outcome="succeeded"}') == 0
        assert _metric(text, "mimir_backup_last_success_timestamp_seconds") is None
        # A manual backup is refused the same way (the same lock).
        assert http.post("/api/v1/admin/backups", json={}).status_code == 409
        # Once the lock is released, the next tick takes the backup.
        client.delete("mimir:backup:lock")
        while (
            _metric(http.get("/metrics").text, 'mimir_backups_total{outcome="succeeded"}') or 0
        ) < 1:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
    client.close()
    assert "skipped: a backup is already being taken" in server.output(400)


def test_a_bad_schedule_stops_the_server(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = make_server(redis_url=redis_server.url, MIMIR_BACKUP_SCHEDULE="61 * * * *")
    done = subprocess.run(
        [sys.executable, "-m", "mimir.server", "--port", str(server.port)],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "MIMIR_BACKUP_SCHEDULE" in done.stderr and "61 * * * *" in done.stderr
