"""Retention of backup archives (:func:`mimir.core.backup.retention.prune`) over real
archives written by :func:`mimir.core.backup.archive.write_archive`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mimir.core.backup.archive import archive_name, sidecar_path, write_archive
from mimir.core.backup.manifest import Manifest, iso_utc
from mimir.core.backup.retention import archives, prune

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
WF = 2  # scrypt work factor: fast for tests


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    folder = tmp_path / "staging"
    (folder / "pipelines").mkdir(parents=True)
    (folder / "pipelines" / "etl.yaml").write_text("name: etl\nsteps: []\n")
    return folder


def _archive(
    folder: Path,
    staging: Path,
    days_ago: float,
    *,
    project: str = "",
    encrypted: bool = False,
    taken_days_ago: float | None = None,
) -> Path:
    """An archive named as taken ``days_ago`` (its manifest says ``taken_days_ago``)."""
    named = NOW - timedelta(days=days_ago)
    taken = NOW - timedelta(days=days_ago if taken_days_ago is None else taken_days_ago)
    dest = folder / archive_name(project, named, encrypted)
    write_archive(
        staging,
        dest,
        Manifest(taken_at=iso_utc(taken), project=project),
        passphrase="correct horse battery" if encrypted else None,
        work_factor=WF,
    )
    return dest


def test_keeps_the_newest_n(tmp_path: Path, staging: Path) -> None:
    folder = tmp_path / "backups"
    made = [_archive(folder, staging, days) for days in (5, 4, 3, 2, 1)]
    deleted = prune(folder, keep=2, keep_days=0, now=NOW)
    assert sorted(deleted) == sorted(made[:3])
    assert sorted(folder.iterdir()) == sorted(made[3:])
    assert prune(folder, keep=2, keep_days=0, now=NOW) == []


def test_keeps_days_and_both_rules_apply(tmp_path: Path, staging: Path) -> None:
    folder = tmp_path / "backups"
    made = {days: _archive(folder, staging, days) for days in (0.5, 1.5, 2.5, 3.5, 9)}
    # 3 days: the 3.5- and 9-day-old ones go, though keep=10 would keep them.
    deleted = prune(folder, keep=10, keep_days=3, now=NOW)
    assert sorted(deleted) == sorted([made[3.5], made[9]])
    # keep=1 with 3 days: only the newest stays (the stricter rule wins).
    deleted = prune(folder, keep=1, keep_days=3, now=NOW)
    assert sorted(deleted) == sorted([made[1.5], made[2.5]])
    assert list(folder.iterdir()) == [made[0.5]]


def test_zero_is_off(tmp_path: Path, staging: Path) -> None:
    folder = tmp_path / "backups"
    for days in (30, 20, 10):
        _archive(folder, staging, days)
    assert prune(folder, keep=0, keep_days=0, now=NOW) == []
    assert len(list(folder.iterdir())) == 3
    with pytest.raises(ValueError):
        prune(folder, keep=-1, keep_days=0, now=NOW)


def test_never_the_newest_good_archive(tmp_path: Path, staging: Path) -> None:
    folder = tmp_path / "backups"
    older = _archive(folder, staging, 20)
    good = _archive(folder, staging, 10)
    # Newer by name, but not an archive (its manifest cannot be read).
    damaged = folder / archive_name("", NOW - timedelta(days=5), False)
    damaged.write_bytes(b"\x1f\x8b damaged")
    # Every archive is older than a day: the newest good one stays anyway.
    deleted = prune(folder, keep=1, keep_days=1, now=NOW)
    assert sorted(deleted) == sorted([older, damaged])
    assert list(folder.iterdir()) == [good]


def test_ordered_by_the_manifest_then_the_name(tmp_path: Path, staging: Path) -> None:
    folder = tmp_path / "backups"
    # Named as the newest, but its manifest says it was taken first.
    renamed = _archive(folder, staging, 1, taken_days_ago=9)
    middle = _archive(folder, staging, 5)
    newest = _archive(folder, staging, 3)
    assert [a.path for a in archives(folder)] == [newest, middle, renamed]
    assert prune(folder, keep=2, keep_days=0, now=NOW) == [renamed]


def test_sidecars_go_with_their_archive(tmp_path: Path, staging: Path) -> None:
    folder = tmp_path / "backups"
    old = _archive(folder, staging, 3, encrypted=True)
    new = _archive(folder, staging, 1, encrypted=True)
    assert sidecar_path(old).is_file() and sidecar_path(new).is_file()
    assert prune(folder, keep=1, keep_days=0, now=NOW) == [old]
    assert sorted(p.name for p in folder.iterdir()) == sorted([new.name, sidecar_path(new).name])


def test_what_is_never_touched(tmp_path: Path, staging: Path) -> None:
    folder = tmp_path / "backups"
    kept = _archive(folder, staging, 1)
    old = _archive(folder, staging, 40)
    stamp = (NOW - timedelta(days=50)).strftime("%Y%m%dT%H%M%SZ")
    untouched = [
        # What a restore replaced.
        folder / f"pre-restore-{stamp}-mimir-{stamp}.tar.gz",
        # A task writing its archive (and an encrypted one's manifest).
        folder / f"mimir-{stamp}.tar.gz.partial",
        folder / f"mimir-{stamp}.tar.gz.age.meta.json.partial",
        # Anything else.
        folder / "notes.txt",
        folder / f"mimir-{stamp}.tar.gz.bak",
    ]
    for path in untouched:
        path.write_bytes(b"x")
    link = folder / archive_name("", NOW - timedelta(days=60), False)
    link.symlink_to(old)
    assert prune(folder, keep=1, keep_days=7, now=NOW) == [old]
    assert kept.is_file() and link.is_symlink()
    for path in untouched:
        assert path.is_file(), path.name


def test_project_keeps_other_projects(tmp_path: Path, staging: Path) -> None:
    folder = tmp_path / "backups"
    mine = [_archive(folder, staging, days, project="prod-eu") for days in (3, 2, 1)]
    theirs = [_archive(folder, staging, days, project="staging") for days in (5, 4)]
    plain = _archive(folder, staging, 6)
    deleted = prune(folder, keep=1, keep_days=0, now=NOW, project="prod-eu")
    assert sorted(deleted) == sorted(mine[:2])
    assert all(path.is_file() for path in [*theirs, plain, mine[2]])
    assert {a.project for a in archives(folder)} == {"prod-eu", "staging", ""}


def test_a_missing_directory_prunes_nothing(tmp_path: Path) -> None:
    assert prune(tmp_path / "nowhere", keep=1, keep_days=1, now=NOW) == []
