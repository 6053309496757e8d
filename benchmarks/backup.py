"""Backup and restore of a large store: ``python -m benchmarks.backup [--runs N] [--triples N]``.

Seeds a data directory with ``--runs`` runs written through ``RunStore.upsert`` in batches
(3 steps and 4 log lines each, finished over the last day) and ``--triples`` triples
bulk-loaded into the Oxigraph store (10 named graphs; literals and IRIs; the N-Quads are
generated to a file and loaded in a thread while the runs are written), then starts a
real redis-server and a real ``mimir server`` over it and measures, ``--repeat`` times,
plain and encrypted (age, the default scrypt work factor):

- the backup through ``POST /api/v1/admin/backups``, followed to its end: total, and per
  step as the task reports them (``redis``, ``runstore``, ``ontologies``, ``twins``,
  ``pipelines``, ``files``, ``archive``);
- the archive's size and each part's size (uncompressed, from the manifest);
- ``verify_archive`` of the whole archive into a staging directory (what a restore does
  first);
- restoring the parts from the verified staging: the ontology store rebuilt from N-Quads
  (``load_nquads``) and the run store copied (``sqlite_copy``, SQLite's online backup).

Defaults are small (a quick run: 5,000 runs, 50,000 triples); the issue's figures are
``--runs 100000 --triples 1000000``. Prints a table of medians; ``--json`` prints the
figures as JSON instead.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._processes import ServerProcesses

__all__ = ["main"]

PASSPHRASE = "benchmark passphrase"
GRAPHS = 10
RUN_BATCH = 1000
PIPELINES = [f"pipeline-{i:02d}" for i in range(20)]


def _mib(size: float) -> str:
    return f"{size / 2**20:,.1f} MiB"


# -- seeding ------------------------------------------------------------------------------


def write_nquads(path: Path, triples: int, seed: int = 7) -> None:
    """``triples`` quads over :data:`GRAPHS` named graphs: a third IRIs, the rest literals
    (labels, integers, decimals, dates, language-tagged text)."""
    rng = random.Random(seed)
    per_graph = max(1, triples // GRAPHS)
    written = 0
    ex = "http://example.org/bench"
    rdf_type = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>"
    label = "<http://www.w3.org/2000/01/rdf-schema#label>"
    xsd = "http://www.w3.org/2001/XMLSchema#"
    with path.open("w", encoding="utf-8", buffering=4 * 2**20) as out:
        for g in range(GRAPHS):
            graph = f"<{ex}/graph/{g}>"
            count = per_graph if g < GRAPHS - 1 else triples - written
            entities = max(1, count // 10)
            lines = []
            for n in range(count):
                subject = f"<{ex}/g{g}/entity/{n // 10}>"
                kind = n % 10
                if kind == 0:
                    line = f"{subject} {rdf_type} <{ex}#Class{rng.randrange(50)}>"
                elif kind < 4:
                    target = f"<{ex}/g{g}/entity/{rng.randrange(entities)}>"
                    line = f"{subject} <{ex}#link{kind}> {target}"
                elif kind == 4:
                    line = f'{subject} {label} "Entity {n // 10} of graph {g}"@en'
                elif kind == 5:
                    line = f'{subject} <{ex}#count> "{rng.randrange(10**6)}"^^<{xsd}integer>'
                elif kind == 6:
                    line = f'{subject} <{ex}#value> "{rng.random() * 1000:.4f}"^^<{xsd}decimal>'
                elif kind == 7:
                    day = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                    line = f'{subject} <{ex}#date> "{day}"^^<{xsd}date>'
                else:
                    text = f"measured {rng.random():.6f} at station {rng.randrange(500)}"
                    line = f'{subject} <{ex}#note{kind}> "{text}"'
                lines.append(f"{line} {graph} .\n")
                if len(lines) >= 50_000:
                    out.writelines(lines)
                    lines.clear()
            out.writelines(lines)
            written += count


def load_triples(data_dir: Path, triples: int) -> float:
    """Generate and bulk-load ``triples`` into the data directory's Oxigraph store;
    answers the seconds it took."""
    import pyoxigraph as ox

    started = time.perf_counter()
    source = data_dir.parent / "seed.nq"
    write_nquads(source, triples)
    store = ox.Store(str(data_dir / "ontologies" / "oxigraph"))
    store.bulk_load(path=str(source), format=ox.RdfFormat.N_QUADS)
    store.flush()
    loaded = len(store)
    del store
    source.unlink()
    if loaded != triples:
        raise RuntimeError(f"loaded {loaded} quads, expected {triples}")
    return time.perf_counter() - started


def seed_runs(data_dir: Path, count: int, seed: int = 11) -> float:
    """``count`` runs through ``RunStore.upsert`` (batches of :data:`RUN_BATCH`), each with
    3 steps and 4 log lines; answers the seconds it took."""
    from mimir.core.runstore.db import make_engine, migrate
    from mimir.core.runstore.models import LogLine, RunIn, StepRecord
    from mimir.core.runstore.runs import RunStore

    started = time.perf_counter()
    rng = random.Random(seed)
    engine = make_engine(f"sqlite:///{data_dir / 'mimir.db'}")
    migrate(engine)
    store = RunStore(engine)
    now = datetime.now(UTC)
    batch: list[RunIn] = []
    for n in range(count):
        finished = now - timedelta(seconds=rng.random() * 86400)
        duration = rng.lognormvariate(7, 1)
        began = finished - timedelta(milliseconds=duration)
        failed = rng.random() < 0.1
        pipeline = rng.choice(PIPELINES)
        steps = [
            StepRecord(
                index=i,
                name=name,
                plugin=plugin,
                status="failed" if failed and i == 2 else "succeeded",
                duration_ms=duration / 3,
                error="ValueError: bad row 17" if failed and i == 2 else None,
                started_at=began + timedelta(milliseconds=duration * i / 3),
            )
            for i, (name, plugin) in enumerate(
                (("read", "Input.csv"), ("clean", "Transform.map"), ("write", "Output.json"))
            )
        ]
        logs = [
            LogLine(t=began, step=None, msg=f"run of {pipeline} started"),
            LogLine(t=began, step="read", msg=f"read {rng.randrange(10**5)} rows"),
            LogLine(t=finished, step="write", msg="wrote out/result.json"),
            LogLine(
                t=finished,
                level="ERROR" if failed else "INFO",
                msg="run failed" if failed else "run succeeded",
            ),
        ]
        batch.append(
            RunIn(
                job_id=f"{n:08d}{rng.getrandbits(64):016x}",
                pipeline=pipeline,
                status="failed" if failed else "succeeded",
                queue="default",
                attempts=1,
                worker_id=f"host-{rng.randrange(4)}:{rng.randrange(1000, 9999)}",
                enqueued_at=began - timedelta(milliseconds=5),
                started_at=began,
                finished_at=finished,
                duration_ms=duration,
                error="ValueError: bad row 17" if failed else None,
                context={"day": "2026-11-30"},
                options={"priority": "normal", "queue": "default"},
                result=None if failed else {"rows": rng.randrange(10**4)},
                steps=steps,
                logs=logs,
            )
        )
        if len(batch) >= RUN_BATCH:
            store.upsert(batch)
            batch.clear()
    store.upsert(batch)
    engine.dispose()
    return time.perf_counter() - started


# -- the cluster --------------------------------------------------------------------------


def _cluster(tmp: Path) -> ServerProcesses:
    """A redis-server and a ``mimir server`` over ``tmp/data``, backups in ``tmp/backups``."""
    return ServerProcesses(
        tmp,
        env={"MIMIR_BACKUP_DIR": str(tmp / "backups")},
        server_timeout=120,
        stop_timeout=60,
    )


# -- measuring ----------------------------------------------------------------------------


def take_backup(base_url: str, passphrase: str | None) -> dict[str, Any]:
    """One backup through the API, its steps timed by following the task."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=120.0) as client:
        started = time.perf_counter()
        answer = client.post("/api/v1/admin/backups", json={"passphrase": passphrase})
        answer.raise_for_status()
        task_id = answer.json()["id"]
        steps: dict[str, float] = {}
        step, since = "starting", started
        while True:
            task = client.get(f"/api/v1/admin/backups/tasks/{task_id}").json()
            now = time.perf_counter()
            if task["step"] != step:
                steps[step] = steps.get(step, 0.0) + now - since
                step, since = task["step"], now
            if task["state"] != "running":
                break
            time.sleep(0.02)
        total = time.perf_counter() - started
        if task["state"] != "succeeded":
            raise RuntimeError(f"the backup failed: {task['error']}")
    manifest = task["manifest"]
    parts: dict[str, int] = {}
    for part in manifest["parts"]:
        key = part["name"] if part["kind"] not in {"pipelines", "files"} else part["kind"]
        parts[key] = parts.get(key, 0) + int(part["size"])
    steps.pop("done", None)
    return {"name": task["name"], "total_s": total, "steps": steps, "parts": parts}


def verify_and_restore(archive: Path, work: Path, passphrase: str | None) -> dict[str, float]:
    """Verify ``archive`` into a staging directory, then restore its store parts."""
    from mimir.core.backup.archive import verify_archive
    from mimir.core.backup.stores import load_nquads, sqlite_copy

    staging = work / "staging"
    started = time.perf_counter()
    verify_archive(archive, staging, passphrase=passphrase)
    verified = time.perf_counter() - started
    started = time.perf_counter()
    quads = load_nquads(staging / "ontologies" / "dataset.nq", work / "oxigraph")
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    sqlite_copy(staging / "runstore" / "mimir.db", work / "mimir.db")
    copied = time.perf_counter() - started
    shutil.rmtree(work, ignore_errors=True)
    return {"verify_s": verified, "load_nquads_s": loaded, "sqlite_copy_s": copied, "quads": quads}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    steps = list(dict.fromkeys(s for sample in samples for s in sample["steps"]))
    return {
        "backup_s": _median([s["total_s"] for s in samples]),
        "steps_s": {step: _median([s["steps"].get(step, 0.0) for s in samples]) for step in steps},
        "archive_bytes": int(_median([s["size"] for s in samples])),
        "parts_bytes": samples[-1]["parts"],
        "verify_s": _median([s["verify_s"] for s in samples]),
        "load_nquads_s": _median([s["load_nquads_s"] for s in samples]),
        "sqlite_copy_s": _median([s["sqlite_copy_s"] for s in samples]),
        "repeats": len(samples),
        "backup_s_all": [round(s["total_s"], 2) for s in samples],
    }


def report(figures: dict[str, Any]) -> list[str]:
    plain, encrypted = figures["plain"], figures["encrypted"]
    lines = [
        f"store: {figures['runs']:,} runs, {figures['triples']:,} triples "
        f"(seeded in {figures['seed_runs_s']:.1f} s and {figures['seed_triples_s']:.1f} s, "
        f"in parallel: {figures['seed_s']:.1f} s)",
        f"medians of {plain['repeats']} run(s) each",
        "",
        f"{'':28}{'plain':>14}{'encrypted':>14}{'ratio':>8}",
    ]

    def row(label: str, a: float, b: float, unit: str = "s") -> None:
        ratio = f"{b / a:.2f}" if a else "-"
        if unit == "s":
            lines.append(f"{label:28}{a:>12.2f} s{b:>12.2f} s{ratio:>8}")
        else:
            lines.append(f"{label:28}{_mib(a):>14}{_mib(b):>14}{ratio:>8}")

    row("backup (total)", plain["backup_s"], encrypted["backup_s"])
    for step in plain["steps_s"]:
        row(f"  step {step}", plain["steps_s"][step], encrypted["steps_s"].get(step, 0.0))
    row("archive size", plain["archive_bytes"], encrypted["archive_bytes"], "bytes")
    row("verify (whole archive)", plain["verify_s"], encrypted["verify_s"])
    row("restore: load_nquads", plain["load_nquads_s"], encrypted["load_nquads_s"])
    row("restore: sqlite_copy", plain["sqlite_copy_s"], encrypted["sqlite_copy_s"])
    lines.append("")
    lines.append("parts (uncompressed):")
    for name, size in sorted(plain["parts_bytes"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:36}{_mib(size):>14}")
    total = sum(plain["parts_bytes"].values())
    lines.append(
        f"  {'all parts':36}{_mib(total):>14}  (archive {plain['archive_bytes'] / total:.0%} of it)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.backup", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=5000, help="runs (default 5,000)")
    parser.add_argument("--triples", type=int, default=50_000, help="triples (default 50,000)")
    parser.add_argument("--repeat", type=int, default=1, help="backups of each kind (1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("benchmarks.backup: redis-server is not on PATH; skipped", flush=True)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="mimir-bench-backup-"))
    cluster = _cluster(tmp)
    try:
        data_dir = tmp / "data"
        (data_dir / "ontologies").mkdir(parents=True)
        (tmp / "pipelines").mkdir()
        (tmp / "pipelines" / "etl.yaml").write_text("name: etl\nsteps: []\n")
        seeded: dict[str, float] = {}
        failure: list[BaseException] = []

        def triples() -> None:
            try:
                seeded["triples"] = load_triples(data_dir, args.triples)
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)

        started = time.perf_counter()
        loader = threading.Thread(target=triples, name="seed-triples")
        loader.start()
        seeded["runs"] = seed_runs(data_dir, args.runs)
        loader.join()
        if failure:
            raise failure[0]
        seed_s = time.perf_counter() - started
        if not args.json:
            print(
                f"seeded {args.runs:,} runs and {args.triples:,} triples in {seed_s:.1f} s",
                flush=True,
            )
        cluster.start()
        samples: dict[str, list[dict[str, Any]]] = {"plain": [], "encrypted": []}
        for n in range(args.repeat):
            for kind in ("plain", "encrypted"):
                passphrase = PASSPHRASE if kind == "encrypted" else None
                sample = take_backup(cluster.base_url, passphrase)
                archive = tmp / "backups" / sample["name"]
                sample["size"] = archive.stat().st_size
                sample.update(verify_and_restore(archive, tmp / "restore", passphrase))
                if sample["quads"] != args.triples:
                    raise RuntimeError(f"restored {sample['quads']} quads of {args.triples}")
                archive.unlink()
                Path(f"{archive}.meta.json").unlink(missing_ok=True)
                samples[kind].append(sample)
                if not args.json:
                    print(
                        f"  {kind} #{n + 1}: backup {sample['total_s']:.1f} s, "
                        f"{_mib(sample['size'])}, verify {sample['verify_s']:.1f} s, "
                        f"load_nquads {sample['load_nquads_s']:.1f} s",
                        flush=True,
                    )
        figures = {
            "runs": args.runs,
            "triples": args.triples,
            "seed_runs_s": seeded["runs"],
            "seed_triples_s": seeded["triples"],
            "seed_s": seed_s,
            "plain": summarise(samples["plain"]),
            "encrypted": summarise(samples["encrypted"]),
        }
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print("\n".join(report(figures)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
