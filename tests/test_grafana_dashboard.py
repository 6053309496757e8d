"""The committed Grafana dashboard is what ``python -m scripts.grafana_dashboard`` makes
now, and it loads back into grafana-foundation-sdk's typed model. (That every metric its
expressions name is exported: ``tests/server/test_metrics_workers.py``, against a real
scrape.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import prometheus, stat, timeseries
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel

from scripts.grafana_dashboard import (
    DASHBOARD,
    DATASOURCE,
    PROVIDER,
    ROOT,
    expressions,
    main,
    metric_names,
    render,
)


def test_committed_files_are_what_the_generator_makes() -> None:
    for path, text in render().items():
        assert path.exists(), (
            f"{path.relative_to(ROOT)} missing: python -m scripts.grafana_dashboard"
        )
        assert path.read_text() == text, (
            f"{path.relative_to(ROOT)} is stale: run python -m scripts.grafana_dashboard"
        )
    assert main(["--check"]) == 0


def test_dashboard_loads_into_the_sdk_model() -> None:
    register_default_plugins()  # panel options and Prometheus queries as typed models
    data = json.loads(DASHBOARD.read_text())
    model = Dashboard.from_json(data)
    # Nothing the model does not know was dropped or changed on the way.
    assert json.loads(json.dumps(model, cls=JSONEncoder, sort_keys=True)) == data
    panels = [p for p in model.panels or [] if isinstance(p, Panel)]
    rows = [p for p in model.panels or [] if isinstance(p, RowPanel)]
    assert [r.title for r in rows] == [
        "Queue", "Throughput and failures", "Durations", "Workers", "Autoscaler",
    ]  # fmt: skip
    assert len(panels) == 14
    ids = [p.id_val for p in model.panels or []]
    assert len(set(ids)) == len(ids) and None not in ids
    for panel in panels:
        assert panel.targets, panel.title
        for target in panel.targets:
            assert isinstance(target, prometheus.Dataquery), (panel.title, target)
            assert target.expr and target.ref_id
        options = {"timeseries": timeseries.Options, "stat": stat.Options}[panel.type_val]
        assert isinstance(panel.options, options), panel.title
        assert panel.datasource is not None and panel.datasource.uid == "${datasource}"
        right = (panel.grid_pos.x if panel.grid_pos else 0) + (
            panel.grid_pos.w if panel.grid_pos else 0
        )
        assert right <= 24, panel.title


def test_provisioning_files() -> None:
    provider = yaml.safe_load(PROVIDER.read_text())
    assert provider["apiVersion"] == 1
    assert provider["providers"][0]["type"] == "file"
    source = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]
    assert source["type"] == "prometheus" and source["url"].startswith("http://")


def test_metric_names_of_expressions() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, plugin) (rate(a_bucket{status="x",le!="1"}'
        "[$__rate_interval])))"
    ) == {"a_bucket"}
    assert metric_names(
        "sum without (pool) (b) / on (pool) group_left (queue) max by (pool) (c_total offset 5m)"
    ) == {"b", "c_total"}
    assert metric_names('sum(rate(x{a="by (q)"}[1h])) > bool 0 and count(y) or vector(1)') == {
        "x",
        "y",
    }
    assert len(expressions()) >= 20


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus)")
def test_promtool_parses_every_expression(tmp_path: Path) -> None:
    # Each expression as a recording rule: `promtool check rules` parses it with
    # Prometheus's own PromQL parser (Grafana's $__rate_interval as a plain range).
    rules = [
        {"record": f"mimir:dashboard:{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, expr in enumerate(expressions())
    ]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(rules)} rules found" in checked.stdout
