"""``Output.*`` plugins write real files inside the data directory."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.core.plugin_harness import StepFailed, run_plugin

ROWS = [
    {"region": "north", "amount": 1234.5, "tags": ["a", "b"]},
    {"region": "<script>alert(1)</script>", "amount": 7, "extra": True},
]


def test_json_output_writes_the_value_and_reports_the_file(data_dir: Path) -> None:
    out = run_plugin(
        "Output.json",
        {"input": "{{ rows }}", "file_path": "out/deep/rows.json"},
        data_dir,
        context={"rows": ROWS},
    )
    written = data_dir / "out" / "deep" / "rows.json"
    assert json.loads(written.read_text()) == ROWS
    size = written.stat().st_size
    assert out == {
        "file_path": "out/deep/rows.json",
        "bytes": size,
        "rows": 2,
        # The original platform's names next to this project's own.
        "success": True,
        "bytes_written": size,
    }
    # Written through a temporary file that is gone afterwards.
    assert [p.name for p in written.parent.iterdir()] == ["rows.json"]


def test_json_output_replaces_an_existing_file_compactly(data_dir: Path) -> None:
    (data_dir / "v.json").write_text("old and longer content")
    run_plugin("Output.json", {"input": {"k": 1}, "file_path": "v.json", "indent": None}, data_dir)
    assert (data_dir / "v.json").read_text() == '{"k": 1}'


def test_csv_output_writes_every_column_first_seen_first(data_dir: Path) -> None:
    out = run_plugin("Output.csv", {"input": ROWS, "file_path": "rows.csv"}, data_dir)
    with (data_dir / "rows.csv").open(newline="") as stream:
        lines = list(csv.reader(stream))
    assert lines == [
        ["region", "amount", "tags", "extra"],
        ["north", "1234.5", '["a", "b"]', ""],
        ["<script>alert(1)</script>", "7", "", "True"],
    ]
    assert out["rows"] == 2


def test_csv_output_with_chosen_columns_delimiter_and_list_rows(data_dir: Path) -> None:
    run_plugin(
        "Output.csv",
        {"input": ROWS, "file_path": "a.csv", "columns": ["amount", "region"], "delimiter": ";"},
        data_dir,
    )
    assert (data_dir / "a.csv").read_text().splitlines()[:2] == ["amount;region", "1234.5;north"]
    run_plugin(
        "Output.csv",
        {"input": [[1, "x"], [2, "y"]], "file_path": "b.csv", "columns": ["n", "s"]},
        data_dir,
    )
    assert (data_dir / "b.csv").read_text() == "n,s\n1,x\n2,y\n"


def test_csv_output_refuses_mixed_rows(data_dir: Path) -> None:
    with pytest.raises(StepFailed, match="input rows must be all objects or all lists"):
        run_plugin("Output.csv", {"input": [{"a": 1}, [1]], "file_path": "m.csv"}, data_dir)


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.tags: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in {"td", "th"}:
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"td", "th"}:
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells[-1] += data


def test_html_report_is_a_table_with_everything_escaped(data_dir: Path) -> None:
    out = run_plugin(
        "Output.html",
        {
            "input": ROWS,
            "file_path": "report.html",
            "title": "Sales <b>& more</b>",
            "description": "From 'sales.csv' & co",
        },
        data_dir,
    )
    page = (data_dir / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Sales &lt;b&gt;&amp; more&lt;/b&gt;</title>" in page
    assert "<p>From &#x27;sales.csv&#x27; &amp; co</p>" in page
    assert "2 rows" in page
    parser = _Cells()
    parser.feed(page)
    # No tag came from the data: only the page's own structure.
    assert "script" not in parser.tags and "b" not in parser.tags
    assert parser.cells == [
        "region", "amount", "tags", "extra",
        "north", "1,234.50", '["a", "b"]', "",
        "<script>alert(1)</script>", "7", "", "true",
    ]  # fmt: skip
    assert out["rows"] == 2 and out["file_path"] == "report.html"


def test_html_report_shows_objects_and_text(data_dir: Path) -> None:
    run_plugin("Output.html", {"input": {"total": 3, "name": "x"}, "file_path": "o.html"}, data_dir)
    parser = _Cells()
    parser.feed((data_dir / "o.html").read_text())
    assert parser.cells == ["field", "value", "total", "3", "name", "x"]
    run_plugin("Output.html", {"input": "a < b", "file_path": "t.html"}, data_dir)
    assert "<pre>a &lt; b</pre>" in (data_dir / "t.html").read_text()


def test_output_onto_a_directory_is_a_clear_error(data_dir: Path) -> None:
    (data_dir / "adir").mkdir()
    with pytest.raises(StepFailed, match="'adir' is a directory"):
        run_plugin("Output.json", {"input": 1, "file_path": "adir"}, data_dir)
