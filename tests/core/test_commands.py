"""``mimir run``, ``mimir validate`` and ``mimir plugins`` as real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "resources" / "pipelines"
SAMPLE_DATA = ROOT / "resources" / "data"


def mimir(
    *args: str, data_dir: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("MIMIR_LOG_LEVEL", None)
    if data_dir is not None:
        env["MIMIR_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "mimir.core.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def seeded(data_dir: Path) -> Path:
    """The data directory with the sample data copied in, as the demo does."""
    for path in SAMPLE_DATA.iterdir():
        shutil.copy(path, data_dir / path.name)
    return data_dir


def test_run_the_seed_example_prints_the_result(data_dir: Path) -> None:
    done = mimir(
        "run", str(EXAMPLES / "test_pipeline.yaml"), "--context", '{"input": "test data"}',
        data_dir=data_dir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["success"] is True
    assert result["context"]["echoed"] == "test data"
    assert result["context"]["summary"]["model"] == "mock"
    assert [s["status"] for s in result["steps"]] == ["succeeded"] * 3


def test_run_sales_report_writes_json_and_html_into_the_data_dir(seeded: Path) -> None:
    done = mimir("run", str(EXAMPLES / "sales_report.yaml"), "--compact", data_dir=seeded)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1
    summary = json.loads((seeded / "reports" / "sales_summary.json").read_text())
    assert {row["region"] for row in summary} == {"north", "south", "east", "west"}
    assert sum(row["count"] for row in summary) == 12
    assert "<h1>Sales by region</h1>" in (seeded / "reports" / "sales_summary.html").read_text()


def test_run_ai_summary_with_an_explicit_data_dir(seeded: Path, tmp_path: Path) -> None:
    done = mimir(
        "run", str(EXAMPLES / "ai_summary.yaml"), "--data-dir", str(seeded),
        data_dir=tmp_path / "elsewhere",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    saved = json.loads((seeded / "reports" / "article_summary.json").read_text())
    assert saved["title"] == "Quarterly operations review"
    assert saved["tone"]["label"] == "positive"


def test_run_exits_1_on_a_failing_step_and_names_it(tmp_path: Path, data_dir: Path) -> None:
    file = tmp_path / "fails.yaml"
    file.write_text(
        "name: fails\nsteps:\n"
        "  - {name: ok, plugin: Debug.echo, config: {value: 1}}\n"
        "  - {name: broken, plugin: Debug.fail, config: {message: no luck}}\n"
    )
    done = mimir("run", str(file), data_dir=data_dir)
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["success"] is False
    assert result["error"] == "step 2 'broken' (Debug.fail) failed: no luck"
    assert "step 2 'broken' (Debug.fail) failed: no luck" in done.stderr


def test_run_exits_2_on_an_invalid_pipeline_naming_line_step_and_field(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(
        "name: bad\nsteps:\n  - name: load\n    plugin: Input.cvs\n    config: {file_path: a}\n"
    )
    done = mimir("run", str(file))
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"{file}:4:13: step 1 'load', field 'plugin': unknown plugin 'Input.cvs'" in done.stderr
    assert "did you mean Input.csv" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--context", "{oops"], "--context is not valid JSON"),
        (["--context", "[1, 2]"], "--context must be a JSON object, got list"),
    ],
)
def test_run_rejects_a_bad_context(args: list[str], message: str) -> None:
    done = mimir("run", str(EXAMPLES / "test_pipeline.yaml"), *args)
    assert done.returncode == 2 and message in done.stderr


def test_run_missing_file(tmp_path: Path) -> None:
    done = mimir("run", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_validate_prints_ok_or_each_issue(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nsteps:\n"
        "  - name: nap\n    plugin: Debug.sleep\n    config: {secnds: 1}\n"
        "  - name: nap\n    plugin: Debug.echo\n"
    )
    good = EXAMPLES / "sales_report.yaml"
    done = mimir("validate", str(good), str(bad))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == f"OK {good}: sales-report (4 steps)"
    assert lines[1] == f"{bad}: invalid pipeline (3 problems)"
    assert f"{bad}:5:13: step 1 'nap', field 'config.seconds': required by Debug.sleep" in lines[2]
    assert "unknown config key 'secnds' for Debug.sleep (did you mean seconds?)" in lines[3]
    assert "step 2 'nap', field 'name': duplicate step name" in lines[4]

    only_good = mimir("validate", str(good), "--json")
    assert only_good.returncode == 0
    assert json.loads(only_good.stdout)["files"][0] == {
        "file": str(good),
        "valid": True,
        "name": "sales-report",
        "steps": 4,
        "warnings": [],
        "notes": [],
    }


def test_plugins_lists_every_builtin() -> None:
    done = mimir("plugins")
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()[1:]]
    for name in [
        "Input.csv", "Input.json", "Input.xml", "Input.markdown", "Input.api",
        "Data_Processing.transform", "Data_Processing.aggregate", "AI.mock", "AI.openai",
        "Output.json", "Output.csv", "Output.html", "Debug.sleep", "Debug.fail",
    ]:  # fmt: skip
        assert name in names
    as_json = json.loads(mimir("plugins", "--json").stdout)["plugins"]
    csv_plugin = next(p for p in as_json if p["name"] == "Input.csv")
    assert csv_plugin["type"] == "Input"
    assert set(csv_plugin["config_schema"]["properties"]) >= {
        "file_path",
        "has_headers",
        "delimiter",
    }
