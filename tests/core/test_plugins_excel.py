"""``Input.excel`` and ``Output.excel`` on real .xlsx files: types, sheets, broken
workbooks, and a 100,000-row sheet read in a separate process with its memory measured."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from openpyxl.styles import Font

from mimir.core.errors import PipelineValidationError
from tests.core.plugin_harness import StepFailed, run_plugin


def _workbook(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    """A workbook made as a user's spreadsheet program would: full model, named sheets."""
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


# --------------------------------------------------------------------------- Input.excel


def test_reads_the_first_sheet_with_types_and_iso_dates(data_dir: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sales"
    sheet.append(["region", "amount", "paid", "day", "at", "opens", None, "note"])
    sheet.append(["north", 1234.5, True, date(2024, 5, 1), datetime(2024, 5, 1, 10, 30), time(9)])
    sheet.append(["Ελλάδα 漢字", 7, False, None, None, None, None, "ß"])
    sheet.append([])  # an empty row inside the data is skipped, like a blank CSV line
    sheet.append(["south", -3, None, date(1999, 12, 31)])
    # Empty trailing rows that carry formatting only (what spreadsheet programs leave).
    for row in range(6, 12):
        sheet.cell(row=row, column=2).font = Font(bold=True)
    book.create_sheet("Other").append(["x"])
    book.save(data_dir / "sales.xlsx")

    out = run_plugin("Input.excel", {"file_path": "sales.xlsx"}, data_dir)

    assert out["sheet_name"] == "Sales"
    assert out["available_sheets"] == ["Sales", "Other"] and out["sheet_count"] == 2
    # A blank header cell gets a generated name, like Go's column_N.
    columns = ["region", "amount", "paid", "day", "at", "opens", "column_7", "note"]
    assert out["columns"] == columns
    assert (out["row_count"], out["column_count"]) == (3, 8)
    assert out["rows"] == [
        dict(zip(columns, ["north", 1234.5, True, "2024-05-01", "2024-05-01T10:30:00",
                           "09:00:00", None, None], strict=True)),
        dict(zip(columns, ["Ελλάδα 漢字", 7, False, None, None, None, None, "ß"], strict=True)),
        dict(zip(columns, ["south", -3, None, "1999-12-31", None, None, None, None],
                 strict=True)),
    ]  # fmt: skip
    assert out["truncated"] is False
    json.dumps(out)  # the whole result is JSON


def test_picks_a_sheet_by_name_and_reads_without_headers(data_dir: Path) -> None:
    _workbook(
        data_dir / "book.xlsx",
        {"First": [["a"]], "Numbers": [[1, 2, 3], [4, None, 6, 7]]},
    )
    out = run_plugin(
        "Input.excel",
        {"file_path": "book.xlsx", "sheet_name": "Numbers", "has_headers": False},
        data_dir,
    )
    assert out["rows"] == [[1, 2, 3, None], [4, None, 6, 7]]
    assert out["columns"] == ["column_1", "column_2", "column_3", "column_4"]
    assert (out["row_count"], out["column_count"], out["has_headers"]) == (2, 4, False)


def test_max_rows_stops_early(data_dir: Path) -> None:
    _workbook(data_dir / "n.xlsx", {"S": [["n"], *[[i] for i in range(50)]]})
    out = run_plugin("Input.excel", {"file_path": "n.xlsx", "max_rows": 10}, data_dir)
    assert [row["n"] for row in out["rows"]] == list(range(10))
    assert out["truncated"] is True and out["row_count"] == 10


def test_a_missing_sheet_names_the_sheets_there_are(data_dir: Path) -> None:
    _workbook(data_dir / "book.xlsx", {"Q1": [["a"]], "Q2": [["a"]]})
    with pytest.raises(StepFailed, match=r"no sheet 'Q3'; its sheets are 'Q1', 'Q2'"):
        run_plugin("Input.excel", {"file_path": "book.xlsx", "sheet_name": "Q3"}, data_dir)


def test_header_problems_are_named(data_dir: Path) -> None:
    _workbook(data_dir / "dup.xlsx", {"S": [["a", "b", "a"], [1, 2, 3]]})
    with pytest.raises(StepFailed, match=r"header \(row 1\) repeats column\(s\) a"):
        run_plugin("Input.excel", {"file_path": "dup.xlsx"}, data_dir)
    _workbook(data_dir / "wide.xlsx", {"S": [["a", "b"], [1, 2], [1, 2, None, "x"]]})
    with pytest.raises(StepFailed, match=r"row 3 has a value in column D, beyond the header's 2"):
        run_plugin("Input.excel", {"file_path": "wide.xlsx"}, data_dir)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"region,amount\nnorth,1\n", r"not an Excel workbook \(\.xlsx files are zip archives"),
        (b"", r"not an Excel workbook"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504, r"legacy \.xls"),
    ],
    ids=["csv-text", "empty", "xls"],
)
def test_files_that_are_not_workbooks_are_refused(
    data_dir: Path, content: bytes, message: str
) -> None:
    (data_dir / "bad.xlsx").write_bytes(content)
    with pytest.raises(StepFailed, match=message):
        run_plugin("Input.excel", {"file_path": "bad.xlsx"}, data_dir)


def test_a_zip_that_is_not_a_workbook_is_refused(data_dir: Path) -> None:
    with zipfile.ZipFile(data_dir / "photos.xlsx", "w") as archive:
        archive.writestr("readme.txt", "not a spreadsheet")
    with pytest.raises(StepFailed, match=r"a zip archive but not an Excel workbook"):
        run_plugin("Input.excel", {"file_path": "photos.xlsx"}, data_dir)
    # A workbook with a part cut out: openpyxl's own error, named as such.
    source = _workbook(data_dir / "good.xlsx", {"S": [["a"], [1]]})
    with zipfile.ZipFile(source) as whole, zipfile.ZipFile(data_dir / "cut.xlsx", "w") as cut:
        for item in whole.infolist():
            if item.filename != "xl/workbook.xml":
                cut.writestr(item, whole.read(item))
    with pytest.raises(StepFailed, match=r"cut\.xlsx: not a readable Excel workbook: "):
        run_plugin("Input.excel", {"file_path": "cut.xlsx"}, data_dir)


def test_missing_file_and_directory(data_dir: Path) -> None:
    with pytest.raises(StepFailed, match=r"file 'nope\.xlsx' does not exist in the data dir"):
        run_plugin("Input.excel", {"file_path": "nope.xlsx"}, data_dir)
    (data_dir / "folder.xlsx").mkdir()
    with pytest.raises(StepFailed, match=r"'folder\.xlsx' is a directory"):
        run_plugin("Input.excel", {"file_path": "folder.xlsx"}, data_dir)


# --------------------------------------------------------------------------- Output.excel

ROWS = [
    {
        "region": "nörth",
        "amount": 1234.5,
        "units": 3,
        "paid": True,
        "day": "2024-05-01",
        "at": "2024-05-01T10:30:00",
        "tags": ["a", "b"],
        "formula": "=1+1",
    },
    {"region": "Ελλάδα 漢字", "amount": None, "units": 2**60, "paid": False, "day": "2024-02-30"},
]


def test_output_writes_typed_cells_with_a_bold_frozen_header(data_dir: Path) -> None:
    out = run_plugin(
        "Output.excel",
        {"input": "{{ rows }}", "file_path": "out/report.xlsx", "sheet_name": "Report"},
        data_dir,
        context={"rows": ROWS},
    )
    written = data_dir / "out" / "report.xlsx"
    columns = ["region", "amount", "units", "paid", "day", "at", "tags", "formula"]
    assert out == {
        "file_path": "out/report.xlsx",
        "bytes": written.stat().st_size,
        "sheet_name": "Report",
        "rows": 2,
        "columns": columns,
    }
    assert [p.name for p in written.parent.iterdir()] == ["report.xlsx"]  # no temporary left

    sheet = openpyxl.load_workbook(written)["Report"]
    assert [c.value for c in sheet[1]] == columns
    assert all(c.font.b for c in sheet[1]) and sheet.freeze_panes == "A2"
    first = {name: cell for name, cell in zip(columns, sheet[2], strict=True)}
    assert first["amount"].value == 1234.5 and first["amount"].data_type == "n"
    assert first["paid"].value is True
    assert first["day"].is_date and first["day"].value == datetime(2024, 5, 1)
    assert first["at"].is_date and first["at"].value == datetime(2024, 5, 1, 10, 30)
    assert first["tags"].value == '["a", "b"]'
    # Data that looks like a formula stays text: it is never evaluated.
    assert first["formula"].value == "=1+1" and first["formula"].data_type == "s"
    second = [cell.value for cell in sheet[3]]
    # Beyond 2**53 an Excel number would lose digits: written as text. Not a real date: text.
    assert second[:5] == ["Ελλάδα 漢字", None, str(2**60), False, "2024-02-30"]
    assert sheet.max_row == 3


def test_output_then_input_round_trips(data_dir: Path) -> None:
    run_plugin("Output.excel", {"input": ROWS, "file_path": "r.xlsx"}, data_dir)
    back = run_plugin("Input.excel", {"file_path": "r.xlsx"}, data_dir)
    assert back["rows"][0] == {**ROWS[0], "tags": '["a", "b"]'}
    assert back["rows"][1]["units"] == str(2**60)
    # Input.excel's result is itself accepted as input: the same table comes out.
    run_plugin("Output.excel", {"input": back, "file_path": "again.xlsx"}, data_dir)
    again = run_plugin("Input.excel", {"file_path": "again.xlsx"}, data_dir)
    assert again["rows"] == back["rows"] and again["columns"] == back["columns"]


def test_output_takes_lists_with_columns_one_object_and_plain_values(data_dir: Path) -> None:
    out = run_plugin(
        "Output.excel",
        {"input": [[1, "x"], [2, "y"]], "file_path": "lists.xlsx", "columns": ["n", "s"]},
        data_dir,
    )
    assert out["rows"] == 2
    sheet = openpyxl.load_workbook(data_dir / "lists.xlsx").active
    assert [[c.value for c in row] for row in sheet.iter_rows()] == [["n", "s"], [1, "x"], [2, "y"]]

    run_plugin(
        "Output.excel",
        {"input": {"a": 1, "b": "two"}, "file_path": "one.xlsx", "with_headers": False},
        data_dir,
    )
    sheet = openpyxl.load_workbook(data_dir / "one.xlsx").active
    assert [[c.value for c in row] for row in sheet.iter_rows()] == [[1, "two"]]

    run_plugin("Output.excel", {"input": ["a", 2], "file_path": "values.xlsx"}, data_dir)
    sheet = openpyxl.load_workbook(data_dir / "values.xlsx").active
    assert [[c.value for c in row] for row in sheet.iter_rows()] == [["value"], ["a"], [2]]


def test_output_refusals_leave_the_old_file(data_dir: Path) -> None:
    target = data_dir / "keep.xlsx"
    target.write_bytes(b"old")
    with pytest.raises(StepFailed, match=r"input must be a list of rows"):
        run_plugin("Output.excel", {"input": "text", "file_path": "keep.xlsx"}, data_dir)
    with pytest.raises(StepFailed, match=r"all objects, all lists or all plain values"):
        run_plugin("Output.excel", {"input": [{"a": 1}, [1]], "file_path": "keep.xlsx"}, data_dir)
    with pytest.raises(StepFailed, match=r"16385 columns; an Excel sheet holds at most 16384"):
        run_plugin("Output.excel", {"input": [list(range(16385))], "file_path": "keep.xlsx"},
                   data_dir)  # fmt: skip
    with pytest.raises(PipelineValidationError, match=r"config\.sheet_name': .*1 to 31 char"):
        run_plugin(
            "Output.excel",
            {"input": [], "file_path": "keep.xlsx", "sheet_name": "a/b"},
            data_dir,
        )
    assert target.read_bytes() == b"old"
    assert [p.name for p in data_dir.iterdir()] == ["keep.xlsx"]


# --------------------------------------------------------------------------- 100,000 rows

_CONTENT_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>
<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>
<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>
</Types>"""  # noqa: E501
_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>
</Relationships>"""  # noqa: E501
_WORKBOOK = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">
<sheets><sheet name="Orders" sheetId="1" r:id="rId1"/></sheets></workbook>"""
_WORKBOOK_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>
<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>
</Relationships>"""  # noqa: E501
# Style 1 is the built-in date format 14 (m/d/yyyy), as Excel writes a date cell.
_STYLES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">
<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>
<fills count="1"><fill><patternFill patternType="none"/></fill></fills>
<borders count="1"><border/></borders>
<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>
<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>
<xf numFmtId="14" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>
<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>
</styleSheet>"""


def _excel_style_workbook(path: Path, rows: int) -> None:
    """A workbook laid out as Excel saves one (shared strings, a dimension, styled dates),
    written straight as XML so that making 100,000 rows takes a second, not the test."""
    strings = ["id", "region", "amount", "paid", "day", "customer"]
    strings += ["north", "south", "east", "west"] + [f"customer {i}" for i in range(997)]
    header = "".join(
        f'<c r="{letter}1" t="s"><v>{index}</v></c>' for index, letter in enumerate("ABCDEF")
    )
    lines = [
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f'<dimension ref="A1:F{rows + 1}"/><sheetData><row r="1">{header}</row>'
    ]
    for i in range(rows):
        r = i + 2
        lines.append(
            f'<row r="{r}"><c r="A{r}"><v>{i}</v></c><c r="B{r}" t="s"><v>{6 + i % 4}</v></c>'
            f'<c r="C{r}"><v>{i * 1.25}</v></c><c r="D{r}" t="b"><v>{int(i % 3 == 0)}</v></c>'
            f'<c r="E{r}" s="1"><v>{45292 + i % 365}</v></c>'
            f'<c r="F{r}" t="s"><v>{10 + i % 997}</v></c></row>'
        )
    lines.append("</sheetData></worksheet>")
    shared = "".join(f"<si><t>{text}</t></si>" for text in strings)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("_rels/.rels", _RELS)
        archive.writestr("xl/workbook.xml", _WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        archive.writestr("xl/styles.xml", _STYLES)
        archive.writestr(
            "xl/sharedStrings.xml",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            f'count="{len(strings)}" uniqueCount="{len(strings)}">{shared}</sst>',
        )
        archive.writestr("xl/worksheets/sheet1.xml", "".join(lines))


# Reads the workbook in a fresh process and reports how far its peak resident memory rose
# above what it held once the imports were done. (Linux keeps a parent's ru_maxrss across
# exec, so the peak is read from /proc, after resetting it through clear_refs.)
_MEASURE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from mimir.core.plugins.builtin.excel import ExcelInputConfig, read_sheet
    import openpyxl  # imported before the baseline: only the reading is measured

    def status_mb(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise LookupError(field)

    before = status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    started = time.perf_counter()
    result = read_sheet(Path(sys.argv[1]), ExcelInputConfig(file_path="orders.xlsx"))
    seconds = time.perf_counter() - started
    print(json.dumps({
        "before_mb": before, "grown_mb": status_mb("VmHWM") - before, "seconds": seconds,
        "row_count": result["row_count"], "first": result["rows"][0],
        "last": result["rows"][-1], "columns": result["columns"],
    }))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_a_100k_row_sheet_is_streamed_in_modest_memory(tmp_path: Path) -> None:
    path = tmp_path / "orders.xlsx"
    _excel_style_workbook(path, 100_000)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    measured = json.loads(done.stdout)
    print(
        f"\n100k rows x 6 columns ({path.stat().st_size / 1e6:.1f} MB .xlsx): "
        f"{measured['seconds']:.1f} s, peak RSS grew {measured['grown_mb']:.0f} MB"
    )
    assert measured["row_count"] == 100_000
    assert measured["columns"] == ["id", "region", "amount", "paid", "day", "customer"]
    assert measured["first"] == {
        "id": 0, "region": "north", "amount": 0, "paid": True, "day": "2024-01-01",
        "customer": "customer 0",
    }  # fmt: skip
    assert measured["last"] == {
        "id": 99_999, "region": "west", "amount": 124_998.75, "paid": True,
        "day": "2024-12-20", "customer": f"customer {99_999 % 997}",
    }  # fmt: skip
    # Measured: ~50 MB, most of it the 100,000 row dicts returned. Loading the same sheet
    # into openpyxl's full model (no read_only) and building the rows grows it by ~270 MB.
    assert measured["grown_mb"] < 150, measured
