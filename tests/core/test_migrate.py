"""``mimir migrate`` as a real subprocess, over copies of the original platform's files."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from mimir.core.engine import execute_pipeline
from mimir.core.pipeline import load_pipeline
from tests.core.test_commands import mimir

ORIGIN = Path(__file__).resolve().parents[1] / "data" / "origin"


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A writable copy of the original's files."""
    copy = tmp_path / "origin"
    shutil.copytree(ORIGIN, copy)
    return copy


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_check_reports_changes_and_what_cannot_be_carried_over(origin: Path) -> None:
    before = _snapshot(origin)
    done = mimir("migrate", "--check", str(origin))
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert f"would migrate {origin}/test_pipelines/json_echo_test.yaml" in out
    assert "config.input: 'json_data' → '{{ json_data }}'" in out
    assert f"CANNOT {origin}/test_pipelines/storage_demo.yaml" in out
    assert "unknown plugin 'Storage.vector'" in out
    # The pipelines the original never ran are named with the plugins they lack.
    assert "'analytics_pipeline': a pipeline the original never ran" in out
    assert "Data_Processing.analyze, Storage.vector exist nowhere here" in out
    assert "operation 'extract_pattern' exists nowhere" in out
    assert f"skip {origin}/utils/schema/pipeline_schema.yaml: not a pipeline file" in out
    assert "3 migrated, 5 blocked, 1 skipped" in done.stderr
    assert _snapshot(origin) == before  # --check writes nothing


def test_out_writes_canonical_files_that_mean_what_the_originals_meant(
    origin: Path, tmp_path: Path, data_dir: Path
) -> None:
    out = tmp_path / "migrated"
    done = mimir("migrate", str(origin), "--out", str(out))
    assert done.returncode == 1  # some files cannot be carried over
    assert sorted(_snapshot(out)) == [
        "test_pipeline.yaml",
        "test_pipelines/json_echo_test.yaml",
        "test_pipelines/llm_chain_example.yaml",
    ]
    for path in out.rglob("*.yaml"):
        pipeline = load_pipeline(path, strict=True)
        # Nothing is left for a compatibility rule to read differently.
        assert pipeline.warnings == [] and pipeline.notes == [], path
    echo = (out / "test_pipelines" / "json_echo_test.yaml").read_text()
    assert "input: '{{ json_data }}'" in echo and "indent: 2" in echo
    chain = (out / "test_pipelines" / "llm_chain_example.yaml").read_text()
    assert "plugin: AI.openai" in chain and "operation" not in chain
    assert (
        "{{ initial_content.text }}" in chain and "file_path: output/llm_chain_result.json" in chain
    )
    # The same run, the same result.
    results = [
        asyncio.run(execute_pipeline(load_pipeline(p), {}, data_dir=data_dir)).context
        for p in (origin / "test_pipelines" / "json_echo_test.yaml", out / "test_pipelines" /
                  "json_echo_test.yaml")
    ]  # fmt: skip
    assert results[0] == results[1]
    # Unchanged originals: nothing was written next to them.
    assert not list(origin.rglob("*.bak"))


def test_in_place_keeps_a_backup_and_a_second_run_changes_nothing(origin: Path) -> None:
    target = origin / "test_pipelines" / "json_echo_test.yaml"
    original = target.read_bytes()
    done = mimir("migrate", str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"original kept as {target}.bak" in done.stdout
    assert (origin / "test_pipelines" / "json_echo_test.yaml.bak").read_bytes() == original
    assert target.read_text().startswith("# Migrated by 'mimir migrate' from json_echo_test.yaml")
    again = mimir("migrate", "--check", str(target))
    assert again.returncode == 0, again.stdout
    assert again.stdout.strip() == f"unchanged {target}"


def test_store_records_default_outputs_and_root_paths(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    record = {
        "id": "pipeline_1700000000",
        "name": "Sales",
        "metadata": {"id": "pipeline_1700000000", "name": "Sales", "description": "Daily",
                     "tags": ["daily"], "enabled": True, "version": 3, "schedule": "0 6 * * *"},
        "config": {
            "Name": "Sales",
            "Steps": [
                {"Name": "read", "Plugin": "Input.json",
                 "Config": {"file_path": "/srv/mimir/data/sales.json"}},
                {"Name": "rows", "Plugin": "Input.csv",
                 "Config": {"file_path": "/srv/mimir/data/in/rows.csv"}, "Output": "rows"},
                {"Name": "sort", "Plugin": "Data_Processing.transform",
                 "Config": {"input": "rows", "sort_by": ["amount"]}, "Output": "sorted"},
                {"Name": "write", "Plugin": "Output.json",
                 "Config": {"input": "json_data", "filename": "/srv/mimir/data/out/s.json"}},
            ],
        },
    }  # fmt: skip
    (store / "pipeline_1700000000.json").write_text(json.dumps(record))
    done = mimir("migrate", str(store), "--root", "/srv/mimir/data")
    assert done.returncode == 0, done.stdout
    migrated = load_pipeline(store / "Sales.yaml", strict=True)
    assert (store / "pipeline_1700000000.json").exists()  # the record is left as it was
    assert migrated.description == "Daily" and migrated.tags == ["daily"]
    assert migrated.metadata["origin"]["schedule"] == "0 6 * * *"
    read, rows, sort, write = migrated.steps
    assert read.config == {"file_path": "sales.json"} and read.output == "json_data"
    assert rows.config == {"file_path": "in/rows.csv"}
    assert sort.config["input"] == "{{ rows }}"
    # Output.json reads the Input.json value as the original did; its shape is not known,
    # so the bare key stays (and says so).
    assert write.config == {"input": "json_data", "file_path": "out/s.json"}
    assert "'output: json_data' added" in done.stdout
    assert "check: " in done.stdout and "kept as the bare key 'json_data'" in done.stdout

    # Again: nothing to do (the record's file is there, the same).
    again = mimir("migrate", "--check", str(store), "--root", "/srv/mimir/data")
    assert again.returncode == 0, again.stdout
    assert "unchanged" in again.stdout and "would migrate" not in again.stdout
    # Another record of the same name would replace that file: refused.
    changed = {**record, "metadata": {**record["metadata"], "description": "Weekly"}}
    (store / "copy.json").write_text(json.dumps(changed))
    clash = mimir("migrate", str(store / "copy.json"), "--root", "/srv/mimir/data")
    assert clash.returncode == 1
    assert f"{store}/Sales.yaml exists and differs; not replaced" in clash.stdout
    (store / "copy.json").unlink()

    outside = dict(record, config={"Name": "X", "Steps": [
        {"Name": "r", "Plugin": "Input.csv", "Config": {"file_path": "/etc/passwd"}}]})  # fmt: skip
    (store / "other.json").write_text(json.dumps(outside))
    refused = mimir("migrate", "--check", str(store / "other.json"), "--root", "/srv/mimir/data")
    assert refused.returncode == 1
    assert "absolute path '/etc/passwd' is not under --root /srv/mimir/data" in refused.stdout
