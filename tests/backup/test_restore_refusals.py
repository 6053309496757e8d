"""``mimir cluster restore`` refuses a damaged, foreign or newer archive, or a wrong
passphrase, with exit code 2 and a message naming the part, and changes nothing.

The target is a local project that holds data (a pipeline, a run store file, a queue
file); every refusal happens before anything is written, so those files stay as they were
and no cluster is started.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from mimir.app.cluster.cli import main as cluster_main
from mimir.core.backup.archive import write_archive
from mimir.core.backup.manifest import Manifest
from mimir.core.runstore.db import head_revision

PASSPHRASE = "correct horse battery"


def _archive(root: Path, *, passphrase: str | None = None, **changes: object) -> Path:
    staging = root / "staging"
    (staging / "pipelines").mkdir(parents=True)
    (staging / "pipelines" / "hello.yaml").write_text("name: hello\nsteps: []\n")
    (staging / "runstore").mkdir()
    (staging / "runstore" / "mimir.db").write_bytes(b"SQLite format 3\x00" + bytes(4080))
    fields: dict[str, object] = {
        "project": "src",
        "schemas": {
            "runstore": {"engine": "sqlite", "alembic_revision": head_revision()},
            "queue": {"rdb_version": 9},
        },
    }
    fields.update(changes)
    manifest = Manifest(**fields)  # type: ignore[arg-type]
    dest = root / ("archive.tar.gz" + (".age" if passphrase else ""))
    write_archive(staging, dest, manifest, passphrase=passphrase, work_factor=10)
    return dest


def _tree(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local project ``dst`` with data and no cluster running; answers its directory."""
    state = tmp_path / "state"
    project = state / "dst"
    (project / "pipelines").mkdir(parents=True)
    (project / "pipelines" / "mine.yaml").write_text("name: mine\nsteps: []\n")
    (project / "data").mkdir()
    (project / "data" / "mimir.db").write_bytes(b"the target's own run store")
    (project / "redis").mkdir()
    (project / "redis" / "appendonly.aof").write_bytes(b"the target's own queue")
    for name in ("MIMIR_DATA_DIR", "MIMIR_PIPELINES_DIR", "MIMIR_DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MIMIR_STATE_DIR", str(state))
    monkeypatch.delenv("MIMIR_BACKUP_PASSPHRASE", raising=False)
    return project


def _restore(archive: Path, *extra: str) -> int:
    return cluster_main(["restore", str(archive), "--backend", "local", "--project", "dst", *extra])


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _rewrite_manifest(archive: Path, **changes: object) -> None:
    """The same archive with its manifest changed (and consistent: a newer Mimir's)."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar]  # type: ignore[union-attr]
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for member, data in members:
            if member.name == "manifest.json":
                manifest = json.loads(data)
                manifest.update(changes)
                data = json.dumps(manifest).encode()
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    archive.write_bytes(out.getvalue())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "truncated"),
        ("flipped", "damaged"),
        ("newer", "newer Mimir"),
        ("schema", "does not know"),
    ],
)
def test_a_bad_archive_is_refused_and_the_target_is_untouched(
    tmp_path: Path,
    target: Path,
    damage: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if damage == "schema":
        archive = _archive(
            tmp_path, schemas={"runstore": {"engine": "sqlite", "alembic_revision": "0099_future"}}
        )
    else:
        archive = _archive(tmp_path)
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    elif damage == "flipped":
        _flip(archive, archive.stat().st_size // 2)
    elif damage == "newer":
        _rewrite_manifest(archive, format_version=2, mimir_version="9.0.0")
    before = _tree(target)
    assert _restore(archive) == 2
    err = capsys.readouterr().err
    assert "refused, nothing changed" in err and message in err, err
    assert _tree(target) == before
    assert not (target.parent / "restore-staging").exists() or not any(
        (target.parent / "restore-staging").iterdir()
    )


def test_an_encrypted_archive_with_a_wrong_passphrase_is_refused(
    tmp_path: Path, target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _archive(tmp_path, passphrase=PASSPHRASE)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the passphrase\n")
    before = _tree(target)
    assert _restore(archive, "--passphrase-file", str(wrong)) == 2
    assert "wrong passphrase" in capsys.readouterr().err
    assert _tree(target) == before


def test_a_good_archive_over_data_needs_force(
    tmp_path: Path, target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _archive(tmp_path, passphrase=PASSPHRASE)
    right = tmp_path / "right.txt"
    right.write_text(PASSPHRASE + "\n")
    before = _tree(target)
    assert _restore(archive, "--passphrase-file", str(right)) == 2
    err = capsys.readouterr().err
    assert "has data" in err and "--force" in err, err
    assert _tree(target) == before
